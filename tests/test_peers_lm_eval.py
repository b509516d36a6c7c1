"""Every peer plug-in through lm_eval's own CLI, end to end: on the embedded model and on random
checkpoints of every model family (LLaDA and Dream on-disk formats)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_dream_lm_eval import dream_checkpoint  # noqa: F401  (the random Dream checkpoint fixture)

REPO = Path(__file__).resolve().parents[1]
PEERS = ["eb_sampler", "hierarchy", "klass", "wino", "prophet"]


@pytest.fixture(scope="module")
def llada_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("llada") / "llada-random"
    subprocess.run([str(Path(sys.executable).parent / "dllm-eval"), "random-checkpoint", "--arch", "llada", "--out",
                    str(out), "--d-model", "64", "--layers", "2", "--heads", "4", "--mlp", "128", "--vocab", "512",
                    "--seed", "0"], check=True)
    return out


@pytest.mark.slow  # 6-10 s each on an idle machine
@pytest.mark.parametrize("family", ["embedded", "llada", "dream"])
@pytest.mark.parametrize("scheduler", PEERS)
def test_every_peer_runs_through_lm_eval_on_every_family(tmp_path, request, scheduler, family):
    args = f"scheduler={scheduler},trace_dir={tmp_path}"
    if family != "embedded":
        args += f",pretrained={request.getfixturevalue(family + '_checkpoint')},gen_length=32,block_length=16"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "dllm_eval.lm_eval_cli", "--model", "dllm_adaptive", "--model_args",
                           args, "--tasks", "synth_math", "--include_path", str(REPO / "tasks" / "synth"), "--limit",
                           "2", "--batch_size", "2", "--device", "cpu", "--output_path", str(tmp_path)],
                          env=env, capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (results,) = tmp_path.rglob("results_*.json")
    assert json.loads(results.read_text())["config"]["dllm_eval"]["scheduler"] == scheduler
    traces = [json.loads(line) for line in (tmp_path / "traces_synth_math.jsonl").read_text().splitlines()]
    assert sorted(t["doc_id"] for t in traces) == [0, 1]
    assert all(t["scheduler"] == scheduler and 1 <= t["nfe"] <= t["gen_length"] for t in traces)
