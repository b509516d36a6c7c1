"""Paired statistics for comparing two inference schedulers on the same documents.

Every public function returns a small frozen result object in the style of ``scipy.stats``:
``statistic``, ``pvalue`` where a test exists, and ``confidence_interval()``. The methods follow
../shared/reference/lmeval_code_exec_stats.md section 5, and SciPy does the work wherever it has
the test (``binomtest``, ``bootstrap``, ``wilcoxon``, ``permutation_test``). What SciPy lacks
(Holm, the exact power of McNemar's test, clustered standard errors) is written out here in a few
documented lines.

Why paired: two schedulers run on the same documents are strongly correlated (an easy item is easy
for both), so the paired standard error sd(d)/sqrt(n) is often half the unpaired one. Ignoring the
pairing throws away that precision; ignoring the clustering (several seeds of one document are not
independent draws) overstates it. Seeds are therefore pooled per document first (question-level
means, Miller 2024 rec. 3) and every resampling is over documents.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from scipy import optimize
from scipy import stats as st

__all__ = [
    "ConfidenceInterval",
    "McNemarResult",
    "PairedDifferenceResult",
    "ProportionResult",
    "RatioResult",
    "accuracy",
    "clustered_se",
    "doc_means",
    "holm",
    "mcnemar",
    "mcnemar_power",
    "mde_mcnemar",
    "mde_normal",
    "mde_ratio",
    "paired_bootstrap_diff_ci",
    "paired_difference",
    "paired_ratio",
    "proportion_ci",
    "rate_ci",
]

DEFAULT_RESAMPLES = 9999


class ConfidenceInterval(NamedTuple):
    low: float
    high: float


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _rng(seed: int | np.random.Generator | None) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def doc_means(values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Collapse a (n_docs,) or (n_docs, n_seeds) array to one value per document.

    Seeds of one document are repeated measurements of the same item, not new items, so they are
    averaged first (NaN-aware: a seed may lack a document only if the caller allows it).
    """
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        return arr
    if arr.ndim != 2:
        raise ValueError(f"expected a (n_docs,) or (n_docs, n_seeds) array, got shape {arr.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(arr, axis=1)


def _is_binary(arr: np.ndarray) -> bool:
    finite = arr[np.isfinite(arr)]
    return bool(np.all((finite == 0) | (finite == 1)))


def clustered_se(values: np.ndarray, clusters: np.ndarray | None = None) -> float:
    """Standard error of the mean of ``values`` with observations grouped into clusters.

    Miller (2024) appendix A: sqrt(sum_c (sum_{i in c} (s_i - mean))^2) / n, times the small-sample
    factor sqrt(C/(C-1)). Without clusters this is the ordinary CLT SE (ddof=1).
    """
    v = np.asarray(values, dtype=float).ravel()
    n = v.size
    if n < 2:
        return math.nan
    if clusters is None:
        return float(np.std(v, ddof=1) / math.sqrt(n))
    c = np.asarray(clusters).ravel()
    _, inv = np.unique(c, return_inverse=True)
    n_c = int(inv.max()) + 1
    if n_c < 2:
        return math.nan
    resid = np.bincount(inv, weights=v - v.mean(), minlength=n_c)
    return float(math.sqrt(np.sum(resid**2)) / n * math.sqrt(n_c / (n_c - 1)))


# --------------------------------------------------------------------------------------------
# one proportion
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProportionResult:
    """Accuracy of one configuration with its interval.

    ``n`` is the number of documents; ``n_effective`` is the binomial sample size that the interval
    used (equal to ``n`` for one seed; for several seeds, the design-effect-adjusted size
    p(1-p)/SE_clustered^2, so that repeated seeds of the same document are not counted as new items).
    """

    statistic: float
    n: int
    n_effective: float
    method: str
    confidence_level: float
    low: float
    high: float

    def confidence_interval(self) -> ConfidenceInterval:
        return ConfidenceInterval(self.low, self.high)


def proportion_ci(
    successes: float, n: float, *, confidence_level: float = 0.95, method: str = "wilson"
) -> ConfidenceInterval:
    """Wilson or Clopper-Pearson interval for successes/n; both accept non-integer counts.

    Wilson (1927) keeps close to nominal coverage at the n of a few hundred typical of quick runs,
    where the Wald interval undercovers (Brown, Cai & DasGupta 2001). Clopper-Pearson is the
    conservative exact alternative. Written out (not ``binomtest().proportion_ci``) because pooled
    seeds give fractional effective counts; the tests check both against SciPy on integers.
    """
    if n <= 0:
        return ConfidenceInterval(math.nan, math.nan)
    alpha = 1.0 - confidence_level
    p = successes / n
    if method == "wilson":
        z = st.norm.ppf(1 - alpha / 2)
        denom = 1 + z * z / n
        center = (p + z * z / (2 * n)) / denom
        half = z / denom * math.sqrt(max(p * (1 - p) / n + z * z / (4 * n * n), 0.0))
        return ConfidenceInterval(max(0.0, center - half), min(1.0, center + half))
    if method in ("clopper-pearson", "exact"):
        lo = 0.0 if successes <= 0 else float(st.beta.ppf(alpha / 2, successes, n - successes + 1))
        hi = 1.0 if successes >= n else float(st.beta.ppf(1 - alpha / 2, successes + 1, n - successes))
        return ConfidenceInterval(lo, hi)
    raise ValueError(f"unknown interval method {method!r}; use 'wilson' or 'clopper-pearson'")


def accuracy(
    values: Sequence[float] | np.ndarray, *, confidence_level: float = 0.95, method: str = "wilson"
) -> ProportionResult:
    """Mean score with a Wilson (or Clopper-Pearson) interval, seeds clustered by document.

    ``values`` is (n_docs,) or (n_docs, n_seeds). With one seed the interval is the textbook one on
    (k, n). With several, the per-document variance is estimated with document clusters and the
    interval uses the effective n = p(1-p)/SE^2, clipped to [n_docs, n_docs*n_seeds].
    """
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    n_docs, n_seeds = arr.shape
    flat = arr[np.isfinite(arr)]
    if flat.size == 0:
        return ProportionResult(math.nan, n_docs, 0.0, method, confidence_level, math.nan, math.nan)
    p = float(flat.mean())
    if n_seeds == 1:
        n_eff = float(flat.size)
    else:
        doc_ids = np.broadcast_to(np.arange(n_docs)[:, None], arr.shape)[np.isfinite(arr)]
        se = clustered_se(flat, doc_ids)
        n_max = float(flat.size)
        n_eff = n_max if (not np.isfinite(se) or se <= 0) else float(np.clip(p * (1 - p) / se**2, n_docs, n_max))
    lo, hi = proportion_ci(p * n_eff, n_eff, confidence_level=confidence_level, method=method)
    return ProportionResult(p, n_docs, n_eff, method, confidence_level, lo, hi)


# --------------------------------------------------------------------------------------------
# McNemar, power, MDE
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class McNemarResult:
    """McNemar's test on paired binary outcomes.

    ``b`` = #(A right, B wrong), ``c`` = #(A wrong, B right); only these discordant pairs carry
    information about the difference. ``pvalue`` is the exact conditional test (b ~ Bin(b+c, 1/2)),
    ``pvalue_midp`` the less conservative mid-p (Fagerland et al. 2013). ``correlation`` is the phi
    coefficient between A's and B's correctness: how much pairing helped.
    """

    statistic: float  # b - c: the signed discordance
    pvalue: float
    pvalue_midp: float
    b: int
    c: int
    n: int
    correlation: float

    @property
    def discordance(self) -> float:
        return (self.b + self.c) / self.n if self.n else math.nan


def _phi(n11: int, n10: int, n01: int, n00: int) -> float:
    den = (n11 + n10) * (n01 + n00) * (n11 + n01) * (n10 + n00)
    return float((n11 * n00 - n10 * n01) / math.sqrt(den)) if den > 0 else math.nan


def mcnemar(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> McNemarResult:
    """Exact and mid-p McNemar test of A vs B from paired 0/1 vectors (same documents, same order)."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"mcnemar needs two 1-D arrays of equal length, got {x.shape} and {y.shape}")
    if not (_is_binary(x) and _is_binary(y)) or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("mcnemar needs 0/1 outcomes without missing values")
    n10 = int(np.sum((x == 1) & (y == 0)))
    n01 = int(np.sum((x == 0) & (y == 1)))
    n11 = int(np.sum((x == 1) & (y == 1)))
    n00 = int(np.sum((x == 0) & (y == 0)))
    return mcnemar_from_counts(n10, n01, n11=n11, n00=n00)


def mcnemar_from_counts(b: int, c: int, *, n11: int = 0, n00: int = 0) -> McNemarResult:
    """McNemar from the 2x2 table's cells; the concordant cells only enter n and the correlation."""
    m = b + c
    if m == 0:
        p_exact = p_mid = 1.0
    else:
        p_exact = float(st.binomtest(min(b, c), m, 0.5).pvalue)
        k = min(b, c)
        # mid-p: 2*P(X<k) + P(X=k), capped at 1 (equals 1 when b == c by symmetry).
        p_mid = float(min(1.0, 2 * st.binom.cdf(k - 1, m, 0.5) + st.binom.pmf(k, m, 0.5)))
    n = b + c + n11 + n00
    return McNemarResult(float(b - c), p_exact, p_mid, int(b), int(c), int(n), _phi(n11, b, c, n00))


@lru_cache(maxsize=64)
def _critical_values(n: int, alpha: float) -> np.ndarray:
    """k(m) for m = 0..n: the largest b with 2*P(Bin(m, 1/2) <= b) < alpha (-1: never rejects)."""
    m = np.arange(n + 1)
    # Start from the normal approximation and step to the exact crossing with the binomial cdf:
    # the same k as binom.ppf(alpha/2) corrected down by one where cdf(k) >= alpha/2, but ~5x faster
    # (binom.ppf is iterative), which matters to sample-size searches over many n.
    k = np.floor(m / 2 + st.norm.ppf(alpha / 2) * np.sqrt(m) / 2)
    k = np.clip(k, -1, m)
    for _ in range(64):
        up = (k + 1 <= m) & (st.binom.cdf(k + 1, m, 0.5) < alpha / 2)
        down = (k >= 0) & (st.binom.cdf(k, m, 0.5) >= alpha / 2)
        if not (up.any() or down.any()):
            break
        k = k + up - down
    k = k.astype(float)
    k.setflags(write=False)
    return k


def _mcnemar_reject_prob(
    n: int, p10: float | np.ndarray, p01: float | np.ndarray, alpha: float
) -> float | np.ndarray:
    """Exact probability that the exact McNemar test rejects at level alpha (strict p < alpha).

    Sums over the number of discordant pairs m ~ Bin(n, p10+p01); given m, b ~ Bin(m, p10/(p10+p01))
    and the test rejects when b <= k(m) or b >= m - k(m), with k(m) the largest k whose doubled
    lower tail under Bin(m, 1/2) is below alpha. Vectorized over arrays of (p10, p01).
    """
    p10a = np.atleast_1d(np.asarray(p10, dtype=float))[:, None]
    p01a = np.atleast_1d(np.asarray(p01, dtype=float))[:, None]
    pd = p10a + p01a
    m = np.arange(max(int(n), 0) + 1)[None, :]
    k = _critical_values(max(int(n), 0), float(alpha))[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.clip(np.where(pd > 0, p10a / pd, 0.5), 0.0, 1.0)
    lower = np.where(k >= 0, st.binom.cdf(k, m, q), 0.0)
    upper = np.where(k >= 0, st.binom.sf(m - k - 1, m, q), 0.0)
    cond = np.minimum(lower + upper, 1.0)
    out = np.sum(st.binom.pmf(m, int(n), np.clip(pd, 0.0, 1.0)) * cond, axis=1)
    out = np.where((pd[:, 0] > 0) & (n > 0), out, 0.0)
    return float(out[0]) if np.ndim(p10) == 0 and np.ndim(p01) == 0 else out


def mcnemar_power(n: int, p10: float, p01: float, *, alpha: float = 0.05) -> float:
    """Exact power of the exact McNemar test for n pairs with cell probabilities p10 and p01."""
    if p10 < 0 or p01 < 0 or p10 + p01 > 1:
        raise ValueError("need p10, p01 >= 0 and p10 + p01 <= 1")
    return _mcnemar_reject_prob(int(n), p10, p01, alpha)


def mde_mcnemar(n: int, discordance: float, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest |difference| the exact McNemar test detects with the given power, at this discordance.

    The observed discordance rate pi_d = (b+c)/n fixes how noisy the paired difference is. A true
    difference delta needs at least |delta| discordant items, so the model is
    pi_d(delta) = max(observed pi_d, delta), p10 = (pi_d + delta)/2, p01 = (pi_d - delta)/2,
    and the power is computed exactly (not by the normal approximation of Connor 1987, which is
    optimistic at the small b+c of quick runs). Returns inf when even delta = 1 is not detectable
    (n < 6 at alpha = 0.05).
    """
    n = int(n)
    pd0 = float(min(max(discordance, 0.0), 1.0))

    def pw(delta: float | np.ndarray) -> float | np.ndarray:
        pd = np.maximum(pd0, delta)
        return _mcnemar_reject_prob(n, (pd + delta) / 2, (pd - delta) / 2, alpha)

    if n <= 0 or pw(1.0) < power:
        return math.inf
    # Power rises with delta but has small discreteness wiggles; scan a grid, then refine the first
    # crossing with brentq so the result is the *smallest* delta reaching the power.
    grid = np.linspace(0.0, 1.0, 81)[1:]
    vals = np.asarray(pw(grid))
    i = int(np.argmax(vals >= power))
    lo = 0.0 if i == 0 else grid[i - 1]
    hi = grid[i]
    if pw(lo) >= power:
        return float(lo)
    return float(optimize.brentq(lambda d: pw(d) - power, lo, hi, xtol=1e-5))


def mde_normal(sd_diff: float, n: int, *, alpha: float = 0.05, power: float = 0.8) -> float:
    """MDE = (z_{1-alpha/2} + z_power) * sd(d)/sqrt(n): the normal-theory version (Miller 2024 rec. 5).

    Used for pooled seeds or non-binary scores, where McNemar's exact power does not apply.
    """
    if n <= 1 or not np.isfinite(sd_diff):
        return math.inf
    return float((st.norm.ppf(1 - alpha / 2) + st.norm.ppf(power)) * sd_diff / math.sqrt(n))


# --------------------------------------------------------------------------------------------
# paired difference
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairedDifferenceResult:
    """Difference in mean score, A minus B, on the same documents.

    ``statistic`` = mean(A) - mean(B). ``pvalue``: exact McNemar for one seed of 0/1 scores,
    otherwise a paired sign-flip permutation test on per-document differences (``method`` says
    which). ``low``/``high``: paired bootstrap percentile CI over documents. ``mde``: minimum
    detectable |difference| at ``alpha`` and 80 % power given this run's discordance.
    """

    statistic: float
    pvalue: float
    pvalue_midp: float
    low: float
    high: float
    standard_error: float
    n: int
    n_seeds: tuple[int, int]
    b: int | None
    c: int | None
    correlation: float
    discordance: float
    mde: float
    method: str
    confidence_level: float

    def confidence_interval(self) -> ConfidenceInterval:
        return ConfidenceInterval(self.low, self.high)


def _mean_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def paired_bootstrap_diff_ci(
    a: np.ndarray,
    b: np.ndarray,
    *,
    confidence_level: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    method: str = "percentile",
    rng: int | np.random.Generator | None = 0,
) -> ConfidenceInterval:
    """Paired bootstrap CI of mean(a) - mean(b) along the last axis (Koehn 2004; SciPy ``paired=True``).

    Accepts batched input of shape (..., n): one interval per leading index, which lets the
    coverage simulation run the production code vectorized. A degenerate input (every difference
    equal) gets the point interval, not SciPy's NaN.
    """
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired arrays differ in shape: {x.shape} vs {y.shape}")
    d = x - y
    degenerate = np.all(d == d[..., :1], axis=-1)
    if x.shape[-1] < 2:
        v = _mean_diff(x, y)
        return ConfidenceInterval(float(v), float(v)) if np.ndim(v) == 0 else ConfidenceInterval(v, v)
    batch = max(1, int(2e7 // max(1, x.size)))  # resamples per chunk: bounds memory to ~160 MB
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = st.bootstrap(
            (x, y),
            _mean_diff,
            paired=True,
            vectorized=True,
            axis=-1,
            n_resamples=n_resamples,
            batch=batch,
            confidence_level=confidence_level,
            method=method,
            rng=_rng(rng),
        )
    lo = np.asarray(res.confidence_interval.low, dtype=float)
    hi = np.asarray(res.confidence_interval.high, dtype=float)
    point = _mean_diff(x, y)
    lo = np.where(degenerate | ~np.isfinite(lo), point, lo)
    hi = np.where(degenerate | ~np.isfinite(hi), point, hi)
    if lo.ndim == 0:
        return ConfidenceInterval(float(lo), float(hi))
    return ConfidenceInterval(lo, hi)


def paired_difference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    *,
    confidence_level: float = 0.95,
    alpha: float = 0.05,
    power: float = 0.8,
    n_resamples: int = DEFAULT_RESAMPLES,
    rng: int | np.random.Generator | None = 0,
    compute_mde: bool = True,
) -> PairedDifferenceResult:
    """Paired difference of A vs a baseline B on the same documents (row i = document i in both).

    ``a`` and ``b`` are (n_docs,) or (n_docs, n_seeds) score arrays; the seed counts may differ.
    Seeds are averaged per document before anything else, so all resampling is clustered by
    document. One seed of 0/1 scores on both sides: exact McNemar with b, c, mid-p and the exact-power
    MDE. Otherwise: paired permutation test (sign flips of per-document differences, SciPy
    ``permutation_test(permutation_type='samples')``) and the normal-theory MDE; b and c are then
    counted over seed-matched pairs when both sides have the same number of seeds.
    ``compute_mde=False`` skips the MDE (NaN) where only the difference is wanted.
    """
    A = np.asarray(a, dtype=float)
    B = np.asarray(b, dtype=float)
    A2 = A[:, None] if A.ndim == 1 else A
    B2 = B[:, None] if B.ndim == 1 else B
    if A2.shape[0] != B2.shape[0]:
        raise ValueError(f"paired_difference needs the same documents: {A2.shape[0]} vs {B2.shape[0]} rows")
    da, db = doc_means(A2), doc_means(B2)
    ok = np.isfinite(da) & np.isfinite(db)
    if not np.all(ok):
        raise ValueError(f"{int((~ok).sum())} documents lack a score on one side; align documents first")
    n = da.size
    d = da - db
    delta = float(d.mean()) if n else math.nan
    se = float(np.std(d, ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    gen = _rng(rng)
    lo, hi = paired_bootstrap_diff_ci(da, db, confidence_level=confidence_level, n_resamples=n_resamples, rng=gen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        corr = float(np.corrcoef(da, db)[0, 1]) if n > 2 and np.std(da) > 0 and np.std(db) > 0 else math.nan
    single = A2.shape[1] == 1 and B2.shape[1] == 1
    b_cnt: int | None = None
    c_cnt: int | None = None
    if single and _is_binary(da) and _is_binary(db):
        mc = mcnemar(da, db)
        b_cnt, c_cnt = mc.b, mc.c
        pval, pmid = mc.pvalue, mc.pvalue_midp
        discord = mc.discordance
        mde = mde_mcnemar(n, discord, alpha=alpha, power=power) if compute_mde else math.nan
        corr = mc.correlation
        method = "McNemar exact"
    else:
        if A2.shape[1] == B2.shape[1] and _is_binary(A2) and _is_binary(B2):
            b_cnt = int(np.sum((A2 == 1) & (B2 == 0)))
            c_cnt = int(np.sum((A2 == 0) & (B2 == 1)))
        discord = float(np.mean(d != 0)) if n else math.nan
        if n == 0 or np.all(d == 0):
            pval = 1.0
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = st.permutation_test(
                    (da, db),
                    _mean_diff,
                    permutation_type="samples",
                    vectorized=True,
                    n_resamples=n_resamples,
                    alternative="two-sided",
                    rng=gen,
                )
            pval = float(res.pvalue)
        pmid = pval
        sd = float(np.std(d, ddof=1)) if n > 1 else math.nan
        if not compute_mde:
            mde = math.nan
        elif sd > 0:
            mde = mde_normal(sd, n, alpha=alpha, power=power)
        else:
            mde = mde_mcnemar(n, 0.0, alpha=alpha, power=power)
        method = "paired permutation (documents)"
    return PairedDifferenceResult(
        statistic=delta,
        pvalue=pval,
        pvalue_midp=pmid,
        low=float(lo),
        high=float(hi),
        standard_error=se,
        n=n,
        n_seeds=(A2.shape[1], B2.shape[1]),
        b=b_cnt,
        c=c_cnt,
        correlation=corr,
        discordance=discord,
        mde=mde,
        method=method,
        confidence_level=confidence_level,
    )


# --------------------------------------------------------------------------------------------
# ratios of cost (NFE, latency, tokens/s)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RatioResult:
    """Ratio of A's to B's total (or rate), with a Wilcoxon test on per-unit log-ratios.

    ``statistic`` = (sum a_num / sum a_den) / (sum b_num / sum b_den): for NFE the ratio of mean
    NFE, for tokens/s the ratio of throughputs. ``pvalue``: Wilcoxon signed-rank on log(a_i/b_i)
    with zero_method='pratt' (integer NFE often ties exactly). ``median_ratio``: exp of the median
    log-ratio, a per-item view robust to a few very long items. ``n``: units (documents or batch
    clusters) tested; ``n_excluded``: units without a positive value on both sides.
    """

    statistic: float
    pvalue: float
    low: float
    high: float
    median_ratio: float
    n: int
    n_excluded: int
    confidence_level: float
    log_sd: float = math.nan  # sd of the per-unit log-ratios (ddof=1): what ``mde_ratio`` needs

    def confidence_interval(self) -> ConfidenceInterval:
        return ConfidenceInterval(self.low, self.high)


def mde_ratio(log_sd: float, n: int, *, alpha: float = 0.05, power: float = 0.8, direction: int = 1) -> float:
    """Minimum detectable ratio effect, as a distance from 1x, from the spread of per-unit log-ratios.

    Normal theory on the log scale (the scale of the Wilcoxon test's log-ratios): the detectable
    log-ratio is (z_{1-alpha/2} + z_power) sd/sqrt(n); ``direction`` +1 returns exp(that) - 1 (a
    gain, e.g. 0.10 for 1.10x), -1 returns 1 - exp(-that) (a saving, e.g. 0.09 for 0.91x). inf when
    the spread is unknown.
    """
    if n <= 1 or not np.isfinite(log_sd):
        return math.inf
    m = (st.norm.ppf(1 - alpha / 2) + st.norm.ppf(power)) * log_sd / math.sqrt(n)
    return float(math.expm1(m) if direction > 0 else -math.expm1(-m))


def _group_sums(x: np.ndarray, inv: np.ndarray, k: int) -> np.ndarray:
    return np.bincount(inv, weights=x, minlength=k)


def paired_ratio(
    a_num: Sequence[float] | np.ndarray,
    b_num: Sequence[float] | np.ndarray,
    a_den: Sequence[float] | np.ndarray | None = None,
    b_den: Sequence[float] | np.ndarray | None = None,
    *,
    clusters: Sequence[object] | np.ndarray | None = None,
    confidence_level: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    rng: int | np.random.Generator | None = 0,
) -> RatioResult:
    """Paired ratio of a cost or rate between A and baseline B, per document or per cluster.

    Inputs are per-document values in the same document order. With ``clusters`` (for timings:
    the batch each document ran in, since all rows of one batch share one wall-clock measurement)
    values are summed per cluster first and the cluster is the unit of the test and the bootstrap.
    The CI is a paired BCa bootstrap (percentile if BCa is degenerate).
    """
    an = np.asarray(a_num, dtype=float)
    bn = np.asarray(b_num, dtype=float)
    ad = np.ones_like(an) if a_den is None else np.asarray(a_den, dtype=float)
    bd = np.ones_like(bn) if b_den is None else np.asarray(b_den, dtype=float)
    if not (an.shape == bn.shape == ad.shape == bd.shape) or an.ndim != 1:
        raise ValueError("paired_ratio needs four 1-D arrays of equal length (one value per document)")
    ok = np.isfinite(an) & np.isfinite(bn) & np.isfinite(ad) & np.isfinite(bd)
    an, bn, ad, bd = an[ok], bn[ok], ad[ok], bd[ok]
    n_missing = int((~ok).sum())
    if clusters is not None:
        cl = np.asarray(clusters, dtype=object)[ok]
        _, inv = np.unique(cl.astype(str), return_inverse=True)
        k = int(inv.max()) + 1 if inv.size else 0
        an, bn, ad, bd = (_group_sums(v, inv, k) for v in (an, bn, ad, bd))
    if an.size == 0 or bn.sum() <= 0 or bd.sum() <= 0 or ad.sum() <= 0:
        return RatioResult(math.nan, math.nan, math.nan, math.nan, math.nan, 0, n_missing + an.size, confidence_level)
    ratio = float((an.sum() / ad.sum()) / (bn.sum() / bd.sum()))
    pos = (an > 0) & (bn > 0) & (ad > 0) & (bd > 0)
    lr = np.log(an[pos] / ad[pos]) - np.log(bn[pos] / bd[pos])
    n_excl = n_missing + int((~pos).sum())
    if lr.size == 0 or np.all(lr == 0):
        pval = 1.0 if lr.size else math.nan
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pval = float(st.wilcoxon(lr, zero_method="pratt").pvalue)
    med = float(np.exp(np.median(lr))) if lr.size else math.nan

    def stat(x1: np.ndarray, x2: np.ndarray, y1: np.ndarray, y2: np.ndarray, axis: int = -1) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return (x1.sum(axis) / x2.sum(axis)) / (y1.sum(axis) / y2.sum(axis))

    lo = hi = ratio
    if an.size >= 2:
        for method in ("BCa", "percentile"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                res = st.bootstrap(
                    (an, ad, bn, bd),
                    stat,
                    paired=True,
                    vectorized=True,
                    n_resamples=n_resamples,
                    confidence_level=confidence_level,
                    method=method,
                    rng=_rng(rng),
                )
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
            if np.isfinite(lo) and np.isfinite(hi):
                break
        else:
            lo = hi = ratio
    sd = float(np.std(lr, ddof=1)) if lr.size > 1 else math.nan
    return RatioResult(ratio, pval, lo, hi, med, int(lr.size), n_excl, confidence_level, sd)


# --------------------------------------------------------------------------------------------
# multiplicity
# --------------------------------------------------------------------------------------------


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm (1979) step-down adjusted p-values; controls the family-wise error under any dependence.

    Sort p ascending; adjusted p_(i) = min(1, max_{j<=i} (m-j+1) p_(j)). NaN entries (no test) are
    left NaN and do not count towards m. SciPy has only FDR procedures, hence these lines.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = idx.size
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


def rate_ci(
    num: Sequence[float] | np.ndarray,
    den: Sequence[float] | np.ndarray,
    *,
    clusters: Sequence[object] | np.ndarray | None = None,
    confidence_level: float = 0.95,
    n_resamples: int = DEFAULT_RESAMPLES,
    rng: int | np.random.Generator | None = 0,
) -> tuple[float, ConfidenceInterval]:
    """sum(num)/sum(den) (e.g. tokens per second) with a cluster bootstrap percentile CI.

    Timings of one batch are one measurement, so the batch (``clusters``) is the resampling unit.
    """
    x = np.asarray(num, dtype=float)
    y = np.asarray(den, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if clusters is not None:
        cl = np.asarray(clusters, dtype=object)[ok].astype(str)
        _, inv = np.unique(cl, return_inverse=True)
        k = int(inv.max()) + 1 if inv.size else 0
        x, y = _group_sums(x, inv, k), _group_sums(y, inv, k)
    if x.size == 0 or y.sum() <= 0:
        return math.nan, ConfidenceInterval(math.nan, math.nan)
    value = float(x.sum() / y.sum())
    if x.size < 2:
        return value, ConfidenceInterval(value, value)

    def stat(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return a.sum(axis) / b.sum(axis)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = st.bootstrap(
            (x, y), stat, paired=True, vectorized=True, n_resamples=n_resamples,
            confidence_level=confidence_level, method="percentile", rng=_rng(rng),
        )
    lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (np.isfinite(lo) and np.isfinite(hi)):
        lo = hi = value
    return value, ConfidenceInterval(lo, hi)


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """Labels not dominated in (accuracy, tokens/s): nobody else is at least as good on both and better on one."""
    front = []
    for lab, a, t in points:
        dominated = any((a2 >= a and t2 >= t) and (a2 > a or t2 > t) for l2, a2, t2 in points if l2 != lab)
        if not dominated:
            front.append(lab)
    return front
