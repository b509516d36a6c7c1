"""The MATH tasks in tasks/math/: documents, prompts against lm-eval's stock Minerva task, scoring
records, and an end-to-end offline run through the lm_eval CLI.

Independent facts: the published sizes of MATH's test split per subject and level, lm-eval's own
`minerva_math500` task (prompt and 4 examples), and hand-written responses whose verdicts are known.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from dllm_eval import data

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tasks"


def _utils():
    spec = importlib.util.spec_from_file_location("dllm_math_task_utils", TASKS / "math" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


utils = _utils()

pytestmark = pytest.mark.skipif(data.data_dir() is None, reason="needs DLLM_EVAL_DATA_DIR (offline copies)")


def _local_tasks():
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(TASKS), include_defaults=False)


def test_math_test_split_per_subject_as_published() -> None:
    sizes = {s: len(data.hendrycks_math(subject=s)["test"]) for s in data.MATH_SUBJECTS}
    assert sizes == {
        "algebra": 1187,
        "counting_and_probability": 474,
        "geometry": 479,
        "intermediate_algebra": 903,
        "number_theory": 540,
        "prealgebra": 871,
        "precalculus": 546,
    }
    with pytest.raises(ValueError, match="unknown MATH subject"):
        data.hendrycks_math(subject="calculus")


def test_documents_carry_level_tier_subject_and_answers() -> None:
    docs = utils.process_docs(data.hendrycks_math(subject="geometry")["test"])
    levels = Counter(d["level"] for d in docs)
    assert set(levels) <= {1, 2, 3, 4, 5} and sum(levels.values()) == 479
    assert all(d["tier"] == d["level"] and d["subject"] == "Geometry" for d in docs)
    assert all(d["answer"] and d["minerva_answer"] for d in docs)
    m500 = list(utils.process_docs(data.math500()["test"]))
    assert len(m500) == 500 and len({d["subject"] for d in m500}) == 7
    assert Counter(d["level"] for d in m500) == Counter(r["level"] for r in data.math500()["test"])
    first = m500[0]
    assert first["answer"] == "\\left( 3, \\frac{\\pi}{2} \\right)" and first["unique_id"] == "test/precalculus/807.json"


def test_every_task_and_the_group_are_indexed() -> None:
    tm = _local_tasks()
    names = set(tm.all_tasks)
    subtasks = {f"dllm_minerva_math_{s}" for s in ("algebra", "counting_and_prob", "geometry", "intermediate_algebra",
                                                 "num_theory", "prealgebra", "precalc")}
    assert {"dllm_math500", "dllm_math500_4shot", "dllm_minerva_math"} | subtasks <= names


def test_4shot_prompt_is_lm_evals_minerva_math500_prompt() -> None:
    """Our dllm_math500_4shot against lm-eval's stock minerva_math500, both fed the local MATH-500."""
    from lm_eval.api.task import ConfigurableTask
    from lm_eval.tasks import TaskManager

    ours = _local_tasks().load(["dllm_math500_4shot"])["tasks"]["dllm_math500_4shot"]
    stock_tm = TaskManager()
    stock_entry = stock_tm.task_index["minerva_math500"]
    stock_cfg = stock_tm._factory._load_full_config(stock_entry, {"custom_dataset": data.math500})
    stock_cfg.pop("tag", None)
    stock = ConfigurableTask(config=stock_cfg)
    for doc_ours, doc_stock in list(zip(ours.test_docs(), stock.test_docs()))[:3]:
        assert doc_ours["problem"] == doc_stock["problem"]
        assert ours.fewshot_context(doc_ours, num_fewshot=4) == stock.fewshot_context(doc_stock, num_fewshot=4)
    assert ours.config.generation_kwargs["until"] == stock.config.generation_kwargs["until"]


