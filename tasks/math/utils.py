"""lm-eval glue for the MATH tasks in this folder: documents, the 0-shot prompt, and the scoring filter.

Scoring happens in a filter (`ScoreAnswers`), once per filter of the task YAML:
  math_verify: `dllm_eval.scoring.math.is_equiv` (math-verify inside) on the answer the response
               commits to (last `\\boxed{}`, else "The final answer is", else the last `$...$`);
  minerva:     lm-eval's own Minerva rule, imported from its `minerva_math` task: the answer after
               "Final Answer: The final answer is", normalized as in Lewkowycz et al. (2022),
               compared with lm-eval's `is_equiv` (sympy); the numbers of published tables.
Each filter's output is what lm-eval logs as `filtered_resps`: a JSON object with the answer both
rules extracted, the gold answers and *both* verdicts, plus `correct`, the verdict of the filter's
own rule, which `process_results` turns into `exact_match`. So the samples file shows, per
problem, where the two rules disagree.

Documents carry `level` (1-5, int) and `tier` (the same number: the field dllm-eval's report breaks
results down by), `subject` (e.g. "Counting & Probability") and `unique_id`.
"""

from __future__ import annotations

import functools
import json
import re
from typing import Any

from lm_eval.api.filter import Filter
from lm_eval.tasks.minerva_math import utils as minerva

from dllm_eval.scoring.math import answer_of, is_equiv, last_boxed

CHECKERS = ("math_verify", "minerva")
LOGGED_ANSWER_CHARS = 300

# Lm-eval's Minerva 4-shot examples (first_n sampler), reused as they are.
list_fewshot_samples = minerva.list_fewshot_samples
minerva_doc_to_text = minerva.doc_to_text

ZERO_SHOT_INSTRUCTION = (
    "Solve the problem step by step. Put the final answer in \\boxed{}, and end with the line "
    '"Final Answer: The final answer is $ANSWER$. I hope it is correct."'
)


def zero_shot_doc_to_text(doc: dict) -> str:
    """Minerva's Problem/Solution frame plus an instruction, since no example shows the answer format."""
    return "Problem:\n" + doc["problem"] + "\n\n" + ZERO_SHOT_INSTRUCTION + "\n\nSolution:"


def _level(raw: Any) -> int | None:
    """MATH's "Level 3" (test set) or 3 (MATH-500) as 3; None for the few "Level ?"."""
    if isinstance(raw, int):
        return raw
    m = re.search(r"\d+", str(raw or ""))
    return int(m.group()) if m else None


def _doc(doc: dict) -> dict:
    solution = doc["solution"]
    gold = doc.get("answer") or last_boxed(solution) or ""
    boxed = minerva.last_boxed_only_string(solution)
    minerva_gold = minerva.normalize_final_answer(minerva.remove_boxed(boxed)) if boxed else ""
    level = _level(doc.get("level"))
    subject = doc.get("subject") or doc.get("type") or ""
    return {
        "problem": doc["problem"],
        "solution": solution,
        "answer": gold,
        "minerva_answer": minerva_gold,
        "level": level,
        "tier": level,
        "subject": subject,
        "unique_id": doc.get("unique_id") or f"test/{subject}/{doc.get('idx', '')}",
    }


def process_docs(dataset):
    """MATH or MATH-500 rows as the documents described in the module docstring."""
    return dataset.map(_doc, remove_columns=[c for c in dataset.column_names if c not in ("problem", "solution")])


class Record(dict):
    """A sample's scoring record: a dict for process_results, a JSON object in the samples file."""

    def __str__(self) -> str:
        return json.dumps(self, ensure_ascii=False)


def _clip(s: str | None) -> str | None:
    return s if s is None or len(s) <= LOGGED_ANSWER_CHARS else s[:LOGGED_ANSWER_CHARS] + "…"


@functools.lru_cache(maxsize=20_000)
def verdicts(response: str, gold: str, minerva_gold: str) -> tuple[str | None, bool, str, bool]:
    """(math-verify answer, its verdict, Minerva answer, its verdict); cached: both filters ask."""
    answer = answer_of(response)
    mv_ok = bool(answer) and is_equiv(response, gold)
    mn_answer = minerva.normalize_final_answer(minerva.get_unnormalized_answer(response))
    mn_ok = bool(minerva_gold) and bool(minerva.is_equiv(mn_answer, minerva_gold))
    return answer, mv_ok, mn_answer, mn_ok


def score(response: str, doc: dict, checker: str) -> Record:
    answer, mv_ok, mn_answer, mn_ok = verdicts(response, doc["answer"], doc["minerva_answer"])
    return Record(
        checker=checker,
        correct=mv_ok if checker == "math_verify" else mn_ok,
        extracted={"math_verify": _clip(answer), "minerva": _clip(mn_answer)},
        gold={"math_verify": doc["answer"], "minerva": doc["minerva_answer"]},
        verdicts={"math_verify": mv_ok, "minerva": mn_ok},
    )


class ScoreAnswers(Filter):
    """Replace each response by its scoring `Record`; `checker` picks whose verdict is `correct`."""

    def __init__(self, checker: str = "math_verify") -> None:
        if checker not in CHECKERS:
            raise ValueError(f"checker must be one of {CHECKERS}, not {checker!r}")
        self.checker = checker

    def apply(self, resps, docs):
        return [[score(r, doc, self.checker) for r in rs] for rs, doc in zip(resps, docs)]


def process_results(doc: dict, results: list) -> dict[str, int]:
    """`exact_match`: 1 if the first response's record says correct."""
    record = results[0]
    return {"exact_match": int(bool(record["correct"]))}
