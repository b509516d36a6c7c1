"""eval-all spread over devices (--gpus) and over submitit jobs (--launcher submitit-local, the
--launcher slurm code path on this machine): the same markers, resume and report as a serial run.

lm_eval is the synthetic stand-in (dllm_eval.analysis.synthetic), wrapped in a shell line that
also logs the CUDA_VISIBLE_DEVICES and DLLM_EVAL_RESUME each cell's process saw.
"""

from __future__ import annotations

import json
import re
import shlex
import sys
from pathlib import Path

import pytest

from dllm_eval import cli, matrix
from dllm_eval.errors import UserError

CONFIG = """
settings:
  tasks: [synth_math]
  seeds: [1, 2]
  limit: {{cpu: 12}}
  batch: 4
  include_path: {tasks}
  common_params: {{gen_length: 64}}
report: {{alpha: 0.05, min_effect: 0.05}}
baseline: base
configs:
  base: {{scheduler: fast_dllm, params: {{cache: dual, threshold: 0.9}}, role: baseline}}
  aa: {{scheduler: fast_dllm, params: {{cache: dual, threshold: 0.9}}, role: control_aa, control_of: base}}
  t03: {{scheduler: fast_dllm, params: {{cache: dual, threshold: 0.3}}, role: control_degraded, control_of: base}}
"""


@pytest.fixture()
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    (tmp_path / "tasks").mkdir()
    cfg = tmp_path / "m.yaml"
    cfg.write_text(CONFIG.format(tasks=tmp_path / "tasks"))
    monkeypatch.chdir(tmp_path)
    calls = tmp_path / "calls.log"
    monkeypatch.setenv("DLLM_EVAL_FAKE_LOG", str(calls))
    monkeypatch.setattr("dllm_eval.analysis.report.N_RESAMPLES", 199)
    seen = tmp_path / "seen.log"
    script = (f"echo dev=$CUDA_VISIBLE_DEVICES resume=$DLLM_EVAL_RESUME >> {seen}; "
              f'exec {shlex.quote(sys.executable)} -m dllm_eval.analysis.synthetic "$@"')
    fake = f"sh -c {shlex.quote(script)} fake"
    return {"cfg": cfg, "calls": calls, "seen": seen, "fake": fake, "root": tmp_path / "results"}


def _argv(s: dict, run: str, *extra: str) -> list[str]:
    return ["eval-all", "--config", str(s["cfg"]), "--device", "cpu", "--run", run, "--lm-eval-cmd", s["fake"], *extra]


def _lines(p: Path) -> list[str]:
    return p.read_text().splitlines() if p.exists() else []


def _report(root: Path, run: str) -> str:
    """report.md without what differs between any two calls: its date and the run's own name."""
    md = (root / run / "report.md").read_text()
    md = re.sub(r"Generated \S+", "Generated <date>", md)
    return md.replace(f"results/{run}", "results/<run>").replace(f": {run}\n", ": <run>\n").replace(f"--run {run}", "--run <run>")


def _markers(root: Path, run: str) -> dict[str, dict]:
    return {str(p.parent.relative_to(root / run / "raw")): json.loads(p.read_text())
            for p in sorted((root / run / "raw").rglob(".done.json"))}


def test_parse_gpus() -> None:
    assert matrix.parse_gpus("2") == ["cuda:0", "cuda:1"]
    assert matrix.parse_gpus("0,3") == ["cuda:0", "cuda:3"]
    assert matrix.parse_gpus("cuda:1, cuda:2") == ["cuda:1", "cuda:2"]
    assert matrix.parse_gpus(None) is None
    for bad in ("0", "a,b", "1,1", "cuda:x"):
        with pytest.raises(UserError, match="--gpus"):
            matrix.parse_gpus(bad)


