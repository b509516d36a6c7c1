"""The claims decision table: every class, every boundary, both directions, deltas and ratios."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dllm_eval.analysis import claims as C
from dllm_eval.analysis.claims import CLAIMS, MIN_UNITS, VERDICTS, decide, decide_claim

UP = (0.05, 0.12)  # a gain of 5-12 points (null 0)


def v(lo: float, hi: float, claimed=UP, null: float = 0.0, mde: float = math.nan, n: int | None = 100) -> str:
    return decide(lo, hi, claimed, null=null, mde=mde, n=n).verdict


# --------------------------------------------------------------------------------------------
# hand-made intervals, one per class, and each boundary on both sides
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lo", "hi", "mde", "expected"),
    [
        # opposite direction: hi < 0 (strict)
        (-0.10, -0.01, 0.02, C.OPPOSITE),
        (-0.10, 0.0, 0.02, C.NO_EFFECT),  # ends exactly at no effect: holds it
        (-0.10, 0.0, 0.08, C.INCONCLUSIVE),  # ... and too small a run to see 5 points
        # larger than claimed: lo > b (strict)
        (0.13, 0.20, math.nan, C.LARGER),
        (0.12, 0.20, math.nan, C.INCONCLUSIVE),  # lo == b: straddles the upper bound
        # supported: lo > 0, a <= lo, hi <= b (closed at a and b)
        (0.06, 0.11, math.nan, C.SUPPORTED),
        (0.05, 0.12, math.nan, C.SUPPORTED),  # exactly the range
        (0.0499, 0.11, math.nan, C.INCONCLUSIVE),  # starts just short of a
        (0.06, 0.1201, math.nan, C.INCONCLUSIVE),  # ends just past b
        (0.01, 0.30, math.nan, C.INCONCLUSIVE),  # wider than the range, covers it: not inside it
        # smaller than claimed but real: lo > 0 and hi < a
        (0.01, 0.04, math.nan, C.SMALLER),
        (0.01, 0.05, math.nan, C.INCONCLUSIVE),  # hi == a: touches the range
        (0.0, 0.04, 0.02, C.NO_EFFECT),  # lo == 0 holds no effect
        # no detectable effect: holds 0 and MDE < a
        (-0.02, 0.03, 0.049, C.NO_EFFECT),
        (-0.02, 0.03, 0.05, C.INCONCLUSIVE),  # MDE == a is not below a
        (-0.02, 0.03, math.inf, C.INCONCLUSIVE),
        (-0.02, 0.03, math.nan, C.INCONCLUSIVE),  # MDE unknown: never claims "no effect"
        (-0.02, 0.08, 0.03, C.NO_EFFECT),  # holds 0 even though it also reaches the range
    ],
)
def test_each_class_and_boundary_for_a_gain(lo: float, hi: float, mde: float, expected: str) -> None:
    assert v(lo, hi, mde=mde) == expected


def test_mirrored_claims_read_the_same() -> None:
    """A drop of 5-12 points judged on mirrored intervals gets the same verdict as the gain."""
    rng = np.random.default_rng(3)
    for _ in range(2000):
        lo, hi = np.sort(rng.choice(np.round(np.linspace(-0.2, 0.3, 51), 3), 2))
        mde = float(rng.choice([0.01, 0.05, 0.2, math.nan]))
        assert v(lo, hi, mde=mde) == v(-hi, -lo, claimed=(-0.12, -0.05), mde=mde)


@pytest.mark.parametrize(
    ("lo", "hi", "mde", "expected"),
    [
        (1.01, 1.10, 0.5, C.OPPOSITE),  # a cost-saving claim (< 1x) measured as a cost increase
        (0.95, 1.0, 0.02, C.INCONCLUSIVE),  # holds 1; the claimed range reaches 1, so never "no effect"
        (0.80, 0.97, math.nan, C.SUPPORTED),
        (0.0, 0.5, math.nan, C.SUPPORTED),  # the range's lower bound (0) is closed
    ],
)
def test_open_range_below_one_for_a_ratio(lo: float, hi: float, mde: float, expected: str) -> None:
    assert v(lo, hi, claimed=(0.0, 1.0), null=1.0, mde=mde) == expected
    assert v(lo, hi, claimed=(-math.inf, 1.0), null=1.0, mde=mde) == expected


@pytest.mark.parametrize(
    ("lo", "hi", "expected"),
    [
        (1.20, 1.25, C.SUPPORTED),
        (1.0001, 9.0, C.SUPPORTED),  # any interval above 1 lies inside (1, inf)
        (1.0, 1.3, C.INCONCLUSIVE),  # holds 1; an open claim can never be ruled out
        (0.5, 0.99, C.OPPOSITE),
    ],
)
def test_open_range_above_one(lo: float, hi: float, expected: str) -> None:
    assert v(lo, hi, claimed=(1.0, math.inf), null=1.0, mde=0.01) == expected


@pytest.mark.parametrize(
    ("lo", "hi", "mde", "expected"),
    [
        (1.20, 1.40, math.nan, C.LARGER),  # the case: 1.30x [1.20, 1.38] vs "+18%" is larger, not contradicted
        (1.10, 1.30, math.nan, C.INCONCLUSIVE),  # contains the point: cannot confirm 1.18 exactly
        (1.18, 1.18, math.nan, C.SUPPORTED),  # only a zero-width interval lies inside a point
        (1.02, 1.10, math.nan, C.SMALLER),
        (0.90, 0.99, math.nan, C.OPPOSITE),
        (0.95, 1.05, 0.10, C.NO_EFFECT),  # MDE 1.10x < 1.18x
        (0.95, 1.05, 0.20, C.INCONCLUSIVE),
    ],
)
def test_point_claim_on_a_ratio(lo: float, hi: float, mde: float, expected: str) -> None:
    assert v(lo, hi, claimed=(1.18, 1.18), null=1.0, mde=mde) == expected


def test_range_touching_no_effect() -> None:
    """'Slightly lowers quality' = a drop of 0-5 points: supported only when the interval is a real drop."""
    c = (-0.05, 0.0)
    assert v(-0.04, -0.01, claimed=c) == C.SUPPORTED
    assert v(-0.04, 0.0, claimed=c, mde=0.01) == C.INCONCLUSIVE  # holds 0; the range reaches 0
    assert v(-0.09, -0.06, claimed=c) == C.LARGER
    assert v(-0.09, -0.02, claimed=c) == C.INCONCLUSIVE
    assert v(0.01, 0.04, claimed=c) == C.OPPOSITE


def test_too_few_units_and_unmeasurable() -> None:
    assert v(0.06, 0.11, n=MIN_UNITS - 1) == C.TOO_FEW
    assert v(0.06, 0.11, n=MIN_UNITS) == C.SUPPORTED
    assert v(1.21, 2.13, claimed=(1.15, 1.25), null=1.0, n=2) == C.TOO_FEW  # the n = 2 batches
    assert v(math.nan, 0.1) == C.NOT_MEASURABLE
    assert v(-math.inf, 0.1) == C.NOT_MEASURABLE
    assert "n = 2 < 20" in decide(1.2, 2.1, (1.15, 1.25), null=1.0, n=2).reason


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="low <= high"):
        v(0.2, 0.1)
    with pytest.raises(ValueError, match="straddles no effect"):
        v(0.0, 0.1, claimed=(-0.02, 0.02))
    with pytest.raises(ValueError, match="a <= b"):
        v(0.0, 0.1, claimed=(0.1, 0.05))
    with pytest.raises(ValueError, match="not judged by the interval decision table"):
        decide_claim(next(c for c in CLAIMS if c.measure == "identical"), 0.9, 1.0)


# --------------------------------------------------------------------------------------------
# exhaustive: every interval on a grid gets exactly one class, equal to an independent oracle
# --------------------------------------------------------------------------------------------


def _oracle(lo: float, hi: float, a: float, b: float, null: float, mde: float) -> set[str]:
    """Every class whose definition (the issue's words, for a claim above null) the interval meets."""
    excludes_null = lo > null or hi < null
    wrong_side = hi < null
    out = set()
    if wrong_side:
        out.add(C.OPPOSITE)
    if lo > b:
        out.add(C.LARGER)
    if excludes_null and not wrong_side and a <= lo and hi <= b:
        out.add(C.SUPPORTED)
    if excludes_null and not wrong_side and hi < a:
        out.add(C.SMALLER)
    if not excludes_null and mde < a - null:
        out.add(C.NO_EFFECT)
    return out or {C.INCONCLUSIVE}


# dyadic values, so that 1 + x is exact and the ratio version meets the same boundaries
E = 1 / 64


@pytest.mark.parametrize("claimed", [(4 * E, 8 * E), (2 * E, 2 * E), (0.0, 4 * E), (4 * E, math.inf)])
def test_grid_matches_the_oracle_and_classes_never_overlap(claimed: tuple[float, float]) -> None:
    grid = [-8 * E, -E, 0.0, E, 2 * E, 3 * E, 4 * E, 6 * E, 8 * E, 9 * E, 32 * E]  # every bound and both sides of it
    seen = set()
    for lo in grid:
        for hi in grid:
            if hi < lo:
                continue
            for mde in (E, 2 * E, 4 * E, 16 * E, math.nan):
                want = _oracle(lo, hi, *claimed, 0.0, mde if math.isfinite(mde) else math.inf)
                assert len(want) == 1, (lo, hi, claimed, mde, want)  # the definitions do not overlap
                got = v(lo, hi, claimed=claimed, mde=mde)
                assert got == next(iter(want)), (lo, hi, claimed, mde)
                # the same claim as a ratio (null 1) reads the same
                c1 = (1 + claimed[0], 1 + claimed[1])
                assert v(1 + lo, 1 + hi, claimed=c1, null=1.0, mde=mde) == got
                seen.add(got)
    assert seen <= set(VERDICTS)


def test_every_class_is_reachable_for_a_range_claim() -> None:
    seen = {v(lo, hi, mde=m) for lo, hi, m in [(-0.1, -0.01, 0), (0.13, 0.2, 0), (0.06, 0.1, 0), (0.01, 0.04, 0),
                                              (-0.01, 0.01, 0.01), (-0.01, 0.01, 0.1)]}
    assert seen == set(VERDICTS)


def test_seed_claims_are_well_formed() -> None:
    """Every interval claim has a direction (no straddling range) and a unit; points and open ranges parse."""
    for c in CLAIMS:
        if c.measure in C.INTERVAL_MEASURES:
            assert c.null is not None
            assert C.claim_direction(c.claimed, c.null) in (-1, 1), c.text
        assert c.unit == ("batches" if c.measure == "tps_ratio" else "documents")
    assert sum(c.measure in C.INTERVAL_MEASURES for c in CLAIMS) == 16


def test_ratio_mde_by_hand() -> None:
    """sd of log-ratios 0.2 over 100 units at alpha 0.05, power 0.8: (1.95996 + 0.84162) * 0.02 on the log scale."""
    from dllm_eval.analysis.stats import mde_ratio

    m = (1.959964 + 0.841621) * 0.2 / 10
    assert mde_ratio(0.2, 100) == pytest.approx(math.expm1(m), abs=1e-6)  # a gain: 1.0576x
    assert mde_ratio(0.2, 100, direction=-1) == pytest.approx(-math.expm1(-m), abs=1e-6)  # a saving: 0.9455x
    assert mde_ratio(math.nan, 100) == math.inf and mde_ratio(0.2, 1) == math.inf


def test_throughput_claims_name_their_tokens_per_second_unit() -> None:
    """Only the long-sequence claim is read in canvas tokens/s; every other throughput claim in
    kept tokens/s; a unit the timing pass does not record is refused."""
    units = {c.text: c.throughput_unit for c in CLAIMS if c.measure == "tps_ratio"}
    assert units.pop("Long-sequence scaling +20-35%") == "canvas tokens/s"
    assert units and set(units.values()) == {"kept tokens/s"}
    assert all(c.throughput_unit is None for c in CLAIMS if c.measure != "tps_ratio")
    with pytest.raises(ValueError, match="throughput unit"):
        C.Claim("x", "bad", "adaptive", "tps_ratio", (1.1, 1.2), 1.0, throughput="bytes")
