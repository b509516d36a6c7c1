"""Tier-homogeneous timing batches, the generation-length sweep and the report's power line.

Oracles: hand-built batches and timings with known ratios (the claim's verdict follows from the
decision table by hand), an exact McNemar power computed here from scipy's binomial, and the
model_args of the commands eval-all recorded.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy import stats as st

from dllm_eval import matrix
from dllm_eval.analysis import claims as C
from dllm_eval.analysis import report
from dllm_eval.analysis.loading import load_run
from dllm_eval.analysis.synthetic import write_fake_matrix_run
from dllm_eval.errors import UserError
from dllm_eval.timing import TimedBatch, tier_batches, write_rows

REPO = Path(__file__).resolve().parents[1]
BASE = {"scheduler": "fast_dllm", "cache": "dual", "threshold": 0.9, "block_length": 32}
LONG = "Long-sequence scaling +20-35%"


@pytest.fixture(autouse=True)
def _fast_bootstrap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "N_RESAMPLES", 499)


# ---------------------------------------------------------------- tier-homogeneous batches
def test_tier_batches_group_documents_of_one_tier_in_document_order() -> None:
    reqs = [(d, f"q{d}", {}, 1 + d % 4) for d in range(12)]  # tiers cycle 1,2,3,4 as in the synth tasks
    batches = tier_batches(reqs, 2)
    assert [[r[0] for r in b] for b in batches] == [[0, 4], [8], [1, 5], [9], [2, 6], [10], [3, 7], [11]]
    assert all(len({r[3] for r in b}) == 1 for b in batches)
    untiered = [(d, "q", {}, None) for d in range(5)]  # no tier: batched in document order, as before
    assert [[r[0] for r in b] for b in tier_batches(untiered, 2)] == [[0, 1], [2, 3], [4]]


def test_shipped_timing_gives_the_easy_tier_twenty_batches() -> None:
    """The default CPU run: the first `limit` documents of each synth task (tiers cycling), batched
    within tiers, give at least 20 tier-1 batches over the two tasks."""
    mf = matrix.load_matrix_config()
    t = mf.settings["timing"]
    limit, batch = t["limit"]["cpu"], t["batch"]
    reqs = [(d, "q", {}, 1 + d % 4) for d in range(limit)]
    tier1 = [b for b in tier_batches(reqs, batch) if b[0][3] == 1]
    assert 2 * len(tier1) >= C.MIN_UNITS
    assert "llada_1tok" not in mf.default_labels()  # opt-in: a third of the CPU run, no seed claim


def test_tier_claim_counts_only_tier_homogeneous_batches(tmp_path: Path) -> None:
    """Timing rows whose batches each hold one tier: the easy-tier claim is judged on the tier-1
    batches alone, with their ratio (1.20x by construction, other tiers 1.0x)."""
    root = tmp_path / "run"
    shutil.copytree(write_fake_matrix_run(tmp_path / "src", {"base": BASE, "adaptive": {"scheduler": "adaptive"}},
                                          baseline="base", limit=160), root)
    run = load_run(root)
    tier_of = {(tk, int(d)): int(tr) for tk, d, tr in zip(run.table["task"], run.table["doc_id"], run.table["tier"])}
    rows, b = [], 0
    for task in ("synth_math", "synth_code"):
        reqs = [(d, "q", {}, tier_of[(task, d)]) for d in range(160)]
        for batch in tier_batches(reqs, 4):
            tier = batch[0][3]
            speed = 1.2 if tier == 1 else 1.0
            for label, s in (("base", 1.0), ("adaptive", speed)):
                rows.append(TimedBatch(task, b, label, 0, 1.0 / s, 100, 8, [r[0] for r in batch], tier))
            b += 1
    write_rows(rows, root / "timing.json", {"baseline": "base", "batch": 4, "device": "cpu"})
    s = report.build_summary(load_run(root))
    easy = next(c for c in s.claims if c.text == "Throughput on easy content +15-25%")
    n_tier1 = sum(1 for r in rows if r.label == "base" and r.tier == 1)
    assert easy.n == n_tier1 >= C.MIN_UNITS
    assert easy.low == pytest.approx(1.2, rel=1e-6) and easy.high == pytest.approx(1.2, rel=1e-6)
    assert easy.verdict == C.SUPPORTED  # 1.2 inside [1.15, 1.25], above 1
    md = report.render_markdown(s, {})
    assert "tier-homogeneous" in md and f"tier 1: {n_tier1}" in md


# ---------------------------------------------------------------- sweep options
def _mf(tmp_path: Path, sweep: str) -> matrix.MatrixFile:
    p = tmp_path / "m.yaml"
    p.write_text(f"""
