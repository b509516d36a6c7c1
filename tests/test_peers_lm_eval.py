"""The peer plug-ins through the stock `lm_eval` CLI on the embedded model, end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LM_EVAL = str(Path(sys.executable).parent / "lm_eval")


@pytest.mark.slow
@pytest.mark.parametrize("scheduler", ["eb_sampler", "hierarchy", "klass"])
def test_stock_lm_eval_runs_the_peer_scheduler(scheduler, tmp_path):
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [LM_EVAL, "--model", "dllm_adaptive", "--model_args", f"scheduler={scheduler},block_length=32",
           "--tasks", "synth_math", "--include_path", str(REPO / "tasks"), "--limit", "2", "--batch_size", "2",
           "--device", "cpu", "--log_samples", "--output_path", str(tmp_path / "out")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = (tmp_path / "out").rglob("results_*.json")
    assert json.loads(results.read_text())["config"]["dllm_eval"]["scheduler"] == scheduler
    rows = [json.loads(line) for line in (tmp_path / "out" / "traces" / "traces_synth_math.jsonl").read_text().splitlines()]
    assert sorted(r["doc_id"] for r in rows) == [0, 1]
    assert all(r["scheduler"] == scheduler and 0 < r["nfe"] <= r["gen_length"] for r in rows)
