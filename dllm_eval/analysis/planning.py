"""`dllm-eval plan`: how many documents a paired comparison needs to detect a given difference.

    dllm-eval plan results/<run> --mde 5            # discordance read from the run, per comparison
    dllm-eval plan --discordance 0.2 --mde 5 [--alpha 0.05 --power 0.8 --comparisons 10]

Why: a paired accuracy comparison carries information only in its discordant documents (one
scheduler right, the other wrong), so the documents needed for a target MDE depend on how often
the two disagree, not on accuracy itself. A quick run measures that rate; this turns it into the
n a decisive run needs, at the report's family-wise alpha, *before* spending the compute.

The model is the one behind the report's MDE column (``stats.mde_mcnemar``): a true difference
delta with discordance pi = max(observed pi, delta) has cells p10 = (pi + delta)/2, p01 =
(pi - delta)/2, and the power is the exact power of the exact McNemar test. The alpha is the
report's Holm family at its most stringent step, alpha/m (Holm's first step is Bonferroni's, and a
plan must hold whichever comparison comes first). Exact power is saw-toothed in n; the planned n
is the smallest n at which it reaches the target.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as st

from dllm_eval.analysis import stats
from dllm_eval.errors import UserError

__all__ = ["SampleSize", "add_arguments", "connor_n", "n_for_mde", "plan_run", "run"]

EXACT_MAX_N = 10000  # above this the exact power is slow and Connor's normal approximation is accurate


@dataclass(frozen=True)
class SampleSize:
    """Documents needed for one comparison: ``n`` (exact McNemar power), ``n_connor`` (normal approx.)."""

    n: int
    n_connor: int
    power_at_n: float
    mde: float
    discordance: float
    alpha: float
    power: float
    method: str


def _cells(mde: float, discordance: float) -> tuple[float, float]:
    pd = min(max(discordance, mde), 1.0)
    return (pd + mde) / 2, (pd - mde) / 2


def connor_n(mde: float, discordance: float, *, alpha: float = 0.05, power: float = 0.8) -> int:
    """Connor (1987): n = [z_{1-a/2} sqrt(pi) + z_power sqrt(pi - delta^2)]^2 / delta^2, rounded up."""
    pd = max(discordance, mde)
    za, zb = st.norm.isf(alpha / 2), st.norm.ppf(power)
    return math.ceil((za * math.sqrt(pd) + zb * math.sqrt(max(pd - mde * mde, 0.0))) ** 2 / (mde * mde) - 1e-9)


def n_for_mde(mde: float, discordance: float, *, alpha: float = 0.05, power: float = 0.8) -> SampleSize:
    """Smallest n at which the exact McNemar test detects |difference| = ``mde`` with ``power``.

    ``mde`` and ``discordance`` are fractions (0.05 = 5 points). Bisection on the exact power
    brackets the crossing, then a scan below it finds the smallest n that reaches the power
    (the saw-tooth can put one a little lower). Connor's approximation is returned alongside,
    and used alone above ``EXACT_MAX_N``.
    """
    if not 0 < mde <= 1:
        raise ValueError(f"mde must be in (0, 1] (a fraction), got {mde}")
    if not 0 <= discordance <= 1:
        raise ValueError(f"discordance must be in [0, 1], got {discordance}")
    if not (0 < alpha < 1 and 0 < power < 1):
        raise ValueError(f"alpha and power must be in (0, 1), got {alpha}, {power}")
    p10, p01 = _cells(mde, discordance)
    nc = connor_n(mde, discordance, alpha=alpha, power=power)

    def pw(n: int) -> float:
        return float(stats.mcnemar_power(n, p10, p01, alpha=alpha))

    if nc > EXACT_MAX_N:
        return SampleSize(nc, nc, math.nan, mde, discordance, alpha, power, "Connor (normal approximation)")
    hi = max(nc, 2)
    while pw(hi) < power:
        hi = math.ceil(hi * 1.25) + 1
        if hi > 4 * EXACT_MAX_N:
            return SampleSize(nc, nc, math.nan, mde, discordance, alpha, power, "Connor (normal approximation)")
    lo = max(1, hi // 2)
    while lo > 1 and pw(lo) >= power:
        lo //= 2
    while hi - lo > 1:  # invariant: pw(lo) < power <= pw(hi)
        mid = (lo + hi) // 2
        if pw(mid) >= power:
            hi = mid
        else:
            lo = mid
    best = hi
    for n in range(hi - 1, max(0, hi - 1 - 30), -1):  # saw-tooth: an earlier n (within 30) may already reach it
        if pw(n) >= power:
            best = n
    return SampleSize(best, nc, pw(best), mde, discordance, alpha, power, "exact McNemar power")


# --------------------------------------------------------------------------------------------
# from a run
# --------------------------------------------------------------------------------------------


def _family_size(idx: Any, run: Any, labels: list[str], base: str) -> int:
    """The report's Holm family: accuracy plus each available cost ratio, per non-control label and task."""
    from dllm_eval.analysis import report as R

    m = 0
    for task in run.tasks:
        if not idx.has(base, task):
            continue
        for lab in labels:
            if lab == base or run.configs[lab].role in R.CONTROL_ROLES or not idx.has(lab, task):
                continue
            m += 1
            has = {c: R._has(idx.matrix(lab, task, c)) and R._has(idx.matrix(base, task, c))
                   for c in ("nfe", "gen_tokens", "cost_s", "latency_s")}
            m += int(has["nfe"]) + int(has["gen_tokens"] and has["cost_s"]) + int(has["latency_s"])
    return max(m, 1)


