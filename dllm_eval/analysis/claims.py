"""The two seed proposals' quantitative claims, as data, and the one decision table that judges them.

Sources: ../shared/seeds/000 (Dynamic Refinement Scheduling, DRS) and 001 (Self-Correcting
Adaptive Inference Scheduling). Each claim names the scheduler it is about, what it is compared
with (the baseline, static Fast-dLLM with dual cache, B=32, tau=0.9, unless stated), the measure,
and the claimed range on that measure's scale.

Reading the seeds' wording (choices the seeds leave open, stated so they can be disputed):

* "+5-12% accuracy" is read as percentage points (the usual meaning for accuracy deltas);
* "+15-25% throughput" is a tokens/s ratio of 1.15-1.25; "+31%" one of 1.31;
* "easy content" is tier 1 of the synthetic tasks, "complex reasoning" tiers 3-4;
* "cache efficiency" is the traces' ``cache_hit_rate`` relative to the baseline's;
* a point claim ("1.3x", "+3.2%") is the range [x, x]. An interval can never lie inside a point,
  so a point claim is never *supported*: the best a run can say is that the interval excludes no
  effect and contains the point, which the table calls *inconclusive* (with that reason). This is
  deliberate: a run that cannot tell +3.2% from +9% has not confirmed "+3.2%".
* "more than the baseline" is the open range (1, inf); "fewer than" is (-inf, 1) on ratios.
* "throughput" claims are tokens/s ratios in one of two units of the interleaved timing pass
  (``dllm_eval.timing.THROUGHPUT_UNITS``), named in each claim row: *kept tokens/s* (non-EOS
  tokens of the answers as kept, per second), the default, or *canvas tokens/s* (canvas positions
  decoded, gen_length x rows, per second);
* "long-sequence scaling +20-35%" is read as the ratio of 1.20-1.35 over the baseline at the
  *longest* length of the generation-length sweep (``eval-all --gen-lengths``; the seed contrasts
  the baseline's "linear degradation" with "sublinear scaling" on long sequences, so the gain is
  claimed where sequences are long), in **canvas tokens/s**. Why that unit: the claim is about how
  decoding cost grows with the sequence, and at one fixed canvas length both configurations decode
  the same positions of the same batch, so the paired per-batch canvas-tokens/s ratio is exactly
  the inverse ratio of their wall times, a speed measure whatever the answers contain. Kept
  tokens/s would also move with answer length and is undefined for empty answers, which is what
  long canvases give on models trained on short ones (the embedded tiny models, trained on 64- and
  96-token canvases, answer mostly nothing at 256 tokens; the report's sweep section gives the
  share of empty answers per length). The ratios at the shorter lengths are shown beside it in the
  sweep section, so a gain that grows with length is visible too; accuracy at each length is shown
  there and is not part of this claim.

Why one decision function (``decide``): the old three-word verdict called a measurement that
*exceeded* the claim "contradicted" and judged throughput on two batches. The table below has
non-overlapping classes, a minimum number of independent units, and uses the MDE to tell "no
effect" from "could not have seen one".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dllm_eval.timing import CANVAS, KEPT, THROUGHPUT_UNITS

__all__ = [
    "CLAIMS",
    "DECISION_TABLE",
    "INTERVAL_MEASURES",
    "MIN_UNITS",
    "VERDICTS",
    "Claim",
    "ClaimDecision",
    "claim_direction",
    "decide",
    "decide_claim",
    "judge",
]

MIN_UNITS = 20  # no verdict from fewer independent units (documents, or batches for timings)

OPPOSITE = "opposite direction"
LARGER = "larger than claimed"
SUPPORTED = "supported"
SMALLER = "smaller than claimed but real"
NO_EFFECT = "no detectable effect"
INCONCLUSIVE = "inconclusive"
TOO_FEW = "too few units"
NOT_MEASURABLE = "not measurable"

VERDICTS: tuple[str, ...] = (OPPOSITE, LARGER, SUPPORTED, SMALLER, NO_EFFECT, INCONCLUSIVE)
"""The six classes of the decision table; every finite interval from enough units gets exactly one."""

INTERVAL_MEASURES = ("acc_delta", "tps_ratio", "nfe_ratio", "cache_ratio", "untestable")
"""Measures judged by the decision table (``untestable``: an interval claim this matrix cannot
measure yet; it still counts in the pre-registered family)."""

DECISION_TABLE: tuple[tuple[str, str], ...] = (
    (TOO_FEW, f"fewer than {MIN_UNITS} independent units (documents; batches for timings): no verdict"),
    (OPPOSITE, "the interval excludes no effect on the other side of it from the claim"),
    (LARGER, "the whole interval lies beyond the claimed range (lo > b)"),
    (SUPPORTED, "the interval excludes no effect and lies inside [a, b] (never for a point claim)"),
    (SMALLER, "the interval excludes no effect, on the claimed side, but lies short of the range (hi < a)"),
    (NO_EFFECT, "the interval holds no effect and the run's MDE is below the claimed effect a"),
    (INCONCLUSIVE, "everything else: the interval straddles a bound of the range, or holds no effect "
                   "while the run was too small to see the claimed effect"),
)
"""(verdict, rule) in words, in the order the report prints them. Rules are stated for a claim
above no effect; for a claim below it (a drop, a cost saving) read them mirrored."""


@dataclass(frozen=True)
class Claim:
    seed: str
    text: str
    scheduler: str
    measure: str  # acc_delta | tps_ratio | nfe_ratio | cache_ratio | identical | frontier | untestable
    claimed: tuple[float, float]
    null: float | None = None  # value meaning "no effect" (0 for deltas, 1 for ratios)
    versus: str | None = None  # None: the report's baseline; else another scheduler name
    tiers: tuple[int, ...] | None = None
    note: str = ""
    sweep: bool = False  # measured at the longest length of the generation-length sweep, not the main matrix
    throughput: str = KEPT  # tps_ratio only: the tokens/s unit (timing.KEPT or timing.CANVAS)

    def __post_init__(self) -> None:
        if self.throughput not in THROUGHPUT_UNITS:
            raise ValueError(f"claim {self.text!r}: throughput unit {self.throughput!r} is not one of "
                             f"{', '.join(THROUGHPUT_UNITS)}")

    @property
    def unit(self) -> str:
        """The independent unit the claim's interval resamples: batches for timings, else documents."""
        return "batches" if self.measure == "tps_ratio" else "documents"

    @property
    def throughput_unit(self) -> str | None:
        """The words for the tokens/s unit of a throughput claim ("canvas tokens/s"); None otherwise."""
        return THROUGHPUT_UNITS[self.throughput] if self.measure == "tps_ratio" else None


