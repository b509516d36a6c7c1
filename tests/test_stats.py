"""Known answers for dllm_eval.analysis.stats: hand-computed 2x2 tables and SciPy on fixed data."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from dllm_eval.analysis import stats


# ---------------------------------------------------------------- McNemar, by hand
@pytest.mark.parametrize(
    ("b", "c", "exact", "midp"),
    [
        # n = 6 discordant pairs, 2^6 = 64 outcomes
        (1, 5, 2 * (1 + 6) / 64, 2 * 1 / 64 + 6 / 64),  # 0.21875, 0.125
        (0, 6, 2 / 64, 1 / 64),  # 0.03125, 0.015625
        (5, 1, 2 * (1 + 6) / 64, 2 * 1 / 64 + 6 / 64),  # symmetric
        (3, 3, 1.0, 1.0),  # b == c: no evidence either way
        (0, 0, 1.0, 1.0),  # no discordant pair at all
        # n = 10: P(X <= 2) = (1 + 10 + 45) / 1024
        (2, 8, 2 * 56 / 1024, 2 * 11 / 1024 + 45 / 1024),
    ],
)
def test_mcnemar_hand_computed(b: int, c: int, exact: float, midp: float) -> None:
    r = stats.mcnemar_from_counts(b, c, n11=20, n00=20)
    assert r.pvalue == pytest.approx(exact, abs=1e-12)
    assert r.pvalue_midp == pytest.approx(midp, abs=1e-12)
    assert (r.b, r.c, r.n) == (b, c, b + c + 40)
    assert r.statistic == b - c


def test_mcnemar_from_vectors_and_phi() -> None:
    # table: n11=40, n10=10, n01=5, n00=45
    a = np.array([1] * 40 + [1] * 10 + [0] * 5 + [0] * 45)
    b = np.array([1] * 40 + [0] * 10 + [1] * 5 + [0] * 45)
    r = stats.mcnemar(a, b)
    assert (r.b, r.c, r.n) == (10, 5, 100)
    phi = (40 * 45 - 10 * 5) / math.sqrt(50 * 50 * 45 * 55)  # = 0.70353...
    assert r.correlation == pytest.approx(phi)
    assert r.correlation == pytest.approx(np.corrcoef(a, b)[0, 1])
    assert r.pvalue == pytest.approx(st.binomtest(5, 15, 0.5).pvalue)
    assert r.discordance == pytest.approx(0.15)


def test_mcnemar_rejects_non_binary() -> None:
    with pytest.raises(ValueError, match="0/1"):
        stats.mcnemar([0, 0.5, 1], [1, 1, 0])
    with pytest.raises(ValueError, match="equal length"):
        stats.mcnemar([0, 1], [1, 1, 0])


# ---------------------------------------------------------------- intervals
def test_wilson_and_clopper_pearson_match_reference_and_scipy() -> None:
    lo, hi = stats.proportion_ci(91, 164)
    assert (round(lo, 3), round(hi, 3)) == (0.478, 0.629)  # reference section 5.7
    lo, hi = stats.proportion_ci(91, 164, method="clopper-pearson")
    assert (round(lo, 3), round(hi, 3)) == (0.475, 0.632)
    for k, n in [(0, 10), (10, 10), (3, 17), (250, 500), (1, 1000)]:
        for ours, theirs in [("wilson", "wilson"), ("clopper-pearson", "exact")]:
            ci = st.binomtest(k, n).proportion_ci(confidence_level=0.95, method=theirs)
            assert stats.proportion_ci(k, n, method=ours) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_accuracy_single_seed_is_wilson() -> None:
    x = np.array([1] * 30 + [0] * 20)
    r = stats.accuracy(x)
    assert r.statistic == pytest.approx(0.6)
    assert r.n == 50 and r.n_effective == 50
    assert r.confidence_interval() == pytest.approx(stats.proportion_ci(30, 50))


def test_accuracy_duplicated_seeds_are_not_new_documents() -> None:
    """Three identical seeds of 50 documents carry the information of 50 documents, not 150."""
    x = np.array([1] * 30 + [0] * 20)
    three = np.repeat(x[:, None], 3, axis=1)
    r = stats.accuracy(three)
    assert r.n_effective == pytest.approx(50)
    assert r.confidence_interval() == pytest.approx(stats.accuracy(x).confidence_interval())


def test_accuracy_independent_seeds_add_information() -> None:
    rng = np.random.default_rng(0)
    x = (rng.random((200, 4)) < 0.5).astype(float)  # no document effect at all
    r = stats.accuracy(x)
    assert r.n_effective > 600


def test_clustered_se() -> None:
    rng = np.random.default_rng(1)
    v = rng.random(40)
    # every observation its own cluster = the CLT standard error
    assert stats.clustered_se(v, np.arange(40)) == pytest.approx(np.std(v, ddof=1) / math.sqrt(40))
    assert stats.clustered_se(v) == pytest.approx(st.sem(v))
    # perfectly duplicated pairs: the clustered SE of 2n values equals the SE of n values
    dup = np.repeat(v, 2)
    assert stats.clustered_se(dup, np.repeat(np.arange(40), 2)) == pytest.approx(st.sem(v), rel=1e-9)


# ---------------------------------------------------------------- Holm
def test_holm_reference_values() -> None:
    assert stats.holm([0.01, 0.04, 0.03, 0.2]) == pytest.approx([0.04, 0.09, 0.09, 0.2])  # reference 5.6
    out = stats.holm([0.01, np.nan, 0.02])
    assert np.isnan(out[1]) and out[0] == pytest.approx(0.02) and out[2] == pytest.approx(0.02)
    assert stats.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert stats.holm([]).size == 0


def test_holm_is_monotone_and_never_below_raw() -> None:
    rng = np.random.default_rng(2)
    p = rng.random(30) ** 3
    adj = stats.holm(p)
    assert np.all(adj >= p - 1e-15)
    order = np.argsort(p)
    assert np.all(np.diff(adj[order]) >= -1e-15)


# ---------------------------------------------------------------- paired difference
def _paired(n: int, p10: float, p01: float, p11: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    cell = rng.choice(4, size=n, p=[p11, p10, p01, 1 - p11 - p10 - p01])
    a = np.isin(cell, [0, 1]).astype(float)
    b = np.isin(cell, [0, 2]).astype(float)
    return a, b


def test_paired_difference_single_seed_uses_mcnemar_and_scipy_bootstrap() -> None:
    a, b = _paired(300, 0.15, 0.08, 0.4, seed=3)
    r = stats.paired_difference(a, b, n_resamples=1999, rng=7)
    mc = stats.mcnemar(a, b)
    assert r.statistic == pytest.approx(a.mean() - b.mean())
    assert r.method == "McNemar exact"
    assert (r.b, r.c) == (mc.b, mc.c)
    assert r.pvalue == pytest.approx(mc.pvalue) and r.pvalue_midp == pytest.approx(mc.pvalue_midp)
    assert r.standard_error == pytest.approx(np.std(a - b, ddof=1) / math.sqrt(300))
    ref = st.bootstrap(
        (a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), paired=True, vectorized=True,
        n_resamples=1999, method="percentile", rng=np.random.default_rng(7),
    )
    assert r.confidence_interval() == pytest.approx(tuple(ref.confidence_interval), abs=1e-12)
    assert r.low < r.statistic < r.high
    assert r.mde == pytest.approx(stats.mde_mcnemar(300, mc.discordance))


def test_paired_difference_identical_runs() -> None:
    a, _ = _paired(100, 0.1, 0.1, 0.4, seed=4)
    r = stats.paired_difference(a, a.copy())
    assert r.statistic == 0 and r.pvalue == 1.0 and (r.low, r.high) == (0.0, 0.0)
    assert (r.b, r.c) == (0, 0)
    assert math.isfinite(r.mde) and r.mde > 0


def test_paired_difference_seeds_pool_by_document() -> None:
    a, b = _paired(200, 0.12, 0.06, 0.4, seed=5)
    one = stats.paired_difference(a, b, n_resamples=999, rng=1)
    dup = stats.paired_difference(np.repeat(a[:, None], 3, 1), np.repeat(b[:, None], 3, 1), n_resamples=999, rng=1)
    assert dup.method.startswith("paired permutation")
    assert dup.statistic == pytest.approx(one.statistic)
    # three copies of a seed are no extra evidence: same interval, similar p
    assert dup.confidence_interval() == pytest.approx(one.confidence_interval())
    assert dup.pvalue == pytest.approx(one.pvalue, abs=0.03)
    assert (dup.b, dup.c) == (3 * one.b, 3 * one.c)
    assert dup.n == 200 and dup.n_seeds == (3, 3)


def test_paired_difference_permutation_matches_scipy() -> None:
    rng = np.random.default_rng(6)
    a = rng.random((80, 2)).round()
    b = rng.random((80, 2)).round()
    r = stats.paired_difference(a, b, n_resamples=999, rng=11)
    da, db = a.mean(1), b.mean(1)
    gen = np.random.default_rng(11)
    st.bootstrap((da, db), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), paired=True, vectorized=True,
                 n_resamples=999, method="percentile", rng=gen)  # same stream consumption as ours
    ref = st.permutation_test((da, db), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), permutation_type="samples",
                              vectorized=True, n_resamples=999, rng=gen)
    assert r.pvalue == pytest.approx(ref.pvalue)


def test_paired_difference_rejects_misaligned() -> None:
    with pytest.raises(ValueError, match="same documents"):
        stats.paired_difference(np.ones(5), np.ones(6))
    with pytest.raises(ValueError, match="lack a score"):
        stats.paired_difference(np.array([1.0, np.nan]), np.array([1.0, 0.0]))


def test_batched_bootstrap_equals_looped() -> None:
    rng = np.random.default_rng(8)
    A = rng.integers(0, 2, (3, 50)).astype(float)
    B = rng.integers(0, 2, (3, 50)).astype(float)
    lo, hi = stats.paired_bootstrap_diff_ci(A, B, n_resamples=500, rng=0)
    assert lo.shape == (3,) and np.all(lo <= hi)
    same = np.repeat(A[:1], 2, axis=0)
    lo2, hi2 = stats.paired_bootstrap_diff_ci(same, same, n_resamples=200, rng=0)
    assert np.all(lo2 == 0) and np.all(hi2 == 0)


# ---------------------------------------------------------------- power and MDE
def test_mcnemar_power_exact_small_case() -> None:
    # n=6, all pairs discordant and in one direction with prob 1: m=6, b=6 -> p=0.03125 < 0.05: power 1
    assert stats.mcnemar_power(6, 1.0, 0.0) == pytest.approx(1.0)
    # n=5: even the most extreme table has p=0.0625: never rejects
    assert stats.mcnemar_power(5, 1.0, 0.0) == 0.0
    # under the null the exact test is conservative
    assert stats.mcnemar_power(500, 0.1, 0.1) < 0.05


def test_mde_properties() -> None:
    m = stats.mde_mcnemar(500, 0.2)
    assert 0.04 < m < 0.08
    pd = 0.2
    assert stats.mcnemar_power(500, (pd + m) / 2, (pd - m) / 2) == pytest.approx(0.8, abs=0.01)
    assert stats.mde_mcnemar(2000, 0.2) < m < stats.mde_mcnemar(100, 0.2)
    assert stats.mde_mcnemar(500, 0.1) < m  # less disagreement: less noise
    assert stats.mde_mcnemar(5, 0.5) == math.inf
    # Connor's normal approximation is close at large n
    z = st.norm.ppf(0.975) + st.norm.ppf(0.8)
    assert stats.mde_normal(math.sqrt(pd), 2000) == pytest.approx(z * math.sqrt(pd / 2000))
    assert stats.mde_mcnemar(2000, pd) == pytest.approx(stats.mde_normal(math.sqrt(pd), 2000), rel=0.1)


# ---------------------------------------------------------------- ratios
def test_paired_ratio_wilcoxon_and_totals() -> None:
    rng = np.random.default_rng(9)
    b = rng.integers(20, 60, 120).astype(float)
    a = np.round(b * 1.3 + rng.normal(0, 4, 120))
    r = stats.paired_ratio(a, b, n_resamples=999, rng=0)
    assert r.statistic == pytest.approx(a.sum() / b.sum())
    lr = np.log(a / b)
    assert r.pvalue == pytest.approx(st.wilcoxon(lr, zero_method="pratt").pvalue)
    assert r.median_ratio == pytest.approx(np.exp(np.median(lr)))
    assert r.low < r.statistic < r.high
    assert r.n == 120 and r.n_excluded == 0


def test_paired_ratio_rates_and_clusters() -> None:
    # tokens / seconds, 4 batches of 3 documents each; timings shared within a batch
    toks_a = np.array([10, 20, 30, 10, 20, 30, 10, 20, 30, 10, 20, 30], float)
    toks_b = toks_a.copy()
    sec_a = np.repeat([1.0, 1.1, 0.9, 1.0], 3)
    sec_b = 2 * sec_a
    cl = np.repeat(["b0", "b1", "b2", "b3"], 3)
    r = stats.paired_ratio(toks_a, toks_b, sec_a, sec_b, clusters=cl, n_resamples=500)
    assert r.statistic == pytest.approx(2.0)
    assert r.n == 4  # the batch is the unit
    assert (r.low, r.high) == pytest.approx((2.0, 2.0))


def test_paired_ratio_identical_and_zeros() -> None:
    x = np.array([5.0, 6.0, 7.0, 8.0])
    r = stats.paired_ratio(x, x)
    assert r.statistic == 1.0 and r.pvalue == 1.0 and (r.low, r.high) == (1.0, 1.0)
    r = stats.paired_ratio(np.array([0.0, 6, 7, 8]), x)
    assert r.n == 3 and r.n_excluded == 1


def test_rate_ci() -> None:
    v, ci = stats.rate_ci([10, 20, 30, 40], [1, 1, 1, 1], n_resamples=500)
    assert v == 25.0 and ci.low <= 25 <= ci.high
    v, ci = stats.rate_ci([10, 10], [1, 1], clusters=["a", "a"])
    assert v == 10.0 and ci == (10.0, 10.0)
