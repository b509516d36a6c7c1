"""lm-eval glue for the execution-scored tasks in tasks/code/: filters, process_results, few-shot docs.

Why execution happens in a filter and not in the metric: lm-eval calls a metric once per
document, one after the other, while a filter sees every response of the task at once, so
`ExecutePrograms` can run them on parallel sandboxes under one time budget. The filter's output
(per sample: the raw and the cleaned program, the postprocessing steps and the verdict) is what
lm-eval logs as `filtered_resps`, so a failure can be read straight from the samples file;
`process_results` then only turns verdicts into pass@k.

Nothing here touches `evaluate.load` or the network.

YAML usage (see tasks/code/):
    filter_list:
      - name: sanitize
        filter:
          - function: !function dllm_eval.scoring.lmeval.BuildPrograms
            prefix: prompt_newline
            code_block: true
            ...
          - function: !function dllm_eval.scoring.lmeval.ExecutePrograms
            timeout: 10
    process_results: !function dllm_eval.scoring.lmeval.process_results
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from typing import Any

from lm_eval.api.filter import Filter

from dllm_eval.errors import UserError
from dllm_eval.scoring.passk import pass_at_k
from dllm_eval.scoring.postprocess import PostprocessConfig, build_program
from dllm_eval.scoring.sandbox import (
    DEFAULT_MEMORY_MB,
    DEFAULT_TIMEOUT,
    CodeJob,
    ExecResult,
    check_isolation_floor,
    isolation_floor,
    isolation_level,
    isolation_warning,
    run_many,
)

log = logging.getLogger(__name__)

PASS_AT_KS = (1, 5, 10, 100)  # reported when the task has at least k samples per document
RECORD_TAIL_CHARS = 1000  # stdout/stderr kept per sample in the logs
CACHE_LIMIT = 50_000  # verdicts remembered per process


def asserts_for_doc(doc: dict) -> tuple[list[str], str]:
    """(test snippets, setup code) for a HumanEval, MBPP or MBPP-sanitized document."""
    if "test" in doc and "entry_point" in doc:  # HumanEval: define check(), then call it
        return [doc["test"], f"check({doc['entry_point']})"], ""
    if "test_list" in doc:
        setup = doc.get("test_setup_code") or "\n".join(doc.get("test_imports") or [])
        return list(doc["test_list"]), setup
    raise UserError(f"cannot find tests in a document with fields {sorted(doc)}; expected HumanEval or MBPP fields")


class SampleRecord(dict):
    """One sample's record: a dict for lm-eval's process_results, JSON when stringified.

    lm-eval writes `filtered_resps` to the samples file through `str()`; this makes that a JSON
    object (`json.loads(sample["filtered_resps"][0][0])`) instead of a Python repr.
    """

    def __str__(self) -> str:
        return json.dumps(self, ensure_ascii=False, default=str)


def _verdict_fields(result: ExecResult) -> dict:
    """What a logged sample keeps of an ExecResult (output tails shortened for the logs)."""
    return {
        "passed": result.passed,
        "status": result.status,
        "reason": result.reason,
        "duration_s": result.duration_s,
        "isolation": result.isolation,
        "isolation_warning": isolation_warning(result.isolation) or "",
        "containment": result.containment,
        "guard": result.guard,
        "tests_run": result.tests_run,
        "tests_total": result.tests_total,
        "stdout_tail": result.stdout_tail[-RECORD_TAIL_CHARS:],
        "stderr_tail": result.stderr_tail[-RECORD_TAIL_CHARS:],
    }


class BuildPrograms(Filter):
    """Filter step 1: response -> program, with the postprocessing named in the YAML.

    Output per sample: a dict with `program`, `raw_program`, `postprocess` (steps that changed
    something) and `entry_point`; `ExecutePrograms` adds the verdict.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__()
        self.config = PostprocessConfig.from_kwargs(**kwargs)

    def apply(self, resps, docs):
        out = []
        for responses, doc in zip(resps, docs):
            tests, _ = asserts_for_doc(doc)
            prompt = doc.get("prompt", "") if self.config.prefix != "none" else ""
            records = []
            for response in responses:
                built = build_program(
                    response if isinstance(response, str) else str(response),
                    self.config,
                    prompt=prompt,
                    entry_point=doc.get("entry_point"),
                    tests=tests,
                )
                records.append(
                    SampleRecord(
                        program=built.program,
                        raw_program=built.raw_program,
                        postprocess=built.steps,
                        entry_point=built.entry_point,
                    )
                )
            out.append(records)
        return out


