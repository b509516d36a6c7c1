"""Stock task names and their dllm_* twins: the one-line hints, and that `dllm_gsm8k` is `gsm8k`.

Oracle for the twin claim: lm-eval's own TaskManager and ConfigurableTask, fed the same local
documents, must build identical requests and score identical responses identically.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dllm_eval import task_twins
from dllm_eval.task_twins import (
    TWINS,
    install,
    is_download_failure,
    offline_twin_line,
    requested_tasks,
    sandbox_notice,
)

REPO = Path(__file__).resolve().parents[1]


def _hub_error(dataset: str) -> BaseException:
    """The shape `datasets` raises offline: a ConnectionError caused by huggingface_hub's error."""

    class LocalEntryNotFoundError(OSError):
        pass

    try:
        try:
            raise LocalEntryNotFoundError("offline mode is enabled")
        except OSError as inner:
            raise ConnectionError(f"Couldn't reach '{dataset}' on the Hub (LocalEntryNotFoundError)") from inner
    except ConnectionError as outer:
        return outer


def test_requested_tasks_reads_both_argument_spellings() -> None:
    assert requested_tasks(["lm_eval", "--tasks", "gsm8k, dllm_math500"]) == ["gsm8k", "dllm_math500"]
    assert requested_tasks(["lm_eval", "--tasks=mbpp"]) == ["mbpp"]
    assert requested_tasks(["lm_eval", "--model", "hf"]) == []


def test_every_twin_exists_under_tasks() -> None:
    from lm_eval.tasks import TaskManager

    local = set(TaskManager(include_path=str(REPO / "tasks"), include_defaults=False).all_tasks)
    twins = set(TWINS.values()) | set(task_twins.DATASET_TWINS.values()) | set(task_twins.SANDBOXED_TWINS.values())
    assert twins <= local, twins - local


def test_sandbox_notice_names_the_twins_of_stock_code_tasks_only() -> None:
    line = sandbox_notice(["humaneval", "mbpp", "gsm8k"])
    assert line is not None and "\n" not in line
    assert "`dllm_humaneval`" in line and "`dllm_mbpp`" in line and "gsm8k" not in line
    assert "`dllm_humaneval`" in (sandbox_notice(["humaneval_instruct"]) or "")
    assert sandbox_notice(["dllm_humaneval", "gsm8k"]) is None


def test_install_prints_the_notice_only_for_dllm_adaptive() -> None:
    saved = sys.excepthook
    try:
        out = io.StringIO()
        install(["lm_eval", "--model", "dllm_adaptive", "--tasks", "humaneval"], stream=out)
        assert out.getvalue().count("\n") == 1 and "dllm_humaneval" in out.getvalue()
        out = io.StringIO()
        install(["lm_eval", "--model", "hf", "--tasks", "humaneval"], stream=out)
        assert out.getvalue() == ""
    finally:
        sys.excepthook = saved


def test_offline_line_names_the_twin_of_the_failed_stock_task() -> None:
    exc = _hub_error("openai/gsm8k")
    assert is_download_failure(exc)
    line = offline_twin_line(exc, ["gsm8k", "minerva_math"])
    assert line is not None and "\n" not in line
    assert "--tasks dllm_gsm8k " in line and "dllm_minerva_math" not in line  # the error names gsm8k's dataset
    assert "--tasks dllm_minerva_math " in (offline_twin_line(_hub_error("EleutherAI/hendrycks_math"), ["minerva_math"]) or "")


def test_other_errors_and_tasks_without_twins_get_no_line() -> None:
    assert offline_twin_line(ValueError("bad model_args"), ["gsm8k"]) is None
    assert offline_twin_line(_hub_error("cais/mmlu"), ["mmlu"]) is None


def test_excepthook_defers_to_the_previous_hook_for_other_errors() -> None:
    seen: list[BaseException] = []
    out = io.StringIO()
    hook = task_twins.make_excepthook(lambda t, e, tb: seen.append(e), ["gsm8k"], stream=out)
    other = KeyError("x")
    hook(KeyError, other, None)
    assert seen == [other] and out.getvalue() == ""
    hook(ConnectionError, _hub_error("openai/gsm8k"), None)
    assert len(seen) == 1 and "dllm_gsm8k" in out.getvalue()