_INF = math.inf
S000 = "000 DRS"
S001 = "001 Adaptive"

CLAIMS: tuple[Claim, ...] = (
    # ---- seed 001: Self-Correcting Adaptive Inference Scheduling -----------------------------
    Claim(S001, "Throughput on easy content +15-25%", "adaptive", "tps_ratio", (1.15, 1.25), 1.0, tiers=(1,)),
    Claim(S001, "Accuracy on complex reasoning +5-12%", "adaptive", "acc_delta", (0.05, 0.12), 0.0, tiers=(3, 4)),
    Claim(S001, "Cache efficiency +30-40%", "adaptive", "cache_ratio", (1.30, 1.40), 1.0),
    Claim(S001, "Long-sequence scaling +20-35%", "adaptive", "tps_ratio", (1.20, 1.35), 1.0, sweep=True,
          throughput=CANVAS, note="canvas tokens/s ratio at the longest length of the generation-length sweep"),
    Claim(S001, "Superior accuracy-throughput frontier", "adaptive", "frontier", (1.0, 1.0)),
    Claim(S001, "Ablation: dynamic block sizing, accuracy +3.2%", "adaptive_block", "acc_delta", (0.032, 0.032), 0.0),
    Claim(S001, "Ablation: dynamic block sizing, throughput +18%", "adaptive_block", "tps_ratio", (1.18, 1.18), 1.0),
    Claim(S001, "Ablation: adaptive thresholding, accuracy +2.8%", "adaptive_threshold", "acc_delta", (0.028, 0.028), 0.0),
    Claim(S001, "Ablation: adaptive thresholding, throughput +12%", "adaptive_threshold", "tps_ratio", (1.12, 1.12), 1.0),
    Claim(S001, "Ablation: tiered cache, accuracy +0.5%", "tiered_cache", "acc_delta", (0.005, 0.005), 0.0),
    Claim(S001, "Ablation: tiered cache, throughput +25%", "tiered_cache", "tps_ratio", (1.25, 1.25), 1.0),
    Claim(S001, "Ablation: full system, accuracy +6.1%", "adaptive", "acc_delta", (0.061, 0.061), 0.0),
    Claim(S001, "Ablation: full system, throughput +31%", "adaptive", "tps_ratio", (1.31, 1.31), 1.0),
    # ---- seed 000: Dynamic Refinement Scheduling (reported as a null result) -----------------
    Claim(S000, "DRS costs 1.3x the baseline's NFE", "drs", "nfe_ratio", (1.3, 1.3), 1.0),
    Claim(S000, "DRS slightly lowers quality", "drs", "acc_delta", (-0.05, 0.0), 0.0,
          note="'slight' read as a drop of at most 5 points"),
    Claim(S000, "On easy items DRS's first pass alone costs more than the baseline", "drs", "nfe_ratio",
          (1.0, _INF), 1.0, tiers=(1,)),
    Claim(S000, "Proportional and uniform allocation give identical outputs", "drs", "identical", (1.0, 1.0),
          None, versus="drs_uniform"),
    Claim(S000, "A viable successor must use fewer NFE than the baseline (drs_v2)", "drs_v2", "nfe_ratio",
          (0.0, 1.0), 1.0, note="the seed's lesson 2, applied to drs_v2"),
)


@dataclass(frozen=True)
class ClaimDecision:
    """One claim's verdict: a class of ``VERDICTS`` (or too few units / not measurable) and why."""

    verdict: str
    reason: str


