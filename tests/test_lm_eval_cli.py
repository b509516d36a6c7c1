"""`dllm-eval lm-eval` / `python -m dllm_eval.lm_eval_cli`: lm_eval's CLI with a local task index.

The shortcut must only change how long the start takes, never what runs: it applies only when
every requested task is under --include_path, and the same command through the stock `lm_eval`
gives the same per-document outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dllm_eval import lm_eval_cli

REPO = Path(__file__).resolve().parents[1]
TASKS = str(REPO / "tasks")


@pytest.fixture()
def restore_task_manager(monkeypatch: pytest.MonkeyPatch):
    import lm_eval.tasks

    monkeypatch.setattr(lm_eval.tasks, "TaskManager", lm_eval.tasks.TaskManager)
    return lm_eval.tasks


def test_option_parsing_takes_both_spellings_and_the_last_value():
    from dllm_eval.settings import cli_option

    argv = ["--tasks", "a,b", "--include_path=x", "--tasks=c"]
    assert cli_option(argv, "--tasks") == "c"
    assert cli_option(argv, "--include_path") == "x"
    assert cli_option(argv, "--limit") is None


def test_local_index_when_every_task_is_in_the_include_path(restore_task_manager):
    stock = restore_task_manager.TaskManager
    assert lm_eval_cli.install_local_first_index(["--tasks", "synth_math,synth_code", "--include_path", TASKS])
    patched = restore_task_manager.TaskManager
    assert patched is not stock and issubclass(patched, stock)
    names = set(patched(include_path=TASKS).all_tasks)
    assert {"synth_math", "synth_code", "dllm_gsm8k"} <= names
    assert "gsm8k" not in names and "hellaswag" not in names  # lm-eval's built-ins were not indexed


@pytest.mark.parametrize("argv", [
    ["--tasks", "synth_math,gsm8k", "--include_path", TASKS],  # a built-in task: full index
    ["--tasks", "synth_math"],  # no include path
    ["--tasks", "list", "--include_path", TASKS],
])
def test_stock_index_otherwise(restore_task_manager, argv):
    stock = restore_task_manager.TaskManager
    assert not lm_eval_cli.install_local_first_index(argv)
    assert restore_task_manager.TaskManager is stock


def test_dllm_eval_subcommand_passes_every_argument_to_lm_eval():
    proc = subprocess.run([sys.executable, "-m", "dllm_eval.cli", "lm-eval", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "--model_args" in proc.stdout  # lm_eval's own help, not dllm-eval's


@pytest.mark.slow
def test_same_outputs_as_the_stock_lm_eval(tmp_path):
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1"}
    args = ["--model", "dllm_adaptive", "--model_args", "scheduler=fast_dllm,threshold=0.9", "--tasks", "synth_math",
            "--include_path", TASKS, "--limit", "3", "--device", "cpu", "--log_samples"]
    outputs = {}
    for name, prefix in (("stock", [str(Path(sys.executable).parent / "lm_eval")]),
                         ("local", [sys.executable, "-m", "dllm_eval.lm_eval_cli"])):
        out = tmp_path / name
        proc = subprocess.run([*prefix, *args, "--output_path", str(out)], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-2000:]
        (samples,) = out.rglob("samples_synth_math_*.jsonl")
        outputs[name] = sorted((r["doc_id"], r["filter"], r["resps"], r["exact_match"])
                               for r in map(json.loads, samples.read_text().splitlines()))
    assert len(outputs["local"]) == 6
    assert outputs["local"] == outputs["stock"]