settings:
  tasks: [synth_math]
  {sweep}
baseline: base
configs:
  base: {{scheduler: fast_dllm, params: {{threshold: 0.9}}, role: baseline}}
  adaptive: {{scheduler: adaptive}}
""")
    return matrix.load_matrix_config(p)


def test_sweep_lengths_from_the_option_or_the_config(tmp_path: Path) -> None:
    mf = _mf(tmp_path, "sweep: {gen_lengths: [256, 64, 128], configs: [adaptive], run_by_default: {cpu: false, cuda: true}}")
    ns = argparse.Namespace
    assert matrix.sweep_lengths(ns(gen_lengths=None), mf, "cpu") == []
    assert matrix.sweep_lengths(ns(gen_lengths=None), mf, "cuda:1") == [64, 128, 256]
    assert matrix.sweep_lengths(ns(gen_lengths="32, 128"), mf, "cpu") == [32, 128]
    assert matrix.sweep_lengths(ns(gen_lengths="none"), mf, "cuda") == []
    for bad in ("64,x", "64", "0,64", "64,64"):
        with pytest.raises(UserError, match="--gen-lengths"):
            matrix.sweep_lengths(ns(gen_lengths=bad), mf, "cpu")
    shipped = matrix.load_matrix_config().settings["sweep"]
    lengths = sorted(shipped["gen_lengths"])
    assert len(lengths) >= 3 and lengths[-1] >= 4 * lengths[0]


def test_eval_all_sweep_reruns_the_sweep_configs_at_each_length_and_judges_the_claim(tmp_path: Path) -> None:
    """With the fake lm_eval: one sub-run per length whose commands carry gen_length=L for the
    baseline and `adaptive` only; the report's sweep table has every length, and the claim row is
    computed from the longest length (no interleaved pass with a fake lm_eval, so cell timings)."""
    from dllm_eval import cli

    rc = cli.main(["eval-all", "--lm-eval-cmd", "python -m dllm_eval.analysis.synthetic", "--results-dir",
                   str(tmp_path), "--run", "r", "--schedulers", "adaptive", "--limit", "40",
                   "--gen-lengths", "64,256,128"])
    assert rc == 0
    root = tmp_path / "r"
    assert sorted(p.name for p in (root / "sweep").iterdir()) == ["gen128", "gen256", "gen64"]
    for length in (64, 128, 256):
        m = json.loads((root / "sweep" / f"gen{length}" / "matrix.json").read_text())
        assert [c["label"] for c in m["cells"]] == ["fast_dllm_dual_t0.9", "adaptive"]
        for c in m["cells"]:
            assert f"gen_length={length}," in c["command"]
        assert m["settings"]["limit"] == 40  # an explicit --limit applies to the sweep too
    main_cmds = [c["command"] for c in json.loads((root / "matrix.json").read_text())["cells"]]
    assert not any("gen_length=" in c for c in main_cmds)  # the main matrix keeps each task's own length
    summary = json.loads((root / "summary.json").read_text())
    assert sorted({r["gen_length"] for r in summary["sweep"]}) == [64, 128, 256]
    claim = next(c for c in summary["claims"] if c["text"] == LONG)
    assert claim["verdict"] not in ("not measured", "not run") and "gen_length 256" in claim["unit"]
    assert "canvas tokens/s" in claim["unit"]
    md = (root / "report.md").read_text()
    assert "## Generation-length sweep" in md


def _with_sweep(tmp_path: Path, ratio: float, batches: int, *, canvas: bool = True) -> report.Summary:
    """A main run plus a two-length sweep whose longest length has a hand-made timing.json in which
    `adaptive` takes exactly 1/`ratio` of the baseline's wall time on every batch of 4 rows, so its
    canvas tokens/s (256 x 4 positions per batch on both sides) is `ratio` times the baseline's.
    Its kept answers are half as long (and empty on every third batch), so a kept-tokens/s ratio
    would be about ratio/2 and would give another verdict. `canvas=False`: a timing.json from before
    canvas tokens were recorded."""
    root = write_fake_matrix_run(tmp_path / "run", {"base": BASE, "adaptive": {"scheduler": "adaptive"}},
                                 baseline="base", limit=40)
    for length in (64, 256):
        sub = write_fake_matrix_run(root / "sweep" / f"gen{length}",
                                    {"base": {**BASE, "gen_length": length},
                                     "adaptive": {"scheduler": "adaptive", "gen_length": length}},
                                    baseline="base", limit=40)
        if length == 256:
            rows = []
            for b in range(batches):
                docs = [4 * b + i for i in range(4)]
                for lab, speed, kept in (("base", 1.0, 100), ("adaptive", ratio, 0 if b % 3 == 0 else 50)):
                    rows.append(TimedBatch("synth_math", b, lab, 0, 1.0 / speed, kept, 8, docs, None,
                                           canvas_tokens=256 * 4 if canvas else None,
                                           empty=(4 if kept == 0 else 0) if canvas else None))
            write_rows(rows, sub / "timing.json", {"baseline": "base", "batch": 4, "device": "cpu", "gen_length": 256})
    return report.build_summary(load_run(root))


@pytest.mark.parametrize(
    ("ratio", "batches", "verdict"),
    [(1.30, 24, C.SUPPORTED), (1.50, 24, C.LARGER), (1.05, 24, C.SMALLER), (0.80, 24, C.OPPOSITE),
     (1.30, 19, C.TOO_FEW)],
)
def test_long_sequence_claim_is_judged_on_the_longest_lengths_canvas_tokens(tmp_path: Path, ratio: float, batches: int,
                                                                           verdict: str) -> None:
    """The verdict follows the wall-time ratio (canvas tokens/s), not the kept tokens: at 1.30x the
    claim [1.20, 1.35] is supported although the kept-token ratio (about 0.65x) would be opposite."""
    s = _with_sweep(tmp_path, ratio, batches)
    row = next(c for c in s.claims if c.text == LONG)
    assert row.verdict == verdict and row.n == batches
    assert row.unit.startswith("batches (interleaved timing pass; canvas tokens/s), gen_length 256")
    if batches >= C.MIN_UNITS:
        assert row.low == pytest.approx(ratio, rel=1e-6) and row.high == pytest.approx(ratio, rel=1e-6)
    by_len = {r.gen_length: r for r in s.sweep}
    assert set(by_len) == {64, 256} and by_len[256].tps["ratio"] == pytest.approx(ratio, rel=1e-6)
    assert by_len[256].tps_unit == "batches (interleaved timing pass; canvas tokens/s)"
    assert by_len[64].tps_unit == "batches of the lm_eval cells (unpaired in time; canvas tokens/s)"  # no timing.json at 64
    md = report.render_markdown(s, {})
    assert "batches (interleaved timing pass; canvas tokens/s), gen_length 256 (sweep 64, 256) (n=" in md


def test_the_other_throughput_claims_keep_the_kept_token_unit(tmp_path: Path) -> None:
    s = _with_sweep(tmp_path, 1.30, 24)
    rows = [c for c in s.claims if c.measure.startswith("tps_ratio") and c.text != LONG and c.verdict != "not run"]
    assert rows and all(c.unit.endswith("kept tokens/s)") for c in rows)
    assert [c.throughput for c in C.CLAIMS if c.measure == "tps_ratio" and c.sweep] == ["canvas"]
    assert {c.throughput for c in C.CLAIMS if c.measure == "tps_ratio" and not c.sweep} == {"kept"}


def test_a_timing_file_without_canvas_tokens_falls_back_to_the_cells_canvas(tmp_path: Path) -> None:
    """An old timing.json (no canvas counts) gives no canvas ratio; the sweep then reads the canvas
    (gen_length per document) and the wall times of the cells, and says so in the unit."""
    s = _with_sweep(tmp_path, 1.30, 24, canvas=False)
    row = next(c for c in s.claims if c.text == LONG)
    assert row.unit.startswith("batches of the lm_eval cells (unpaired in time; canvas tokens/s), gen_length 256")


def _rewrite_kept_tokens(cell: Path, empty: Any) -> None:
    """Set gen_tokens to 0 in a cell's traces for every document where empty(doc_id) holds."""
    for path in (cell / "traces").glob("traces_*.jsonl"):
        rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
        for r in rows:
            r["gen_tokens"] = 0 if empty(r["doc_id"]) else max(1, int(r["gen_tokens"]))
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")