@pytest.mark.slow
def test_gpus_spread_cells_and_resume_like_a_serial_run(setup: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    s = setup
    assert cli.main(_argv(s, "serial")) == 0
    assert len(_lines(s["calls"])) == 6
    assert set(_lines(s["seen"])) == {"dev= resume=1"}  # serial: no device pinning; resume on

    # a partial --gpus run: the t03 cells die; the others are done, on both devices
    monkeypatch.setenv("DLLM_EVAL_FAKE_FAIL", "threshold=0.3")
    s["seen"].write_text("")
    assert cli.main(_argv(s, "spread", "--gpus", "0,1")) == 1
    monkeypatch.delenv("DLLM_EVAL_FAKE_FAIL")
    assert len(_lines(s["calls"])) == 12
    assert set(_lines(s["seen"])) == {"dev=0 resume=1", "dev=1 resume=1"}
    markers = _markers(s["root"], "spread")
    assert sorted(markers) == ["aa/seed1", "aa/seed2", "base/seed1", "base/seed2"]
    assert {m["device"] for m in markers.values()} == {"cuda:0", "cuda:1"}

    # resume: only the two unfinished cells run, again one per device
    s["seen"].write_text("")
    assert cli.main(_argv(s, "spread", "--gpus", "2")) == 0
    calls = _lines(s["calls"])
    assert len(calls) == 14 and all("threshold=0.3" in c for c in calls[12:])
    assert sorted(_lines(s["seen"])) == ["dev=0 resume=1", "dev=1 resume=1"]
    assert len(_markers(s["root"], "spread")) == 6
    # same commands (placement is not part of them), same report
    serial, spread = _markers(s["root"], "serial"), _markers(s["root"], "spread")
    assert {k: m["command_str"].replace("/spread/", "/serial/") for k, m in spread.items()} == \
        {k: m["command_str"] for k, m in serial.items()}
    assert _report(s["root"], "spread") == _report(s["root"], "serial")
    m = json.loads((s["root"] / "spread" / "matrix.json").read_text())
    assert m["placement"] == {"launcher": "local", "gpus": ["cuda:0", "cuda:1"]} and "--gpus" not in m["argv"]
    assert {c["device"] for c in m["cells"]} == {"cuda:0", "cuda:1"}
    # nothing left to do
    assert cli.main([*_argv(s, "spread", "--gpus", "2"), "--no-report"]) == 0
    assert len(_lines(s["calls"])) == 14


def test_several_cells_share_one_gpu(setup: dict) -> None:
    """--cells-per-gpu 3 on one device: three cells at a time, all pinned to that device, the same
    report as a serial run."""
    s = setup
    assert cli.main(_argv(s, "serial")) == 0
    s["seen"].write_text("")
    assert cli.main(_argv(s, "shared", "--gpus", "1", "--cells-per-gpu", "3")) == 0
    assert _lines(s["seen"]) == ["dev=0 resume=1"] * 6
    assert _report(s["root"], "shared") == _report(s["root"], "serial")
    m = json.loads((s["root"] / "shared" / "matrix.json").read_text())
    assert m["placement"] == {"launcher": "local", "gpus": ["cuda:0"], "cells_per_gpu": 3}


def test_cpu_cells_run_side_by_side_with_fixed_threads_and_report_like_a_serial_run(
        setup: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """--cpu-cells 2 on a 4-core machine: every cell's process sees OMP_NUM_THREADS=2 and no
    device pinning, the placement is recorded apart from the call, and the report equals a serial
    run's. settings.cpu_cells gives the default; never more slots than cores."""
    s = setup
    monkeypatch.setattr(matrix.os, "cpu_count", lambda: 4)
    script = (f"echo dev=$CUDA_VISIBLE_DEVICES omp=$OMP_NUM_THREADS >> {s['seen']}; "
              f'exec {shlex.quote(sys.executable)} -m dllm_eval.analysis.synthetic "$@"')
    s["fake"] = f"sh -c {shlex.quote(script)} fake"
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert cli.main(_argv(s, "serial")) == 0
    assert set(_lines(s["seen"])) == {"dev= omp="}
    s["seen"].write_text("")
    assert cli.main(_argv(s, "side", "--cpu-cells", "2")) == 0
    assert _lines(s["seen"]) == ["dev= omp=2"] * 6
    assert _report(s["root"], "side") == _report(s["root"], "serial")
    m = json.loads((s["root"] / "side" / "matrix.json").read_text())
    assert m["placement"] == {"launcher": "local", "gpus": None, "cpu_cells": 2} and "--cpu-cells" not in m["argv"]
    assert {c["device"] for c in m["cells"]} == {"cpu slot 1 of 2 (2 threads)", "cpu slot 2 of 2 (2 threads)"}

    import argparse

    mf = matrix.load_matrix_config(s["cfg"])
    ns = argparse.Namespace
    assert matrix.cpu_cells(ns(cpu_cells=None, gpus=None), mf, "cpu") == 1  # this config sets none
    mf.settings["cpu_cells"] = {"cpu": 3}
    assert matrix.cpu_cells(ns(cpu_cells=None, gpus=None), mf, "cpu") == 3
    assert matrix.cpu_cells(ns(cpu_cells=9, gpus=None), mf, "cpu") == 4  # capped at the cores
    assert matrix.cpu_cells(ns(cpu_cells=None, gpus=None), mf, "cuda") == 1
    assert matrix.cpu_cells(ns(cpu_cells=2, gpus="2"), mf, "cpu") == 1  # --gpus places the cells
    with pytest.raises(UserError, match="--cpu-cells 0"):
        matrix.cpu_cells(ns(cpu_cells=0, gpus=None), mf, "cpu")


@pytest.mark.slow
def test_submitit_launcher_resumes_and_reports_like_a_local_run(setup: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("submitit")
    s = setup
    assert cli.main(_argv(s, "serial", "--no-report")) == 0
    monkeypatch.setenv("DLLM_EVAL_FAKE_FAIL", "threshold=0.3")
    assert cli.main(_argv(s, "jobs", "--launcher", "submitit-local", "--no-report")) == 1
    monkeypatch.delenv("DLLM_EVAL_FAKE_FAIL")
    markers = _markers(s["root"], "jobs")
    assert sorted(markers) == ["aa/seed1", "aa/seed2", "base/seed1", "base/seed2"]
    assert all(re.fullmatch(r".+ job \d+", m["device"]) for m in markers.values())  # the job wrote its marker
    assert (s["root"] / "jobs" / "slurm").is_dir()
    assert len(_lines(s["calls"])) == 12
    assert cli.main(_argv(s, "jobs", "--launcher", "submitit-local")) == 0
    calls = _lines(s["calls"])
    assert len(calls) == 14 and all("threshold=0.3" in c for c in calls[12:])
    assert len(_markers(s["root"], "jobs")) == 6
    assert cli.main(_argv(s, "serial")) == 0  # all done: only writes the report
    assert len(_lines(s["calls"])) == 14
    assert _report(s["root"], "jobs") == _report(s["root"], "serial")
    assert set(_lines(s["seen"])) == {"dev= resume=1"}


def test_a_partial_cell_keeps_only_its_request_journal(tmp_path: Path) -> None:
    cell = tmp_path / "raw" / "base" / "seed1"
    (cell / "traces" / "journal").mkdir(parents=True)
    (cell / "traces" / "journal" / "rank0.jsonl").write_text("{}\n")
    (cell / "traces" / "traces_synth_math.jsonl").write_text("{}\n")
    (cell / "model").mkdir()
    (cell / "model" / "samples_x.jsonl").write_text("{}\n")
    (cell / "lm_eval.log").write_text("old")
    matrix._clear_leftover(cell)
    assert sorted(str(p.relative_to(cell)) for p in cell.rglob("*")) == [
        "traces", "traces/journal", "traces/journal/rank0.jsonl"]
