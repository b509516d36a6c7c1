"""`eval-all --sequential` end to end with the fake lm_eval (known effects, a resume journal):
the degraded control stops early as worse, the A/A control never as better/worse, each document
is decoded once per configuration, the report says where and why each stopped, and the decisions
equal the pure rule (`decide_counts`) run on the outcomes read back independently."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import numpy as np
import pytest

from dllm_eval import cli
from dllm_eval.analysis.sequential import SequentialPlan, decide_counts

FAKE = f"{shlex.quote(sys.executable)} -m dllm_eval.analysis.synthetic"
TASKS = ("synth_math", "synth_code")


def _cfg(tmp_path: Path, limit: str = "300") -> Path:
    (tmp_path / "tasks").mkdir(exist_ok=True)
    p = tmp_path / "m.yaml"
    p.write_text(f"""
settings:
  tasks: [{", ".join(TASKS)}]
  seeds: [1]
  limit: {{cpu: {limit}}}
  batch: 8
  include_path: {tmp_path / "tasks"}
report: {{alpha: 0.05, min_effect: 0.05}}
baseline: base
configs:
  base: {{scheduler: fast_dllm, params: {{cache: dual, threshold: 0.9}}, role: baseline}}
  aa: {{scheduler: fast_dllm, params: {{cache: dual, threshold: 0.9}}, role: control_aa, control_of: base}}
  t03: {{scheduler: fast_dllm, params: {{cache: dual, threshold: 0.3}}, role: control_degraded, control_of: base}}
  drs: {{scheduler: drs, params: {{block_length: 32}}}}
  ad: {{scheduler: adaptive, params: {{base_block_size: 32}}}}
""")
    return p


def _scores(cell: Path, task: str) -> np.ndarray:
    """0/1 scores of the primary filter in doc order, straight from the samples file."""
    (path,) = cell.rglob(f"samples_{task}_*.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    first = rows[0]["filter"]
    metric = "exact_match" if task == "synth_math" else "pass@1"
    by_doc = {r["doc_id"]: r[metric] for r in rows if r["filter"] == first}
    return np.array([by_doc[d] for d in sorted(by_doc)], dtype=float)


def test_sequential_run_stops_degraded_early_keeps_aa_and_matches_the_pure_rule(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("dllm_eval.analysis.report.N_RESAMPLES", 99)
    decoded_log = tmp_path / "decoded.log"
    monkeypatch.setenv("DLLM_EVAL_FAKE_DECODED", str(decoded_log))
    argv = ["eval-all", "--config", str(_cfg(tmp_path)), "--device", "cpu", "--run", "s", "--lm-eval-cmd", FAKE,
            "--sequential", "--looks", "5"]
    assert cli.main(argv) == 0
    run = tmp_path / "results" / "s"
    rec = json.loads((run / "sequential.json").read_text())
    plan = SequentialPlan(n_max=300, looks=5, alpha=0.05, mde=0.05)
    assert rec["plan"]["look_sizes"] == [60, 120, 180, 240, 300] == list(plan.look_sizes)
    dec = {tuple(d["comparison"]): d for d in rec["decisions"]}
    stops = rec["stops"]
    # the degraded control (about -12 points on each task) is found worse before the last look
    assert all(dec[("t03", t)]["status"] == "worse" for t in TASKS)
    assert stops["t03"]["stopped"] and stops["t03"]["look"] < 5
    # the A/A control is never better or worse
    assert all(dec[("aa", t)]["status"] not in ("better", "worse") for t in TASKS)

    # documents decoded per configuration: exactly the documents of the look it stopped at, each once
    decoded: dict[tuple, int] = {}
    for line in decoded_log.read_text().splitlines():
        e = json.loads(line)
        key = (e["scheduler"], e["threshold"], e["task"])
        decoded[key] = decoded.get(key, 0) + e["decoded"]
    n_at_stop = {lab: plan.look_sizes[stops[lab]["look"] - 1] for lab in ("t03", "drs", "ad")}
    assert decoded[("fast_dllm", 0.3, "synth_math")] == n_at_stop["t03"]
    assert decoded[("drs", None, "synth_code")] == n_at_stop["drs"]
    assert decoded[("adaptive", None, "synth_math")] == n_at_stop["ad"]
    last = max(s["look"] for s in stops.values())
    # base and aa share a scheduler setting; together they decoded the baseline's and aa's documents
    assert decoded[("fast_dllm", 0.9, "synth_math")] == plan.look_sizes[last - 1] + plan.look_sizes[stops["aa"]["look"] - 1]
    for lab in ("t03", "drs", "ad", "base"):
        assert not (run / "raw" / lab / "seed1" / "traces" / "journal").exists()  # removed once final

    # the same decisions from the pure rule on the outcomes read back from the samples files
    base = {t: _scores(run / "raw" / "base" / "seed1", t) for t in TASKS}
    fams = {"comparisons": ["drs", "ad"], "aa": ["aa"], "t03": ["t03"]}
    for labs in fams.values():
        counts = {}
        for lab in labs:
            for t in TASKS:
                a = _scores(run / "raw" / lab / "seed1", t)
                counts[(lab, t)] = [(int(np.sum((a[:n] == 1) & (base[t][:n] == 0))), int(np.sum((a[:n] == 0) & (base[t][:n] == 1))))
                                    for n in plan.look_sizes[:last] if n <= a.size]
                counts[(lab, t)] += [counts[(lab, t)][-1]] * (last - len(counts[(lab, t)]))
        for d in decide_counts(plan, counts, last):
            got = dec[d.comparison]
            assert (got["status"], got["look"], got["b"], got["c"]) == (d.status, d.look, d.b, d.c)
            assert got["rci_low"] == pytest.approx(d.rci_low) and got["rci_high"] == pytest.approx(d.rci_high)

    md = (run / "report.md").read_text()
    assert "## Sequential stopping" in md
    look_t03 = stops["t03"]["look"]
    assert f"| `t03` | yes | {look_t03} ({n_at_stop['t03']}) | all comparisons decided (synth_math worse, synth_code worse) |" in md
    assert "--sequential --looks 5" in md and "own family" in md
    assert f"pair every configuration on the {min(n_at_stop.values())} documents" in md

    # rerun: every look is replayed from the files, nothing is decoded again, same decisions
    before = decoded_log.read_text()
    assert cli.main(argv) == 0
    assert decoded_log.read_text() == before
    assert json.loads((run / "sequential.json").read_text())["decisions"] == rec["decisions"]


def test_sequential_needs_a_limit_and_one_seed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    base = ["eval-all", "--config", str(_cfg(tmp_path)), "--device", "cpu", "--lm-eval-cmd", FAKE, "--sequential"]
    assert cli.main([*base, "--limit", "none"]) == 2
    assert "--sequential reveals documents up to a maximum: give --limit N" in capsys.readouterr().err
    assert cli.main([*base, "--seeds", "1,2"]) == 2
    assert "give one seed" in capsys.readouterr().err
    assert cli.main([*base, "--limit", "4", "--looks", "5"]) == 2
    assert "repeated look sizes" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()  # refused before anything ran
