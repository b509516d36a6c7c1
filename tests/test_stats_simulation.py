"""Simulations: do the statistics behave as advertised when the truth is known?

Each simulation runs the production functions on data drawn from a known distribution with a
fixed seed, so the figures are deterministic. Counts were chosen so that the acceptance band is
several Monte-Carlo standard errors wide (e.g. 2000 tests at alpha=0.05: SE 0.005).
"""

from __future__ import annotations

import functools

import numpy as np
import pytest

from dllm_eval.analysis import stats

ALPHA = 0.05


@functools.cache
def _mcnemar_p(b: int, c: int) -> float:
    # the production p-value path (paired_difference -> mcnemar -> mcnemar_from_counts), memoised
    # because (b, c) repeats a lot across simulated studies
    return stats.mcnemar_from_counts(b, c).pvalue


def _simulate_counts(rng: np.random.Generator, n: int, p10: float, p01: float, sims: int) -> np.ndarray:
    """(sims, 3) multinomial counts of (A-only right, B-only right, concordant) over n pairs."""
    return rng.multinomial(n, [p10, p01, 1 - p10 - p01], size=sims)


def _simulate_pairs(rng: np.random.Generator, sims: int, n: int, cells: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Item-level paired 0/1 outcomes; cells = [p11, p10, p01, p00]."""
    cell = np.searchsorted(np.cumsum(cells)[:-1], rng.random((sims, n)), side="right")
    return np.isin(cell, [0, 1]).astype(float), np.isin(cell, [0, 2]).astype(float)


@pytest.mark.parametrize(
    "discordance", [pytest.param(0.05, marks=pytest.mark.slow), 0.2, pytest.param(0.5, marks=pytest.mark.slow)]
)
def test_false_positive_rate_under_the_null(discordance: float) -> None:
    """A/A: 2000 simulated pairs of identical-quality schedulers, n=500 each -> FPR in [0.02, 0.06]."""
    rng = np.random.default_rng(20261122)
    counts = _simulate_counts(rng, 500, discordance / 2, discordance / 2, 2000)
    p = np.array([_mcnemar_p(int(b), int(c)) for b, c, _ in counts])
    fpr = float(np.mean(p < ALPHA))
    print(f"FPR at discordance {discordance}: {fpr:.4f}")
    assert 0.02 <= fpr <= 0.06


@pytest.mark.slow
def test_false_positive_rate_end_to_end_with_identical_items() -> None:
    """The full paired_difference on item-level A/A data (not just counts): same band."""
    rng = np.random.default_rng(7)
    a, b = _simulate_pairs(rng, 2000, 500, [0.4, 0.1, 0.1, 0.4])
    fpr = float(np.mean([stats.mcnemar(a[i], b[i]).pvalue < ALPHA for i in range(2000)]))
    print(f"FPR end to end: {fpr:.4f}")
    assert 0.02 <= fpr <= 0.06


@pytest.mark.slow
def test_paired_bootstrap_ci_coverage() -> None:
    """1000 studies at n=300 with a true difference of +3 pts: the 95% CI covers it 93-97% of the time."""
    rng = np.random.default_rng(42)
    cells = [0.40, 0.12, 0.09, 0.39]  # p10 - p01 = 0.03
    true_delta = cells[1] - cells[2]
    a, b = _simulate_pairs(rng, 1000, 300, cells)
    lo, hi = stats.paired_bootstrap_diff_ci(a, b, n_resamples=999, rng=1)
    coverage = float(np.mean((lo <= true_delta) & (true_delta <= hi)))
    print(f"bootstrap CI coverage: {coverage:.4f}")
    assert 0.93 <= coverage <= 0.97


@pytest.mark.slow
def test_seed_pooling_keeps_coverage_where_naive_pooling_fails() -> None:
    """Three seeds per document, and the scheduler helps some documents and hurts others: the seeds of
    one document are then correlated. Clustering by document keeps coverage; treating (document,
    seed) pairs as independent items does not."""
    rng = np.random.default_rng(5)
    sims, n, k = 600, 150, 3
    ability = rng.uniform(0.3, 0.65, (sims, n, 1))  # document difficulty, shared by both and all seeds
    effect = np.where(rng.random((sims, n, 1)) < 0.5, 0.33, -0.27)  # per-document effect, mean +0.03
    a = (rng.random((sims, n, k)) < ability + effect).astype(float)
    b = (rng.random((sims, n, k)) < ability).astype(float)
    true_delta = 0.03  # no clipping: ability + effect stays inside (0.03, 0.98)
    lo, hi = stats.paired_bootstrap_diff_ci(a.mean(2), b.mean(2), n_resamples=999, rng=2)  # what paired_difference does
    clustered = float(np.mean((lo <= true_delta) & (true_delta <= hi)))
    lo2, hi2 = stats.paired_bootstrap_diff_ci(a.reshape(sims, -1), b.reshape(sims, -1), n_resamples=999, rng=3)
    naive = float(np.mean((lo2 <= true_delta) & (true_delta <= hi2)))
    print(f"coverage clustered {clustered:.3f}, naive {naive:.3f}")
    assert 0.93 <= clustered <= 0.97
    assert naive < 0.91


@pytest.mark.parametrize(("n", "discordance"), [(500, 0.2), (200, 0.1), (800, 0.3)])
def test_mde_matches_simulated_power(n: int, discordance: float) -> None:
    """Simulate 2000 studies whose true difference is the MDE: power is 80% within 10% (0.72-0.88)."""
    mde = stats.mde_mcnemar(n, discordance)
    pd = max(discordance, mde)
    rng = np.random.default_rng(n)
    counts = _simulate_counts(rng, n, (pd + mde) / 2, (pd - mde) / 2, 2000)
    power = float(np.mean([_mcnemar_p(int(b), int(c)) < ALPHA for b, c, _ in counts]))
    print(f"n={n} discordance={discordance}: MDE {mde:.4f}, simulated power {power:.4f}")
    assert abs(power - 0.8) <= 0.08


def test_mde_normal_matches_simulated_power_for_pooled_seeds() -> None:
    """The normal-theory MDE used for pooled seeds: a z-test on per-document means at delta=MDE."""
    rng = np.random.default_rng(11)
    n, k, sims = 400, 3, 2000
    sd = 0.35  # per-document sd of the seed-averaged difference
    mde = stats.mde_normal(sd, n)
    d = rng.normal(mde, sd, size=(sims, n))
    z = d.mean(1) / (d.std(1, ddof=1) / np.sqrt(n))
    power = float(np.mean(np.abs(z) > 1.959964))
    print(f"normal MDE {mde:.4f} (k={k}), simulated power {power:.4f}")
    assert abs(power - 0.8) <= 0.08
