"""`dllm-eval plan`: the sample-size function against hand computation, brute force and simulation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as st

from dllm_eval import cli
from dllm_eval.analysis import planning as P
from dllm_eval.analysis import stats
from dllm_eval.analysis.synthetic import write_fake_matrix_run

BASE = {"scheduler": "fast_dllm", "cache": "dual", "threshold": 0.9, "block_length": 32}
T03 = {"scheduler": "fast_dllm", "cache": "dual", "threshold": 0.3, "block_length": 32}


def _brute_power(n: int, p10: float, p01: float, alpha: float) -> float:
    """Exact McNemar power by enumerating every (b, c) table: an oracle independent of stats.py."""
    total = 0.0
    p_rest = 1 - p10 - p01
    for b in range(n + 1):
        for c in range(n + 1 - b):
            m = b + c
            if m == 0:
                continue
            p = min(1.0, 2 * st.binom.cdf(min(b, c), m, 0.5))
            if p < alpha:
                total += math.exp(
                    math.lgamma(n + 1) - math.lgamma(b + 1) - math.lgamma(c + 1) - math.lgamma(n - m + 1)
                    + (b * math.log(p10) if b else 0.0) + (c * math.log(p01) if c else 0.0)
                    + ((n - m) * math.log(p_rest) if n - m else 0.0)
                )
    return total


def test_connor_by_hand() -> None:
    """pi = 0.2, delta = 0.05, alpha 0.05, power 0.8: [1.95996 sqrt(.2) + 0.84162 sqrt(.1975)]^2 / .0025 = 625.55."""
    hand = (1.959964 * math.sqrt(0.2) + 0.841621 * math.sqrt(0.2 - 0.0025)) ** 2 / 0.0025
    assert hand == pytest.approx(625.55, abs=0.01)
    assert P.connor_n(0.05, 0.2) == 626


def test_exact_n_is_the_smallest_n_reaching_the_power_brute_force() -> None:
    """A small case checked by enumeration: pi = 0.3, delta = 0.2, alpha 0.05, power 0.8."""
    r = P.n_for_mde(0.2, 0.3, alpha=0.05, power=0.8)
    p10, p01 = 0.25, 0.05
    assert _brute_power(r.n, p10, p01, 0.05) >= 0.8
    assert r.power_at_n == pytest.approx(_brute_power(r.n, p10, p01, 0.05), abs=1e-9)
    assert all(_brute_power(n, p10, p01, 0.05) < 0.8 for n in range(max(1, r.n - 15), r.n))
    assert abs(r.n - r.n_connor) <= 0.15 * r.n  # the normal approximation is close


def test_plan_inverts_the_reports_mde() -> None:
    """At the planned n, the report's MDE function gives back (at most) the target MDE."""
    for mde, pd, alpha in [(0.05, 0.2, 0.05), (0.10, 0.25, 0.05 / 24), (0.08, 0.15, 0.01)]:
        r = P.n_for_mde(mde, pd, alpha=alpha)
        assert stats.mde_mcnemar(r.n, pd, alpha=alpha) <= mde + 1e-4
        assert stats.mde_mcnemar(max(r.n - 40, 1), pd, alpha=alpha) > mde


def test_power_at_the_planned_n_by_simulation() -> None:
    """4000 simulated paired studies at the planned n: the exact McNemar test rejects ~80% of the time."""
    mde, pd, alpha = 0.08, 0.2, 0.05 / 10
    r = P.n_for_mde(mde, pd, alpha=alpha)
    rng = np.random.default_rng(20261123)
    sims = 4000
    counts = rng.multinomial(r.n, [(pd + mde) / 2, (pd - mde) / 2, 1 - pd], size=sims)
    cache: dict[tuple[int, int], float] = {}
    rej = np.array([cache.setdefault((int(b), int(c)), stats.mcnemar_from_counts(int(b), int(c)).pvalue) < alpha
                    for b, c, _ in counts])
    se = math.sqrt(0.8 * 0.2 / sims)
    print(f"n = {r.n}: simulated power {rej.mean():.4f} (MC SE {se:.4f}), exact {r.power_at_n:.4f}")
    assert abs(rej.mean() - r.power_at_n) <= 3 * se, f"simulated {rej.mean():.4f} vs exact {r.power_at_n:.4f} (MC SE {se:.4f})"
    assert 0.8 <= r.power_at_n < 0.82


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="fraction"):
        P.n_for_mde(5, 0.2)
    with pytest.raises(ValueError, match="discordance"):
        P.n_for_mde(0.05, 1.5)