def claim_direction(claimed: tuple[float, float], null: float) -> int:
    """+1 when the claimed range lies at or above no effect, -1 at or below; straddling is an error.

    A claimed range that holds no effect strictly inside it ("between -2 and +2 points") is an
    equivalence claim, which this table does not judge, so it is refused rather than guessed at.
    """
    a, b = claimed
    if not a <= b:
        raise ValueError(f"claimed range must have a <= b, got {claimed}")
    if a >= null and b > null:
        return 1
    if b <= null and a < null:
        return -1
    raise ValueError(f"claimed range {claimed} straddles no effect ({null}); the decision table needs a direction")


def decide(
    low: float,
    high: float,
    claimed: tuple[float, float],
    *,
    null: float,
    mde: float = math.nan,
    n: int | None = None,
    min_units: int = MIN_UNITS,
) -> ClaimDecision:
    """Classify the interval [low, high] against the claimed range [a, b] (the decision table).

    ``null`` is the value meaning no effect (0 for a difference, 1 for a ratio). ``mde`` is the
    run's minimum detectable effect as a *distance* from ``null`` on the measure's scale (0.08 for
    8 points; 0.10 for a ratio MDE of 1.10x); NaN/inf when unknown. ``n`` is the number of
    independent units behind the interval; below ``min_units`` there is no verdict.

    Everything is mapped onto the claim's side of no effect, x' = s (x - null) with s = +1 for a
    claim above no effect and -1 below, so the classes read the same for gains and for drops:

    * opposite direction: hi' < 0
    * larger than claimed: lo' > b'
    * supported: lo' > 0 and a' <= lo' and hi' <= b'
    * smaller than claimed but real: lo' > 0 and hi' < a'
    * no detectable effect: lo' <= 0 <= hi' and mde < a'
    * inconclusive: everything else.

    "Excludes no effect" is strict (an interval ending exactly at no effect holds it); range bounds
    are closed for *supported* and strict for *larger*/*smaller*. The classes are disjoint by
    construction (each of the first four excludes no effect, on different sides or against
    different bounds; *no detectable effect* holds it), which the tests check exhaustively.
    """
    if n is not None and n < min_units:
        return ClaimDecision(TOO_FEW, f"n = {n} < {min_units} independent units: no verdict")
    if not (math.isfinite(low) and math.isfinite(high)):
        return ClaimDecision(NOT_MEASURABLE, "no finite interval")
    if low > high:  # a bootstrap of a constant ratio can give [x, x - 1 ulp]: that is the point x
        if low - high > 1e-9 * max(1.0, abs(high)):
            raise ValueError(f"interval must have low <= high, got [{low}, {high}]")
        low, high = high, low
    s = claim_direction(claimed, null)
    lo_, hi_ = sorted((s * (low - null), s * (high - null)))
    a_, b_ = sorted((s * (claimed[0] - null), s * (claimed[1] - null)))
    if hi_ < 0:
        return ClaimDecision(OPPOSITE, "the interval excludes no effect on the other side from the claim")
    if lo_ > b_:
        return ClaimDecision(LARGER, "the whole interval lies beyond the claimed range")
    if lo_ > 0 and a_ <= lo_ and hi_ <= b_:
        return ClaimDecision(SUPPORTED, "the interval excludes no effect and lies inside the claimed range")
    if lo_ > 0 and hi_ < a_:
        return ClaimDecision(SMALLER, "the interval excludes no effect but lies short of the claimed range")
    if lo_ <= 0 <= hi_:
        if math.isfinite(mde) and mde < a_:
            return ClaimDecision(NO_EFFECT, "the interval holds no effect, and the run could have seen the claimed effect")
        if a_ <= 0:
            return ClaimDecision(INCONCLUSIVE, "the interval holds no effect, and the claimed range reaches no effect, so no run can rule it out")
        return ClaimDecision(INCONCLUSIVE, "the interval holds no effect, but the run was too small to see the claimed effect"
                             + (f" (MDE {mde:.3g} >= {a_:.3g})" if math.isfinite(mde) else " (MDE unknown)"))
    if a_ == b_ and lo_ <= a_ <= hi_:
        return ClaimDecision(INCONCLUSIVE, "the interval excludes no effect and contains the claimed point, but is "
                             "wider than a point: it cannot confirm the claimed value")
    return ClaimDecision(INCONCLUSIVE, "the interval excludes no effect but straddles a bound of the claimed range")


def decide_claim(claim: Claim, low: float, high: float, *, mde: float = math.nan, n: int | None = None) -> ClaimDecision:
    """``decide`` for one of the seeds' interval claims (its range and its no-effect value)."""
    if claim.measure not in INTERVAL_MEASURES or claim.null is None:
        raise ValueError(f"claim {claim.text!r} ({claim.measure}) is not judged by the interval decision table")
    return decide(low, high, claim.claimed, null=claim.null, mde=mde, n=n)


def judge(claim: Claim, low: float, high: float, *, mde: float = math.nan, n: int | None = None) -> str:
    """The verdict word of ``decide_claim`` (kept for callers of the old three-word judge)."""
    return decide_claim(claim, low, high, mde=mde, n=n).verdict