def plan_run(
    run_dir: str,
    mde: float,
    *,
    alpha: float = 0.05,
    power: float = 0.8,
    comparisons: int | None = None,
    baseline: str | None = None,
    metric: str | None = None,
) -> dict[str, Any]:
    """Per comparison (label x task, and pooled over tasks): observed discordance and the n needed.

    Reads the run with ``loading.load_run``; seeds are averaged per document first, and a document
    is discordant when its (seed-averaged) scores differ. ``comparisons`` overrides the report's
    Holm family size m; the plan uses alpha/m.
    """
    from dllm_eval.analysis import report as R
    from dllm_eval.analysis.loading import load_run

    run = load_run(run_dir, metric=metric)
    base = R._resolve_baseline(run, baseline)
    labels = R._order_labels(run, base)
    idx = R._Index(run)
    m = comparisons or _family_size(idx, run, labels, base)
    a_adj = alpha / m
    rows: list[dict[str, Any]] = []
    for lab in labels:
        if lab == base or run.configs[lab].role in R.CONTROL_ROLES:
            continue
        pooled: list[np.ndarray] = []
        for task in run.tasks:
            if not (idx.has(lab, task) and idx.has(base, task)):
                continue
            da = R._dm(idx.matrix(lab, task, "correct"))
            db = R._dm(idx.matrix(base, task, "correct"))
            ok = np.isfinite(da) & np.isfinite(db)
            disc = (da[ok] != db[ok]).astype(float)
            pooled.append(disc)
            rows.append(_plan_row(lab, task, disc, mde, a_adj, power))
        if len(pooled) > 1:
            rows.append(_plan_row(lab, "all tasks (pooled)", np.concatenate(pooled), mde, a_adj, power))
    return {"run": str(run_dir), "baseline": base, "alpha": alpha, "m": m, "alpha_adj": a_adj, "power": power,
            "mde": mde, "rows": rows}