# --------------------------------------------------------------------------------------------
# from a run, and the CLI
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plan") / "run"
    return write_fake_matrix_run(root, {"base": BASE, "drs": {"scheduler": "drs"}, "t03": T03, "aa": dict(BASE)},
                                 baseline="base", roles={"aa": "control_aa"}, limit=48)


def test_plan_from_a_run(run_dir: Path) -> None:
    plan = P.plan_run(str(run_dir), 0.10)
    assert plan["baseline"] == "base"
    assert plan["m"] == 2 * 2 * 4  # like the report: 2 tasks x 2 non-control labels x (acc, NFE, tokens/s, latency)
    assert plan["alpha_adj"] == pytest.approx(0.05 / 16)
    rows = {(r["label"], r["task"]): r for r in plan["rows"]}
    assert set(rows) == {(lab, t) for lab in ("drs", "t03") for t in ("synth_math", "synth_code", "all tasks (pooled)")}
    r = rows[("t03", "synth_math")]
    assert r["n"] == 48 and 0 < r["discordance"] == r["discordant"] / 48
    assert r["n_needed"] == P.n_for_mde(0.10, r["discordance"], alpha=0.05 / 16).n
    pooled = rows[("t03", "all tasks (pooled)")]
    assert pooled["n"] == 96 and pooled["discordant"] == r["discordant"] + rows[("t03", "synth_code")]["discordant"]
    assert pooled["more"] == max(0, pooled["n_needed"] - 96)
    assert P.plan_run(str(run_dir), 0.10, comparisons=1)["alpha_adj"] == 0.05


def test_cli_plan(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["plan", "--discordance", "0.2", "--mde", "5"]) == 0
    out = capsys.readouterr().out
    assert "documents needed: 658 (exact McNemar power" in out and "Connor's normal approximation: 626" in out
    assert cli.main(["plan", "--discordance", "0.2", "--mde", "5", "--comparisons", "10"]) == 0
    assert "alpha 0.05/10 = 0.005" in capsys.readouterr().out
    assert cli.main(["plan", str(run_dir), "--mde", "10"]) == 0
    out = capsys.readouterr().out
    assert "| `drs` | all tasks (pooled) | 96 |" in out and "alpha 0.05/16" in out
    for bad, msg in ((["plan", "--mde", "5"], "either RUN_DIR"), (["plan", "--discordance", "0.2", "--mde", "0.0"], "percentage points"),
                     (["plan", str(run_dir), "--discordance", "0.2", "--mde", "5"], "not both")):
        assert cli.main(bad) == 2
        assert msg in capsys.readouterr().err


def test_fast_critical_values_equal_the_binomial_quantile_definition() -> None:
    """stats._critical_values (used by every exact power) is the largest k with 2 P(Bin(m, 1/2) <= k) < alpha."""
    for alpha in (0.05, 0.01, 0.05 / 80, 0.2, 1e-6):
        for n in (0, 1, 5, 50, 2000):
            m = np.arange(n + 1)
            k = st.binom.ppf(alpha / 2, m, 0.5)
            want = np.where(st.binom.cdf(k, m, 0.5) < alpha / 2, k, k - 1)
            assert np.array_equal(stats._critical_values(n, alpha), want), (n, alpha)