def test_zero_shot_prompt_asks_for_a_box_and_the_final_answer_line() -> None:
    task = _local_tasks().load(["dllm_math500"])["tasks"]["dllm_math500"]
    doc = next(iter(task.test_docs()))
    prompt = task.fewshot_context(doc, num_fewshot=0)
    assert prompt.startswith("Problem:\n" + doc["problem"]) and prompt.endswith("Solution:")
    assert "\\boxed{}" in prompt and "Final Answer: The final answer is" in prompt


def _doc(answer: str, solution: str) -> dict:
    return utils._doc({"problem": "p", "solution": solution, "answer": answer, "subject": "Algebra", "level": 3,
                       "unique_id": "x"})


def test_scoring_records_hold_both_answers_and_both_verdicts() -> None:
    doc = _doc("\\frac{1}{2}", "So it is $\\boxed{\\frac12}$.")
    boxed_only = "Halving, we get $\\boxed{0.5}$."
    minerva_style = "We get $\\boxed{\\frac{1}{2}}$.\nFinal Answer: The final answer is $\\frac{1}{2}$. I hope it is correct."
    wrong = "Final Answer: The final answer is $2$. I hope it is correct."
    rec = utils.score(boxed_only, doc, "math_verify")
    assert rec["correct"] is True and rec["verdicts"] == {"math_verify": True, "minerva": False}
    assert rec["extracted"]["math_verify"] == "0.5" and rec["extracted"]["minerva"] == "[invalidanswer]"
    assert utils.score(boxed_only, doc, "minerva")["correct"] is False
    assert utils.score(minerva_style, doc, "minerva")["verdicts"] == {"math_verify": True, "minerva": True}
    assert utils.score(wrong, doc, "math_verify")["verdicts"] == {"math_verify": False, "minerva": False}
    logged = json.loads(str(rec))  # what lm-eval writes to filtered_resps
    assert logged["gold"] == {"math_verify": "\\frac{1}{2}", "minerva": "\\frac{1}{2}"}
    assert utils.process_results(doc, [rec]) == {"exact_match": 1}


def test_filter_applies_per_document() -> None:
    docs = [_doc("3", "$\\boxed{3}$"), _doc("4", "$\\boxed{4}$")]
    out = utils.ScoreAnswers("math_verify").apply([["\\boxed{3}"], ["\\boxed{3}"]], docs)
    assert [r[0]["correct"] for r in out] == [True, False]
    with pytest.raises(ValueError):
        utils.ScoreAnswers("exact")


def test_lm_eval_cli_runs_dllm_math500_offline_and_logs_both_verdicts(tmp_path: Path) -> None:
    ckpt = tmp_path / "llada-random"
    subprocess.run([sys.executable, "-m", "dllm_eval.cli", "random-checkpoint", "--arch", "llada", "--out", str(ckpt),
                    "--d-model", "32", "--layers", "1", "--heads", "2", "--mlp", "64", "--vocab", "512", "--seed", "0"],
                   check=True, capture_output=True)
    out = tmp_path / "out"
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    cmd = [sys.executable, "-m", "dllm_eval.lm_eval_cli", "--model", "dllm_adaptive",
           "--model_args", f"pretrained={ckpt},gen_length=16,block_length=16", "--tasks", "dllm_math500",
           "--include_path", str(TASKS), "--limit", "3", "--device", "cpu", "--log_samples", "--output_path", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(next(out.rglob("results_*.json")).read_text())["results"]["dllm_math500"]
    assert {"exact_match,math_verify", "exact_match,minerva"} <= set(results)
    samples = [json.loads(line) for line in next(out.rglob("samples_dllm_math500_*.jsonl")).read_text().splitlines()]
    assert sorted((s["doc_id"], s["filter"]) for s in samples) == [
        (d, f) for d in range(3) for f in ("math_verify", "minerva")
    ]
    for s in samples:
        record = json.loads(s["filtered_resps"][0])
        assert set(record["verdicts"]) == {"math_verify", "minerva"} and set(record["extracted"]) == {"math_verify", "minerva"}
        assert s["exact_match"] == int(record["verdicts"][s["filter"]])
        assert s["doc"]["tier"] == s["doc"]["level"] and s["doc"]["subject"]
