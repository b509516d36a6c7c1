"""`synth_code`: MBPP-style "write a function" problems in four tiers, scored by running asserts.

Every problem is a pipeline over a list of integers, described in words: tier k chains k list steps
(filters such as "keeps only the even numbers", maps such as "multiplies each number by 3",
reorderings, and a final reduction such as "returns the sum"). The reference solution writes
one line per step, so most of a problem is a translation of the words into code.

What makes a tier hard is arithmetic, as in `synth_math`: from tier 2 on, the constant of one
map step is stated as a calculation ("multiplies each number by the product of 23 and 17"). The
reference solution works it out in a comment, in synth_math's calculator format, and then uses
the result, as a programmer might::

    # 23*17=391
    xs = [x * 391 for x in xs]

A model that has learned the translation but not the arithmetic writes a wrong constant, and
the asserts catch it:

| tier | list steps | stated constant |
|---|---|---|
| 1 | 1 | none (plain numbers) |
| 2 | 2 | a product of a two-digit (11-49) and a one-digit number |
| 3 | 3 | a product of two two-digit numbers (11-49) |
| 4 | 4 | a product of a three-digit and a two-digit (11-49) number |

Writing the calculation itself (``x * (23 * 17)``) is just as correct, since scoring executes
the code. From tier 2 on, some problems are also told backwards (the final result first, then
"Before that, it ..." for each earlier step), so the code must be written in the reverse order
of the text. Three asserts with random inputs check a program, MBPP-style.

Programs are executed by the project's sandbox, `dllm_eval.scoring.check_asserts`.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dllm_eval.synth.common import (
    Doc,
    as_dataset_dict,
    interleaved_docs,
    tier_metrics,
    training_stream,
)

TEST_SEED = 4048
N_TEST = 500
N_TRAIN_SPLIT = 200
GEN_LENGTH = 96  # tier-4 functions take up to ~85 tokens; a whole number of 32-token blocks
UNTIL = ("\n\n\n",)  # stop strings, as generation_kwargs.until in tasks/synth/synth_code.yaml
TRAIN_TIER_WEIGHTS = (0.1, 0.2, 0.3, 0.4)  # the arithmetic of tiers 3-4 takes the most learning
EXEC_TIMEOUT = 5.0
MAX_CODE_TOKENS = 92  # `token_bound` of a program (+1 for the leading newline) stays below GEN_LENGTH
# Share of problems told backwards ("... returns the sum. Before that, it squares each number.
# Before that, ..."): the code must then be written in the reverse order of the sentences.
REVERSED_SHARE = {1: 0.0, 2: 0.25, 3: 0.5, 4: 0.5}

FUNC_VERBS = ("process", "transform", "compute", "reduce", "handle", "solve", "clean", "calc")
FUNC_NOUNS = ("nums", "values", "items", "data", "list", "scores", "points", "counts")


@dataclass(frozen=True)
class Step:
    """One pipeline step: its words, its line of code (on `xs`), and what it does to a list."""

    text: str
    code: str
    run: Callable[[list[int]], Any]


def _transforms(rng: random.Random) -> Step:
    """A list -> list step with freshly drawn constants."""
    kind = rng.randrange(12)
    k = rng.randint(2, 9)
    if kind == 0:
        return Step("keeps only the even numbers", "xs = [x for x in xs if x % 2 == 0]",
                    lambda xs: [x for x in xs if x % 2 == 0])
    if kind == 1:
        return Step("keeps only the odd numbers", "xs = [x for x in xs if x % 2 == 1]",
                    lambda xs: [x for x in xs if x % 2 == 1])
    if kind == 2:
        return Step(f"keeps only the numbers greater than {k}", f"xs = [x for x in xs if x > {k}]",
                    lambda xs: [x for x in xs if x > k])
    if kind == 3:
        return Step(f"keeps only the numbers less than {k + 5}", f"xs = [x for x in xs if x < {k + 5}]",
                    lambda xs: [x for x in xs if x < k + 5])
    if kind == 4:
        m = rng.randint(2, 5)
        return Step(f"keeps only the multiples of {m}", f"xs = [x for x in xs if x % {m} == 0]",
                    lambda xs: [x for x in xs if x % m == 0])
    if kind == 5:
        return Step(f"adds {k} to each number", f"xs = [x + {k} for x in xs]", lambda xs: [x + k for x in xs])
    if kind == 6:
        return Step(f"subtracts {k} from each number", f"xs = [x - {k} for x in xs]",
                    lambda xs: [x - k for x in xs])
    if kind == 7:
        return Step(f"multiplies each number by {k}", f"xs = [x * {k} for x in xs]",
                    lambda xs: [x * k for x in xs])
    if kind == 8:
        return Step("squares each number", "xs = [x * x for x in xs]", lambda xs: [x * x for x in xs])
    if kind == 9:
        return Step("sorts the numbers", "xs = sorted(xs)", sorted)
    if kind == 10:
        return Step("reverses the order", "xs = xs[::-1]", lambda xs: xs[::-1])
    return Step("sorts the numbers from largest to smallest", "xs = sorted(xs, reverse=True)",
                lambda xs: sorted(xs, reverse=True))


# Stated constants per tier: for each one, the calculation and its operand ranges.
ARITH_BY_TIER: dict[int, tuple[tuple[str, tuple[int, int], tuple[int, int]], ...]] = {
    1: (),
    2: (("product", (11, 49), (2, 9)),),
    3: (("product", (11, 49), (11, 49)),),
    4: (("product", (100, 999), (11, 49)),),
}


def _arith_map(rng: random.Random, op: str, a_range: tuple[int, int], b_range: tuple[int, int]) -> Step:
    """A map step (add, subtract or multiply) whose constant is stated as a sum or a product.

    The code first works the calculation out in a comment, in synth_math's calculator format
    (``# 23*17=391``), then uses the result: the same arithmetic skill as the word problems.
    """
    a, b = rng.randint(*a_range), rng.randint(*b_range)
    if rng.random() < 0.5:
        a, b = b, a
    k = a + b if op == "sum" else a * b
    stated = f"the {op} of {a} and {b}"
    scratch = f"# {a}{'+' if op == 'sum' else '*'}{b}={k}\n"
    kind = rng.randrange(3)
    if kind == 0:
        return Step(f"adds {stated} to each number", f"{scratch}xs = [x + {k} for x in xs]",
                    lambda xs: [x + k for x in xs])
    if kind == 1:
        return Step(f"subtracts {stated} from each number", f"{scratch}xs = [x - {k} for x in xs]",
                    lambda xs: [x - k for x in xs])
    return Step(f"multiplies each number by {stated}", f"{scratch}xs = [x * {k} for x in xs]",
                lambda xs: [x * k for x in xs])


# Final steps, written on the `return` line. `nonempty`: undefined on an empty list.
FINALS: tuple[tuple[str, str, Callable[[list[int]], Any], bool], ...] = (
    ("returns the list", "return xs", list, False),
    ("returns the sum", "return sum(xs)", sum, False),
    ("returns how many numbers are left", "return len(xs)", len, False),
    ("returns the largest number", "return max(xs)", max, True),
    ("returns the smallest number", "return min(xs)", min, True),
    ("returns the first number", "return xs[0]", lambda xs: xs[0], True),
)


def token_bound(code: str) -> int:
    """An upper bound on the program's length in the embedded tokenizer's tokens, without it:
    every digit is one token, and the rest of this code takes at least 2.25 characters a token
    (checked against the shipped tokenizer in tests/test_embedded.py)."""
    digits = sum(ch.isdigit() for ch in code)
    return digits + math.ceil((len(code) - digits) / 2.25)


def _run(steps: list[Step], final: Callable[[list[int]], Any], xs: list[int]) -> Any:
    for step in steps:
        xs = step.run(xs)
    return final(xs)


def _inputs(rng: random.Random, steps: list[Step], nonempty: bool) -> list[list[int]] | None:
    """Three distinct input lists on which the pipeline is defined (non-empty where the final needs it)."""
    found: list[list[int]] = []
    for _ in range(60):
        xs = [rng.randint(0, 20) for _ in range(rng.randint(3, 7))]
        if xs in found:
            continue
        mid = xs
        for step in steps:
            mid = step.run(mid)
        if nonempty and not mid:
            continue
        found.append(xs)
        if len(found) == 3:
            return found
    return None


def make_problem(rng: random.Random, tier: int) -> tuple[Doc, tuple]:
    """One problem of `tier` (`tier` list steps, then a final) and its skeleton (the code lines)."""
    while True:
        steps = [_transforms(rng) for _ in range(tier)]
        arith = ARITH_BY_TIER[tier]
        for position, spec in zip(rng.sample(range(tier), len(arith)), arith):
            steps[position] = _arith_map(rng, *spec)
        final_text, final_code, final_fn, nonempty = rng.choice(FINALS)
        if any(a.code == b.code for a, b in itertools.pairwise(steps)):  # no step twice in a row
            continue
        inputs = _inputs(rng, steps, nonempty)
        if inputs is not None:
            break
    name = f"{rng.choice(FUNC_VERBS)}_{rng.choice(FUNC_NOUNS)}"
    if rng.random() < REVERSED_SHARE[tier]:
        text = " ".join([f"Write a function {name}(xs) that takes a list of integers and {final_text}.",
                         *(f"Before that, it {s.text}." for s in reversed(steps))])
    else:
        clauses = [s.text for s in steps] + [final_text]
        what = ", then ".join(clauses[:-1]) + ", and " + clauses[-1]  # at least one step and the final
        text = f"Write a function {name}(xs) that takes a list of integers, {what}."
    body = [line for s in steps for line in s.code.split("\n")] + [final_code]
    code = f"def {name}(xs):\n" + "\n".join("    " + line for line in body)
    if token_bound(code) + 1 > MAX_CODE_TOKENS:
        return make_problem(rng, tier)
    tests = [f"assert {name}({xs!r}) == {_run(steps, final_fn, xs)!r}" for xs in inputs]
    doc = {"tier": tier, "question": text, "code": code, "test_list": tests, "entry_point": name}
    return doc, (tier, tuple(body))


def doc_to_text(doc: Doc) -> str:
    """The prompt; the model is trained on exactly this format."""
    return f"Task: {doc['question']}\nCode:"


def doc_to_answer(doc: Doc) -> str:
    """Training target: a newline, then the function (a leading newline keeps the code valid)."""
    return "\n" + doc["code"]


def doc_to_target(doc: Doc) -> str:
    """What lm-eval logs as the target: the three asserts, as MBPP does."""
    return "\n".join(doc["test_list"])


def test_docs(n: int = N_TEST, seed: int = TEST_SEED) -> list[Doc]:
    return interleaved_docs(make_problem, n, seed, "test")


def train_docs(n: int = N_TRAIN_SPLIT, seed: int = TEST_SEED) -> list[Doc]:
    return interleaved_docs(make_problem, n, seed, "train")


def stream(seed: int):
    """Endless training problems for `dllm-eval train-tiny` (train bucket only)."""
    return training_stream(make_problem, seed, TRAIN_TIER_WEIGHTS)


def load(**_: Any):
    """lm-eval `custom_dataset` hook: train and test splits. Metadata kwargs (model_args...) are ignored."""
    return as_dataset_dict({"train": train_docs(), "test": test_docs()})


_FENCE = re.compile(r"```(?:python)?\n?(.*?)(?:```|$)", re.S)


def extract_program(response: str) -> str:
    """The code in a response: inside a Markdown fence if there is one, else the whole text."""
    match = _FENCE.search(response)
    return match.group(1) if match else response


def process_results(doc: Doc, results: list[str]) -> dict[str, float]:
    """pass@1 of the single greedy sample: the program passes all three asserts in the sandbox."""
    from dllm_eval.scoring import check_asserts

    result = check_asserts(extract_program(results[0]), list(doc["test_list"]), timeout=EXEC_TIMEOUT)
    return tier_metrics("pass_at_1", float(result.passed), int(doc["tier"]))
