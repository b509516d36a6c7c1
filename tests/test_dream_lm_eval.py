"""Dream through the stock lm-eval CLI, offline, on a random checkpoint in Dream's on-disk format."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def dream_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dream") / "dream-random"
    subprocess.run([str(BIN / "dllm-eval"), "random-checkpoint", "--arch", "dream", "--out", str(out), "--d-model", "64",
                    "--layers", "2", "--heads", "4", "--kv-heads", "2", "--mlp", "128", "--vocab", "512", "--seed", "0"],
                   check=True)
    return out


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=cwd)


@pytest.mark.slow
@pytest.mark.parametrize("args", ["scheduler=fast_dllm,cache=dual,threshold=0.9,gen_length=32,block_length=16",
                                  "scheduler=dream,gen_length=32,steps=8"])
def test_stock_lm_eval_runs_dream_offline(dream_checkpoint, tmp_path, args):
    out = tmp_path / "out"
    proc = _run([str(BIN / "lm_eval"), "--model", "dllm_adaptive", "--model_args", f"pretrained={dream_checkpoint},{args}",
                 "--tasks", "dllm_gsm8k", "--include_path", str(REPO / "tasks"), "--limit", "4", "--batch_size", "2",
                 "--device", "cpu", "--log_samples", "--output_path", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(x) for x in (out / "traces" / "traces_dllm_gsm8k.jsonl").read_text().splitlines()]
    assert sorted(r["doc_id"] for r in rows) == [0, 1, 2, 3]
    assert len(list(out.rglob("samples_dllm_gsm8k_*.jsonl"))) == 1
    config = json.loads(next(out.rglob("results_*.json")).read_text())["config"]["dllm_eval"]
    assert config["scheduler"] == args.split(",")[0].split("=")[1]


def test_dream_refuses_loglikelihood_in_one_line(dream_checkpoint):
    from lm_eval.api.instance import Instance

    from dllm_eval.errors import UserError
    from dllm_eval.lm_eval_model import DiffusionLM

    lm = DiffusionLM(pretrained=str(dream_checkpoint), device="cpu")
    req = Instance("loglikelihood", {}, ("Question: 1+1?", " 2"), 0)
    with pytest.raises(UserError, match="LLaDA only"):
        lm.loglikelihood([req])


@pytest.mark.slow
def test_every_scheduler_runs_through_lm_eval_on_tiny_dream(tmp_path):
    """Issue 10: each registered scheduler, through lm-eval's evaluator, on the embedded Dream model
    (3 documents of synth_math each; one task index shared by every run)."""
    from lm_eval.evaluator import simple_evaluate
    from lm_eval.tasks import TaskManager

    from dllm_eval.lm_eval_model import DiffusionLM
    from dllm_eval.schedulers import SCHEDULERS, param_fields

    manager = TaskManager(include_path=str(REPO / "tasks" / "synth"))
    for name in sorted(SCHEDULERS):
        extra = {"base_block_size": 32} if "base_block_size" in param_fields(name) else {}
        lm = DiffusionLM(pretrained="tiny_dream", scheduler=name, device="cpu", batch_size=3,
                         trace_dir=str(tmp_path / name), **extra)
        out = simple_evaluate(model=lm, tasks=["synth_math"], limit=3, task_manager=manager, log_samples=False)
        assert "synth_math" in out["results"], name
        rows = (tmp_path / name / "traces_synth_math.jsonl").read_text().splitlines()
        assert len(rows) == 3 and all(json.loads(r)["scheduler"] == name for r in rows), name
