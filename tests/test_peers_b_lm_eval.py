"""The WINO and Prophet plug-ins through the stock lm-eval entry point: on the embedded model
(LLaDA) and on a random checkpoint in Dream's on-disk format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_dream_lm_eval import dream_checkpoint  # noqa: F401  (the random Dream checkpoint fixture)

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # 6-10 s each on an idle machine, several times that on a busy 2-core one
@pytest.mark.parametrize("family", ["embedded", "dream"])
@pytest.mark.parametrize("scheduler", ["wino", "prophet"])
def test_through_lm_eval(tmp_path, request, scheduler, family):
    args = f"scheduler={scheduler},trace_dir={tmp_path}"
    if family == "dream":
        args += f",pretrained={request.getfixturevalue('dream_checkpoint')},gen_length=32,block_length=16"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "dllm_eval.lm_eval_cli", "--model", "dllm_adaptive", "--model_args",
                           args, "--tasks", "synth_math", "--include_path", str(REPO / "tasks"), "--limit", "2",
                           "--batch_size", "2", "--device", "cpu", "--output_path", str(tmp_path)],
                          env=env, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (results,) = tmp_path.rglob("results_*.json")
    assert "synth_math" in json.loads(results.read_text())["results"]
    traces = [json.loads(line) for line in (tmp_path / "traces_synth_math.jsonl").read_text().splitlines()]
    assert [t["scheduler"] for t in traces] == [scheduler] * 2 and all(t["nfe"] >= 1 for t in traces)
