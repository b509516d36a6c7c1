"""The two seed proposals' quantitative claims, as data the report can check against a run.

Sources: ../shared/seeds/000 (Dynamic Refinement Scheduling, DRS) and 001 (Self-Correcting
Adaptive Inference Scheduling). Each claim names the scheduler it is about, what it is compared
with (the baseline, static Fast-dLLM with dual cache, B=32, tau=0.9, unless stated), the measure,
and the claimed range on that measure's scale.

Reading the seeds' wording (choices the seeds leave open, stated so they can be disputed):

* "+5-12% accuracy" is read as percentage points (the usual meaning for accuracy deltas);
* "+15-25% throughput" is a tokens/s ratio of 1.15-1.25; "+31%" one of 1.31;
* "easy content" is tier 1 of the synthetic tasks, "complex reasoning" tiers 3-4;
* "cache efficiency" is the traces' ``cache_hit_rate`` relative to the baseline's;
* a point claim ("1.3x", "+3.2%") is met when the 95% CI contains the point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["CLAIMS", "Claim", "judge"]


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


_INF = math.inf
S000 = "000 DRS"
S001 = "001 Adaptive"

CLAIMS: tuple[Claim, ...] = (
    # ---- seed 001: Self-Correcting Adaptive Inference Scheduling -----------------------------
    Claim(S001, "Throughput on easy content +15-25%", "adaptive", "tps_ratio", (1.15, 1.25), 1.0, tiers=(1,)),
    Claim(S001, "Accuracy on complex reasoning +5-12%", "adaptive", "acc_delta", (0.05, 0.12), 0.0, tiers=(3, 4)),
    Claim(S001, "Cache efficiency +30-40%", "adaptive", "cache_ratio", (1.30, 1.40), 1.0),
    Claim(S001, "Long-sequence scaling +20-35%", "adaptive", "untestable", (1.20, 1.35), 1.0,
          note="needs runs at several generation lengths; this matrix uses one"),
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
    Claim(S000, "DRS slightly lowers quality", "drs", "acc_delta", (-0.05, 0.0), None,
          note="'slight' read as a drop of at most 5 points"),
    Claim(S000, "On easy items DRS's first pass alone costs more than the baseline", "drs", "nfe_ratio",
          (1.0 + 1e-9, _INF), 1.0, tiers=(1,)),
    Claim(S000, "Proportional and uniform allocation give identical outputs", "drs", "identical", (1.0, 1.0),
          None, versus="drs_uniform"),
    Claim(S000, "A viable successor must use fewer NFE than the baseline (drs_v2)", "drs_v2", "nfe_ratio",
          (0.0, 1.0 - 1e-9), 1.0, note="the seed's lesson 2, applied to drs_v2"),
)


def judge(claim: Claim, low: float, high: float) -> str:
    """Verdict of one claim from the measured 95% CI [low, high].

    contradicted: the CI misses the claimed range entirely; consistent: the CI overlaps it and
    (when the claim is an effect) excludes no-effect; inconclusive: the CI holds both the claim
    and no effect, so the run cannot tell them apart.
    """
    if not (math.isfinite(low) and math.isfinite(high)):
        return "not measurable"
    c_lo, c_hi = claim.claimed
    if high < c_lo or low > c_hi:
        return "contradicted"
    if claim.null is not None and low <= claim.null <= high:
        return "inconclusive"
    return "consistent"