def test_a_real_interpreter_prints_one_line_instead_of_a_traceback() -> None:
    """Through the .pth hook at interpreter start (dllm_eval._lmeval_register), as lm_eval would run."""
    code = "raise ConnectionError(\"Couldn't reach 'openai/gsm8k' on the Hub (LocalEntryNotFoundError)\")"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code, "--tasks", "gsm8k"], capture_output=True, text=True, env=env)
    if "import dllm_eval._lmeval_register" not in "".join(
        p.read_text() for p in Path(sys.prefix).glob("lib/python*/site-packages/*.pth")
    ):
        pytest.skip("dllm-eval's .pth hook is not installed in this environment")
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "dllm_gsm8k" in proc.stderr and "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# dllm_gsm8k is the stock gsm8k task
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gsm8k_pair():
    """Stock `gsm8k` and `dllm_gsm8k`, both built from configs found by lm-eval's TaskManager,
    both reading the same local documents (no network)."""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks import TaskManager

    from dllm_eval.data import gsm8k

    try:  # lm-eval 0.4.10+
        from lm_eval.tasks._yaml_loader import load_yaml
    except ImportError:  # older 0.4.x
        from lm_eval.utils import load_yaml_config

        def load_yaml(path, resolve_func=True):
            return load_yaml_config(yaml_path=path)

    index = TaskManager(include_path=str(REPO / "tasks")).task_index
    tasks = {}
    for name in ("gsm8k", "dllm_gsm8k"):
        cfg = dict(load_yaml(index[name].yaml_path, resolve_func=True))
        cfg.pop("tag", None)
        cfg["custom_dataset"] = gsm8k  # the stock config would download openai/gsm8k; feed the local copy
        task = ConfigurableTask(config=cfg)
        task.set_fewshot_seed(1234)
        tasks[name] = task
    return tasks["gsm8k"], tasks["dllm_gsm8k"]


def _requests(task, limit: int):
    task.build_all_requests(limit=limit, rank=0, world_size=1)
    return sorted(task.instances, key=lambda i: i.doc_id)


def test_dllm_gsm8k_builds_the_stock_prompts(gsm8k_pair) -> None:
    stock, ours = gsm8k_pair
    a, b = _requests(stock, 6), _requests(ours, 6)
    assert [i.doc for i in a] == [i.doc for i in b]
    assert [i.args for i in a] == [i.args for i in b]  # 5-shot context and generation kwargs
    assert a[0].args[0].count("Question:") == 6


def test_dllm_gsm8k_scores_like_the_stock_task(gsm8k_pair) -> None:
    stock, ours = gsm8k_pair
    assert [f["name"] for f in ours.config.filter_list] == [f["name"] for f in stock.config.filter_list]
    a, b = _requests(stock, 6), _requests(ours, 6)
    golds = [i.doc["answer"].split("#### ")[-1] for i in a]
    responses = [
        f"Step by step.\n#### {golds[0]}",  # right, strict format
        f"So the answer is {golds[1]}.",  # right, flexible only
        "#### 1,000,001",  # wrong
        f"The total is ${golds[3]}.00",
        "no number at all",
        f"#### {golds[5]}\nQuestion: extra",
    ]
    for task, insts in ((stock, a), (ours, b)):
        for inst, resp in zip(insts, responses):
            inst.resps = [resp]
        task.apply_filters()
    scores = []
    for task, insts in ((stock, a), (ours, b)):
        scores.append([
            {name: task.process_results(i.doc, [i.filtered_resps[name]]) for name in i.filtered_resps} for i in insts
        ])
    assert scores[0] == scores[1]
    strict = [s["strict-match"]["exact_match"] for s in scores[0]]
    assert strict[0] == 1.0 and strict[2] == 0.0 and strict[4] == 0.0  # the comparison is not vacuous