def _plan_row(label: str, task: str, disc: np.ndarray, mde: float, alpha: float, power: float) -> dict[str, Any]:
    n = int(disc.size)
    pd = float(disc.mean()) if n else math.nan
    now = stats.mde_mcnemar(n, pd, alpha=alpha, power=power) if n else math.inf
    # a run with no discordant pair says only that discordance is small: plan with one pair's worth
    pd_plan = pd if pd > 0 else 1.0 / max(n, 1)
    need = n_for_mde(mde, pd_plan, alpha=alpha, power=power)
    return {"label": label, "task": task, "n": n, "discordant": int(disc.sum()), "discordance": pd,
            "mde_now": now, "n_needed": need.n, "n_connor": need.n_connor, "more": max(0, need.n - n),
            "assumed_discordance": pd_plan}


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", nargs="?", metavar="RUN_DIR",
                        help="a results/<run> folder: read each comparison's discordance from it")
    parser.add_argument("--mde", type=float, required=True,
                        help="the smallest accuracy difference to detect, in percentage points (e.g. 5)")
    parser.add_argument("--discordance", type=float,
                        help="share of documents on which the two schedulers disagree (e.g. 0.2), instead of RUN_DIR")
    parser.add_argument("--alpha", type=float, default=0.05, help="family-wise significance level (default 0.05)")
    parser.add_argument("--power", type=float, default=0.8, help="target power (default 0.8)")
    parser.add_argument("--comparisons", type=int,
                        help="size m of the Holm family; the plan uses alpha/m (default: the run's report family, else 1)")
    parser.add_argument("--baseline", help="label the others are compared against (default: the run's baseline)")
    parser.add_argument("--metric", help="score to use when a task logs several")


def _pts(x: float) -> str:
    return "∞" if not math.isfinite(x) else f"{100 * x:.1f}"


def run(args: argparse.Namespace) -> int:
    if not 0 < args.mde < 100:
        raise UserError(f"--mde is in percentage points, between 0 and 100 (e.g. 5), got {args.mde}")
    if not 0 < args.alpha < 1 or not 0 < args.power < 1:
        raise UserError(f"--alpha and --power must be between 0 and 1, got {args.alpha} and {args.power}")
    if args.comparisons is not None and args.comparisons < 1:
        raise UserError(f"--comparisons must be at least 1, got {args.comparisons}")
    mde = args.mde / 100
    if (args.run_dir is None) == (args.discordance is None):
        raise UserError("give either RUN_DIR (to read the discordance from a run) or --discordance, not both or neither")
    if args.discordance is not None:
        if not 0 < args.discordance <= 1:
            raise UserError(f"--discordance is a share of documents, in (0, 1], got {args.discordance}")
        m = args.comparisons or 1
        r = n_for_mde(mde, args.discordance, alpha=args.alpha / m, power=args.power)
        print(f"Paired comparison, discordance {args.discordance:.3f}, MDE {args.mde:g} pts, power {args.power:.0%}, "
              f"alpha {args.alpha:g}/{m} = {args.alpha / m:.4g} (two-sided):")
        print(f"  documents needed: {r.n} ({r.method}; power at that n {r.power_at_n:.3f}); "
              f"Connor's normal approximation: {r.n_connor}")
        return 0
    plan = plan_run(args.run_dir, mde, alpha=args.alpha, power=args.power, comparisons=args.comparisons,
                    baseline=args.baseline, metric=args.metric)
    print(f"Plan for {plan['run']} against `{plan['baseline']}`: MDE {args.mde:g} pts at {args.power:.0%} power, "
          f"alpha {args.alpha:g}/{plan['m']} = {plan['alpha_adj']:.4g} (Holm's first step over the report's "
          f"{plan['m']} comparisons), exact McNemar power")
    print()
    head = ["Comparison", "Task", "Documents", "Discordant", "Discordance", "MDE now (pts)", "Documents needed", "More"]
    print("| " + " | ".join(head) + " |")
    print("|" + "|".join("---" for _ in head) + "|")
    for r in plan["rows"]:
        disc = f"{r['discordance']:.3f}" + ("" if r["discordant"] else f" (planned at {r['assumed_discordance']:.3f})")
        print(f"| `{r['label']}` | {r['task']} | {r['n']} | {r['discordant']} | {disc} | {_pts(r['mde_now'])} | "
              f"{r['n_needed']} | {r['more']} |")
    print()
    print("Documents needed is per comparison on the same documents (paired); 'More' is what to add to this run. "
          "The discordance of a small run is itself uncertain, so treat the numbers as a guide.", file=sys.stdout)
    return 0