def test_sweep_section_gives_the_share_of_empty_answers_and_flags_mostly_empty_lengths(tmp_path: Path) -> None:
    """At 256 tokens 3 of every 4 adaptive answers and every second baseline answer are made empty
    (75% and 50%); at 64 none is. The table gives those shares, and only length 256 gets the
    warning, since only there does a share exceed one half."""
    _with_sweep(tmp_path, 1.30, 24)
    root = tmp_path / "run"
    for length in (64, 256):
        sub = root / "sweep" / f"gen{length}" / "raw"
        _rewrite_kept_tokens(sub / "base" / "seed1234", lambda d, n=length: n == 256 and d % 2 == 0)
        _rewrite_kept_tokens(sub / "adaptive" / "seed1234", lambda d, n=length: n == 256 and d % 4 != 0)
    s = report.build_summary(load_run(root))
    by_len = {r.gen_length: r for r in s.sweep}
    assert by_len[256].empty == pytest.approx(0.75) and by_len[256].empty_base == pytest.approx(0.5)
    assert by_len[64].empty == 0.0 and by_len[64].empty_base == 0.0
    md = report.render_markdown(s, {})
    warnings = [x for x in md.splitlines() if "most answers are empty" in x]
    assert len(warnings) == 1 and "gen_length 256" in warnings[0]
    assert "`base` 50.0%" in warnings[0] and "`adaptive` 75.0%" in warnings[0]
    assert "| 50.0% / 75.0% |" in md and "| 0.0% / 0.0% |" in md
    row = next(c for c in s.claims if c.text == LONG)
    assert "most kept answers are empty" in row.reason and row.verdict == C.SUPPORTED  # speed is still judged


