"""pass@k, the unbiased estimator of Chen et al. (2021), "Evaluating Large Language Models Trained on Code".

With n samples of which c pass, pass@k = 1 - C(n-c, k) / C(n, k): the chance that at least one
of k samples drawn without replacement passes. Averaging the naive 1-(1-c/n)^k is biased; this
is not. The ratio of binomials is computed as a running product so that n in the thousands
neither overflows nor loses precision.
"""

from __future__ import annotations


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with `n` samples, `c` of them correct."""
    for name, value in (("n", n), ("c", c), ("k", k)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"pass_at_k: {name} must be an int, not {type(value).__name__}")
    if n < 1:
        raise ValueError(f"pass_at_k: need at least one sample (n={n})")
    if not 0 <= c <= n:
        raise ValueError(f"pass_at_k: c={c} correct samples is outside 0..n={n}")
    if not 1 <= k <= n:
        raise ValueError(f"pass_at_k: k={k} must be between 1 and the number of samples n={n}")
    if n - c < k:
        return 1.0  # every draw of k samples contains a correct one
    # C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i)
    fail_all = 1.0
    for i in range(n - c + 1, n + 1):
        fail_all *= 1.0 - k / i
    return 1.0 - fail_all