class _Cache:
    """Verdicts by (program, tests, setup, limits): the raw and the sanitized pipelines often
    produce the same program, and it need not run twice."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.results: dict[str, ExecResult] = {}

    @staticmethod
    def key(job: CodeJob, guard: bool, isolation: str | None) -> str:
        blob = json.dumps([job.program, list(job.tests or ()), job.setup, job.timeout, job.memory_mb, guard, isolation])
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


_CACHE = _Cache()


def execute_records(
    records: list[list[dict]],
    docs: list[dict],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    memory_mb: int = DEFAULT_MEMORY_MB,
    workers: int | None = None,
    total_timeout: float | None = None,
    isolation: str | None = None,
    guard: bool = True,
    min_isolation: str | None = None,
) -> list[list[dict]]:
    """Run every record's program against its document's tests; return records with verdicts.

    Refuses (UserError) when the sandbox would run below the isolation floor (`min_isolation`,
    else $DLLM_EVAL_MIN_ISOLATION, else namespaces): a code score is only as good as its sandbox.
    """
    level = isolation_level(isolation)
    check_isolation_floor(level, isolation_floor(min_isolation))
    warning = isolation_warning(level)
    if warning:
        log.warning("%s", warning)
    isolation = level
    where: list[tuple[int, int, str]] = []
    known: dict[str, ExecResult] = {}
    todo: dict[str, CodeJob] = {}
    for i, (doc_records, doc) in enumerate(zip(records, docs)):
        tests, setup = asserts_for_doc(doc)
        for j, record in enumerate(doc_records):
            job = CodeJob(record["program"], tests, setup=setup, timeout=float(timeout), memory_mb=int(memory_mb))
            key = _Cache.key(job, guard, isolation)
            where.append((i, j, key))
            if key in known or key in todo:
                continue
            with _CACHE.lock:
                cached = _CACHE.results.get(key)
            if cached is not None:
                known[key] = cached
            else:
                todo[key] = job
    if todo:
        log.info("executing %d programs in the sandbox", len(todo))
        results = run_many(list(todo.values()), workers=workers, total_timeout=total_timeout, isolation=isolation,
                           guard=guard)
        known.update(zip(todo, results))
        with _CACHE.lock:
            if len(_CACHE.results) > CACHE_LIMIT:  # a long eval matrix: keep memory bounded
                _CACHE.results.clear()
            _CACHE.results.update(zip(todo, results))
    out = [[SampleRecord(r) for r in doc_records] for doc_records in records]
    for i, j, key in where:
        out[i][j].update(_verdict_fields(known[key]))
    return out


class ExecutePrograms(Filter):
    """Filter step 2: run every program in the sandbox, in parallel, under one time budget.

    YAML keys: timeout (s per program), memory_mb, workers (default: CPUs, or
    $DLLM_EVAL_EXEC_WORKERS), total_timeout (s for the whole task; programs not started in time
    are reported as timeouts), isolation (auto/bwrap/namespaces/rlimits), guard, min_isolation
    (the floor; default $DLLM_EVAL_MIN_ISOLATION, else namespaces).
    """

    def __init__(
        self,
        timeout: float = DEFAULT_TIMEOUT,
        memory_mb: int = DEFAULT_MEMORY_MB,
        workers: int | None = None,
        total_timeout: float | None = None,
        isolation: str | None = None,
        guard: bool = True,
        min_isolation: str | None = None,
    ) -> None:
        super().__init__()
        self.options = dict(timeout=timeout, memory_mb=memory_mb, workers=workers, total_timeout=total_timeout,
                            isolation=isolation, guard=guard, min_isolation=min_isolation)

    def apply(self, resps, docs):
        records = [[r if isinstance(r, dict) else {"program": str(r)} for r in doc_resps] for doc_resps in resps]
        return execute_records(records, list(docs), **self.options)


def process_results(doc: dict, results: list) -> dict[str, float]:
    """pass@1 for every document, pass@k for each k in PASS_AT_KS not above the number of samples.

    `results` is `[filtered responses of the one request]`, i.e. a list with one list of records.
    Records without a verdict (a YAML that left out ExecutePrograms) are executed here, serially.
    """
    records = results[0] if results and isinstance(results[0], list) else list(results)
    records = [r if isinstance(r, dict) else {"program": str(r)} for r in records]
    if any("passed" not in r for r in records):
        records = execute_records([records], [doc])[0]
    n = len(records)
    c = sum(1 for r in records if r["passed"])
    if n == 0:
        return {"pass@1": 0.0}
    return {f"pass@{k}": pass_at_k(n, c, k) for k in PASS_AT_KS if k <= n}


def mbpp_fewshot_samples() -> list[dict]:
    """MBPP's three prompt-split examples (task_ids 2, 3, 4), as lm-eval's mbpp task uses them."""
    from dllm_eval import data

    rows = {row["task_id"]: row for row in data.mbpp()["prompt"]}
    return [{**rows[task_id], "is_fewshot": True} for task_id in (2, 3, 4)]


def mbpp_sanitized_fewshot_samples() -> list[dict]:
    """The same three examples from the sanitized set (its prompt split has task_ids 2, 3 and 4)."""
    from dllm_eval import data

    rows = {row["task_id"]: row for row in data.mbpp_sanitized()["prompt"]}
    return [{**rows[task_id], "is_fewshot": True} for task_id in (2, 3, 4)]
