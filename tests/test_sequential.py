"""Group-sequential stopping: boundaries against published values and simulation, the decision rule by
hand, and its operating characteristics by simulation (fixed seeds, the production functions)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dllm_eval.analysis import report
from dllm_eval.analysis import sequential as S
from dllm_eval.analysis.loading import load_run
from dllm_eval.analysis.synthetic import write_fake_matrix_run

EQ5 = (0.2, 0.4, 0.6, 0.8, 1.0)
ALPHA = 0.05
SIMS = 2000

# --------------------------------------------------------------------------------------------
# boundaries
# --------------------------------------------------------------------------------------------


def test_obf_and_pocock_boundaries_match_gsdesign() -> None:
    """gsDesign(k=5, test.type=2, alpha=0.025, sfu=sfLDOF / sfLDPocock) upper bounds, 4 decimals."""
    assert S.boundaries(EQ5, ALPHA, "obf") == pytest.approx((4.8769, 3.3569, 2.6803, 2.2898, 2.0310), abs=2e-4)
    assert S.boundaries(EQ5, ALPHA, "pocock") == pytest.approx((2.4380, 2.4268, 2.4102, 2.3966, 2.3859), abs=2e-4)
    assert S.boundaries((1.0,), ALPHA) == pytest.approx((1.959964,), abs=1e-6)  # one look: the fixed-n test


def test_boundaries_spend_what_they_promise() -> None:
    """Brownian motion, 400k paths: the first-crossing probability of each look equals its alpha increment."""
    t = np.array([0.15, 0.35, 0.6, 0.8, 1.0])  # unequal looks
    c = np.array(S.boundaries(tuple(t), ALPHA))
    rng = np.random.default_rng(11)
    N = 400_000
    z = np.cumsum(rng.normal(size=(N, t.size)) * np.sqrt(np.diff(np.r_[0, t])), axis=1) / np.sqrt(t)
    cross = np.abs(z) >= c
    first = np.where(cross.any(1), cross.argmax(1), -1)
    want = np.diff(np.r_[0, S.spending(t, ALPHA)])
    for k in range(t.size):
        got = float(np.mean(first == k))
        se = math.sqrt(max(want[k], 1e-7) / N)
        assert abs(got - want[k]) < 4 * se + 1e-6, (k, got, want[k], se)
    assert float(np.mean(first >= 0)) == pytest.approx(ALPHA, abs=4 * math.sqrt(ALPHA / N))


def test_bad_plans_are_refused() -> None:
    with pytest.raises(ValueError, match="increase strictly"):
        S.boundaries((0.5, 0.4, 1.0), ALPHA)
    with pytest.raises(ValueError, match="repeated look sizes"):
        S.SequentialPlan(n_max=3, looks=5)
    with pytest.raises(ValueError, match="fraction of accuracy"):
        S.SequentialPlan(n_max=100, mde=5)
    assert S.SequentialPlan(n_max=101, looks=5).look_sizes == (21, 41, 61, 81, 101)


# --------------------------------------------------------------------------------------------
# the rule, by hand
# --------------------------------------------------------------------------------------------


def _pairs(n: int, b: int, c: int, start: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n paired outcomes with b (A only) and c (B only) discordant pairs, spread evenly."""
    a = np.ones(n)
    base = np.ones(n)
    idx = np.arange(start, n, max(1, n // max(b + c, 1)))[: b + c]
    a[idx[b:]] = 0
    base[idx[:b]] = 0
    return a, base


def test_clear_effect_stops_at_the_first_look_and_hand_computed_rci() -> None:
    plan = S.SequentialPlan(n_max=100, looks=5, alpha=ALPHA, mde=0.05, family_size=1)
    a = np.r_[np.ones(20), np.ones(80)]
    base = np.r_[np.zeros(20), np.ones(80)]  # the first 20 documents: A right, baseline wrong
    (d,) = S.decide(plan, {"x": (a, base)}, look=1)
    assert d.status == "better" and d.look == 1 and d.n == 20 and (d.b, d.c) == (20, 0)
    # hand computation: Agresti-Min d = 20/22, se = sqrt((21/22 - d^2)/22), boundary 4.8769
    dd = 20 / 22
    se = math.sqrt((21 / 22 - dd**2) / 22)
    assert d.rci_low == pytest.approx(dd - 4.876885 * se, abs=1e-5)
    assert d.rci_high == pytest.approx(dd + 4.876885 * se, abs=1e-5)
    assert d.estimate == 1.0 and d.level == ALPHA


def test_no_discordance_is_equivalent_only_once_the_rci_is_narrow() -> None:
    plan = S.SequentialPlan(n_max=500, looks=5, alpha=ALPHA, mde=0.05, family_size=1)
    same = np.ones(500)
    ds = [S.decide(plan, {"x": (same, same)}, look=k)[0] for k in range(1, 6)]
    # look 1 (100 docs, b = c = 0): RCI half-width 4.88*sqrt(1/102)/sqrt(102) ~ 0.047 < 0.05 -> equivalent
    assert ds[0].status == "equivalent" and ds[0].rci_high < 0.05
    assert all(d.look == 1 and d.status == "equivalent" for d in ds)  # frozen afterwards
    small = S.SequentialPlan(n_max=100, looks=5, alpha=ALPHA, mde=0.05, family_size=1)
    (d,) = S.decide(small, {"x": (same[:100], same[:100])}, look=1)  # 20 docs: not yet narrow enough
    assert d.status == "continue"


def test_too_few_units_and_the_last_look() -> None:
    plan = S.SequentialPlan(n_max=50, looks=5, alpha=ALPHA, mde=0.02, family_size=1)
    a, b = _pairs(50, 3, 3)
    (d1,) = S.decide(plan, {"x": (a, b)}, look=1)
    assert d1.status == "too few units" and d1.n == 10
    (d5,) = S.decide(plan, {"x": (a, b)}, look=5)
    assert d5.status == "undecided" and "last look" in d5.reason


def test_a_configuration_stops_only_when_all_its_comparisons_are_decided() -> None:
    plan = S.SequentialPlan(n_max=100, looks=5, alpha=ALPHA, mde=0.05, family_size=3)
    strong = (np.ones(100), np.r_[np.zeros(30), np.ones(70)])  # better at look 1
    weak = _pairs(100, 6, 3)  # open
    outcomes = {("drs", "synth_math"): strong, ("drs", "synth_code"): weak, ("adaptive", "synth_math"): strong}
    decs = S.decide(plan, outcomes, look=2)
    by = {d.comparison: d for d in decs}
    assert by[("drs", "synth_math")].status == "better" and by[("drs", "synth_math")].look == 1
    assert by[("drs", "synth_code")].status == "continue"
    stops = {s.configuration: s for s in S.configuration_stops(plan, decs)}
    assert stops["adaptive"].stopped and stops["adaptive"].look == 1 and stops["adaptive"].n == 20
    assert not stops["drs"].stopped and "synth_code continue" in stops["drs"].reason
    # Holm: two comparisons found better at look 1 -> the open one is tested at alpha/(3-2) = alpha
    assert by[("drs", "synth_code")].level == pytest.approx(ALPHA)
    bonf = S.SequentialPlan(n_max=100, looks=5, alpha=ALPHA, mde=0.05, family_size=3, multiplicity="bonferroni")
    assert [d.level for d in S.decide(bonf, outcomes, look=2)] == pytest.approx([ALPHA / 3] * 3)


def test_holm_recycling_within_a_look_rejects_what_bonferroni_cannot() -> None:
    """One comparison far over the boundary frees alpha for a second one just over the alpha/1 boundary."""
    plan = S.SequentialPlan(n_max=200, looks=(1.0,), alpha=ALPHA, mde=0.01, family_size=2)
    strong = (np.ones(200), np.r_[np.zeros(60), np.ones(140)])
    # choose b, c with the adjusted z between z_{0.975} = 1.96 and z_{0.9875} = 2.24
    mid = next(_pairs(200, b, 10) for b in range(10, 40)
               if 1.96 < (lambda d, se: d / se)(*S._stat(200, b, 10)) < 2.24)
    holm = {d.comparison: d.status for d in S.decide(plan, {"s": strong, "m": mid}, look=1)}
    assert holm == {"s": "better", "m": "better"}
    bonf = S.SequentialPlan(n_max=200, looks=(1.0,), alpha=ALPHA, mde=0.01, family_size=2, multiplicity="bonferroni")
    assert {d.comparison: d.status for d in S.decide(bonf, {"s": strong, "m": mid}, look=1)}["m"] == "undecided"


def test_the_rule_is_a_pure_function_of_the_outcomes_so_far() -> None:
    rng = np.random.default_rng(5)
    plan = S.SequentialPlan(n_max=300, looks=5, alpha=ALPHA, mde=0.05)
    full = {f"c{i}": (rng.integers(0, 2, 300).astype(float), rng.integers(0, 2, 300).astype(float)) for i in range(3)}
    for k in range(1, 6):
        n = plan.look_sizes[k - 1]
        cut = {key: (a[:n], b[:n]) for key, (a, b) in full.items()}
        assert S.decide(plan, full, look=k) == S.decide(plan, cut, look=k)  # later documents are never read
        later = {key: (np.r_[a[:n], 1 - a[n:]], b) for key, (a, b) in full.items()}
        assert S.decide(plan, later, look=k) == S.decide(plan, full, look=k)


# --------------------------------------------------------------------------------------------
# operating characteristics by simulation (the production rule, 2000 studies each)
# --------------------------------------------------------------------------------------------

N_MAX, DISCORDANCE, M = 400, 0.2, 4
MDE = S.fixed_n_mde(N_MAX, DISCORDANCE, alpha=ALPHA, family_size=M)  # 80% power, fixed n, Bonferroni alpha/m
PLAN = S.SequentialPlan(n_max=N_MAX, looks=5, alpha=ALPHA, mde=MDE, family_size=M)
FIXED = S.SequentialPlan(n_max=N_MAX, looks=1, alpha=ALPHA, mde=MDE, family_size=M)


@pytest.mark.parametrize("discordance", [0.05, DISCORDANCE])
def test_family_wise_false_positives_under_aa(discordance: float) -> None:
    r = S.simulate(PLAN, [0.0] * M, discordance, sims=SIMS, rng=20261123)
    print(f"A/A FWER at discordance {discordance}: {r.fwer:.4f} (MC SE {r.fwer_se:.4f})")
    bound = ALPHA + 2 * math.sqrt(ALPHA * (1 - ALPHA) / SIMS)
    assert r.fwer <= bound, f"FWER {r.fwer:.4f} > alpha + 2 MC SE = {bound:.4f} (MC SE {r.fwer_se:.4f}, {SIMS} studies)"


def test_power_within_005_of_the_fixed_n_design() -> None:
    seq = S.simulate(PLAN, [MDE] * M, DISCORDANCE, sims=SIMS, rng=7)
    fix = S.simulate(FIXED, [MDE] * M, DISCORDANCE, sims=SIMS, rng=7)  # same simulated outcomes
    se = float(np.std(seq.per_study_power - fix.per_study_power, ddof=1) / math.sqrt(SIMS))
    print(f"power at the MDE: sequential {seq.power:.3f}, fixed n {fix.power:.3f} (paired MC SE {se:.4f})")
    assert abs(seq.power - fix.power) <= 0.05, f"sequential {seq.power:.3f} vs fixed {fix.power:.3f}, MC SE of the gap {se:.4f}"
    assert fix.power >= 0.8 - 2 * fix.power_se, f"the fixed design should reach 80% at its MDE: {fix.power:.3f}"


def test_fewer_documents_when_the_effect_is_twice_the_mde() -> None:
    r = S.simulate(PLAN, [2 * MDE] * M, DISCORDANCE, sims=SIMS, rng=8)
    print(f"documents used at 2x MDE: {r.docs_fraction:.3f} of n_max (MC SE {r.docs_fraction_se:.4f})")
    assert r.docs_fraction <= 0.70, f"{r.docs_fraction:.3f} of n_max used (MC SE {r.docs_fraction_se:.4f}); need >= 30% saved"
    assert r.power >= 0.99


def test_repeated_ci_covers_at_the_stopping_look() -> None:
    """One comparison at the MDE: the RCI at the look where it stopped holds the true difference."""
    plan = S.SequentialPlan(n_max=N_MAX, looks=5, alpha=ALPHA, mde=MDE, family_size=1)
    rng = np.random.default_rng(9)
    delta = MDE
    p = [(DISCORDANCE + delta) / 2, (DISCORDANCE - delta) / 2, 1 - DISCORDANCE]
    inc = np.diff(np.r_[0, plan.look_sizes])
    cum = np.cumsum(np.stack([rng.multinomial(int(n), p, size=SIMS)[:, :2] for n in inc], axis=1), axis=1)
    cover = np.array([
        (lambda d: d.rci_low <= delta <= d.rci_high)(S.decide_counts(plan, {"x": [tuple(r) for r in cum[s]]}, plan.k)[0])
        for s in range(SIMS)
    ])
    se = math.sqrt(0.95 * 0.05 / SIMS)
    print(f"RCI coverage at the stopping look: {cover.mean():.4f} (MC SE {se:.4f})")
    assert cover.mean() >= 0.95 - 2 * se, f"coverage {cover.mean():.4f} < 0.95 - 2 MC SE ({se:.4f})"


# --------------------------------------------------------------------------------------------
# the report section
# --------------------------------------------------------------------------------------------


def test_record_roundtrip_and_report_section(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = S.SequentialPlan(n_max=100, looks=5, alpha=ALPHA, mde=0.05, family_size=2)
    outcomes = {("drs", "synth_math"): (np.ones(100), np.r_[np.zeros(30), np.ones(70)]),
                ("adaptive", "synth_math"): _pairs(100, 6, 3)}
    decs = S.decide(plan, outcomes, look=5)
    rec = json.loads(json.dumps(S.to_record(plan, decs)))
    assert S.render_sequential_record(rec) == S.render_sequential_section(plan, decs)
    lines = "\n".join(S.render_sequential_section(plan, decs))
    assert "## Sequential stopping" in lines and "| `drs` | yes | 1 (20) | all comparisons decided (synth_math better) |" in lines
    assert "| `adaptive` | yes | 5 (100) | reached the maximum n with synth_math undecided |" in lines
    monkeypatch.setattr(report, "N_RESAMPLES", 199)
    root = write_fake_matrix_run(tmp_path / "run", {"base": {"scheduler": "fast_dllm"}, "drs": {"scheduler": "drs"}},
                                 baseline="base", limit=30, tasks=("synth_math",))
    assert "## Sequential stopping" not in report.render_markdown(report.build_summary(load_run(root)), {})
    (root / "sequential.json").write_text(json.dumps(rec))
    md = report.render_markdown(report.build_summary(load_run(root)), {})
    assert "## Sequential stopping" in md and "at most 100 documents" in md