def test_empty_share_ignores_documents_without_a_token_count() -> None:
    assert report.empty_share(np.array([0.0, 1.0, 0.5, np.nan])) == pytest.approx(0.5)
    assert np.isnan(report.empty_share(np.array([np.nan])))


# ---------------------------------------------------------------- power line
def _exact_mcnemar_power(n: int, p10: float, p01: float, alpha: float) -> float:
    """Exact power of the two-sided exact McNemar test, summed over the number of discordant pairs."""
    pd = p10 + p01
    total = 0.0
    for k in range(1, n + 1):
        b = np.arange(k + 1)
        pvals = np.minimum(1.0, 2 * np.minimum(st.binom.cdf(b, k, 0.5), st.binom.sf(b - 1, k, 0.5)))
        reject = pvals <= alpha
        total += st.binom.pmf(k, n, pd) * float(np.sum(st.binom.pmf(b, k, p10 / pd)[reject]))
    return total


def test_power_line_states_the_pooled_mde_at_holms_first_step(tmp_path: Path) -> None:
    root = write_fake_matrix_run(tmp_path / "run", {"base": BASE, "adaptive": {"scheduler": "adaptive"},
                                                    "wino": {"scheduler": "wino"}}, baseline="base", limit=60)
    run = load_run(root)
    s = report.build_summary(run)
    p = s.power
    assert [r["label"] for r in p["rows"]] == ["adaptive"]  # wino backs no seed claim
    assert p["m"] == s.holm_m and p["alpha_each"] == pytest.approx(0.05 / s.holm_m)
    t = run.table
    disc = 0
    for task in ("synth_math", "synth_code"):
        got: dict[str, dict[int, float]] = {"adaptive": {}, "base": {}}
        for d, c, lab, tk, f in zip(t["doc_id"], t["correct"], t["label"], t["task"], t["filter"]):
            if tk == task and f == run.primary_filter[task]:
                got.setdefault(lab, {})[int(d)] = float(c)
        disc += sum(got["adaptive"][d] != got["base"][d] for d in got["base"])
    row = p["rows"][0]
    assert row["n"] == 120 and row["discordant"] == disc
    # the MDE is the smallest difference reaching 80% power: just above it power >= 0.8, below it < 0.8
    pi, mde, alpha = disc / 120, row["mde"], p["alpha_each"]

    def power(delta: float) -> float:
        pdx = max(pi, delta)
        return _exact_mcnemar_power(120, (pdx + delta) / 2, (pdx - delta) / 2, alpha)

    assert power(mde + 0.005) >= 0.8 > power(mde - 0.005)
    md = report.render_markdown(s, {})
    line = next(x for x in md.splitlines() if x.startswith("- **Power:**"))
    assert f"**{100 * mde:.1f} pts**" in line and f"α/m = 0.05/{s.holm_m}" in line and "Not powered" in line


def test_dry_run_prints_the_sweep_commands_with_the_sweeps_own_limit(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    from dllm_eval import cli

    assert cli.main(["eval-all", "--dry-run", "--lm-eval-cmd", "lm_eval", "--device", "cpu", "--results-dir",
                     str(tmp_path), "--run", "r", "--schedulers", "adaptive", "--gen-lengths", "64,256"]) == 0
    out = capsys.readouterr().out.splitlines()
    cmds = [x for x in out if x.startswith("lm_eval ")]
    assert len(cmds) == 2 + 2 * 2  # the matrix, then baseline and adaptive at each length
    for c, length in zip(cmds[2:], (64, 64, 256, 256)):
        assert f"gen_length={length}," in c and "--limit 48" in c and f"sweep/gen{length}/raw/" in c
    assert "--limit 160" in cmds[0] and "gen_length" not in cmds[0]
    assert not (tmp_path / "r").exists()  # a dry run writes nothing
