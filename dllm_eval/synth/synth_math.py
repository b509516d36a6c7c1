"""`synth_math`: GSM8K-style word problems in four difficulty tiers, generated from a seed.

A problem tells a short story about one quantity that changes once per sentence; the solution
writes one calculator line per change (``12+7=19``) and ends with ``#### <number>``, which is
what gsm8k's strict-match filter extracts. Tiers differ in the number of operations (1 to 4),
which operations appear (only + and - at tier 1; x and / by one digit at tier 2; at least one
multiplication by a two-digit number at tiers 3 and 4) and the size of the numbers (two digits
at tier 1; two-digit start and operands at tier 3, three-digit ones at tier 4, values up to four
digits at both), so accuracy falls from tier to tier. Every solution fits the 64-token canvas.

The solution is explicit, step by step, so a small model can partly solve even tier 4: each
line is one arithmetic operation on numbers that are either in the question or on the line
before. The operands of + and x are written in either order (at random), as people do; that
harmless ambiguity is what makes over-eager parallel decoding (a low confidence threshold)
commit inconsistent tokens, which the scheduler comparisons are meant to expose.
"""

from __future__ import annotations

import random
from typing import Any

from dllm_eval.synth.common import (
    Doc,
    as_dataset_dict,
    interleaved_docs,
    tier_metrics,
    training_stream,
)

TEST_SEED = 2024
N_TEST = 1000
N_TRAIN_SPLIT = 200  # the lm-eval "train" split (few-shot pool); training itself streams problems
GEN_LENGTH = 64  # generation canvas (tokens); every solution fits with room for EOS
MAX_ANSWER_CHARS = 60  # digits and operators are one token each, so this bounds the answer's tokens
UNTIL = ("Question:", "\n\n")  # stop strings, as generation_kwargs.until in tasks/synth/synth_math.yaml
TRAIN_TIER_WEIGHTS = (0.1, 0.2, 0.3, 0.4)  # every tier's steps recur in the harder tiers

NAMES = (
    ("Mia", "she", "her"), ("Leo", "he", "him"), ("Ava", "she", "her"), ("Sam", "he", "him"),
    ("Zoe", "she", "her"), ("Max", "he", "him"), ("Ivy", "she", "her"), ("Ben", "he", "him"),
    ("Emma", "she", "her"), ("Noah", "he", "him"), ("Lily", "she", "her"), ("Jack", "he", "him"),
    ("Ella", "she", "her"), ("Owen", "he", "him"), ("Ruby", "she", "her"), ("Theo", "he", "him"),
    ("Nora", "she", "her"), ("Eli", "he", "him"), ("Rosa", "she", "her"), ("Omar", "he", "him"),
)
ITEMS = (
    "apples", "pens", "coins", "stamps", "marbles", "books", "cards", "shells", "beads", "stickers",
    "cookies", "rocks", "toys", "seeds", "buttons", "candles", "shirts", "plums", "nuts", "bottles",
)

# One sentence per operation. {S}/{s}: subject pronoun (capitalised / not), {o}: object pronoun,
# {F}: another person, {n}: the operand, {items}: the thing counted.
PHRASES: dict[str, tuple[str, ...]] = {
    "+": ("{S} buys {n} more.", "{S} finds {n} more.", "{F} gives {o} {n} more.", "{S} gets {n} more {items}."),
    "-": ("{S} gives {n} to {F}.", "{S} loses {n}.", "{S} sells {n}.", "{S} uses {n} of them."),
    "*": ("{S} ends up with {n} times as many.", "Then {s} has {n} times as many {items}."),
    "/": ("{S} splits them into {n} equal piles and keeps one pile.", "{S} keeps one of {n} equal shares."),
}


class TierSpec:
    """Ranges of one tier: start value, + and - operands, x and / factors, largest allowed value."""

    def __init__(self, n_ops: int, ops: str, start: tuple[int, int], addend: tuple[int, int],
                 mul: tuple[int, int], div: tuple[int, int], max_value: int, need: str = "") -> None:
        self.n_ops, self.ops, self.start, self.addend = n_ops, ops, start, addend
        self.mul, self.div, self.max_value, self.need = mul, div, max_value, need


TIER_SPECS: dict[int, TierSpec] = {
    1: TierSpec(1, "+-", (3, 60), (1, 40), (0, 0), (0, 0), 99),
    2: TierSpec(2, "+-*/", (10, 99), (10, 99), (2, 9), (2, 9), 999),
    3: TierSpec(3, "+-*/", (20, 99), (10, 99), (11, 49), (2, 9), 9999, need="*"),
    4: TierSpec(4, "+-*/", (100, 999), (100, 999), (11, 49), (2, 9), 9999, need="*"),
}


def _apply(value: int, op: str, n: int) -> int:
    if op == "+":
        return value + n
    if op == "-":
        return value - n
    if op == "*":
        return value * n
    return value // n


def _sample_ops(rng: random.Random, spec: TierSpec) -> tuple[int, list[tuple[str, int]]]:
    """Start value and (op, operand) list satisfying the tier's ranges; every value stays in 1..max."""
    while True:
        value = rng.randint(*spec.start)
        start, ops = value, []
        for _ in range(spec.n_ops):
            for _attempt in range(20):
                op = rng.choice(spec.ops)
                if op in "+-":
                    n = rng.randint(*spec.addend)
                elif op == "*":
                    n = rng.randint(*spec.mul)
                else:
                    divisors = [d for d in range(spec.div[0], spec.div[1] + 1) if value % d == 0]
                    if not divisors:
                        continue
                    n = rng.choice(divisors)
                new = _apply(value, op, n)
                if 1 <= new <= spec.max_value:
                    ops.append((op, n))
                    value = new
                    break
            else:
                break
        if len(ops) == spec.n_ops and (not spec.need or any(o in spec.need for o, _ in ops)):
            return start, ops


def _solution_lines(rng: random.Random, start: int, ops: list[tuple[str, int]]) -> tuple[list[str], int]:
    value, lines = start, []
    for op, n in ops:
        new = _apply(value, op, n)
        left, right = value, n
        if op in "+*" and rng.random() < 0.5:  # commutative: either order is a correct step
            left, right = right, left
        lines.append(f"{left}{op}{right}={new}")
        value = new
    return lines, value


def make_problem(rng: random.Random, tier: int) -> tuple[Doc, tuple]:
    """One problem of `tier` and its skeleton (tier, start, operations), which decides its split."""
    spec = TIER_SPECS[tier]
    start, ops = _sample_ops(rng, spec)
    name, subj, obj = rng.choice(NAMES)
    friend = rng.choice([n for n in NAMES if n[0] != name])[0]
    items = rng.choice(ITEMS)
    sentences = [f"{name} has {start} {items}."]
    for op, n in ops:
        template = rng.choice(PHRASES[op])
        sentences.append(template.format(S=subj.capitalize(), s=subj, o=obj, F=friend, n=n, items=items))
    sentences.append(f"How many {items} does {name} have now?")
    lines, final = _solution_lines(rng, start, ops)
    answer = "\n".join([*lines, f"#### {final}"])
    if len(answer) > MAX_ANSWER_CHARS:  # rare (four-digit values at tier 4): draw again
        return make_problem(rng, tier)
    doc = {
        "tier": tier,
        "question": " ".join(sentences),
        "answer": answer,
        "target": str(final),
    }
    return doc, (tier, start, tuple(ops))


def doc_to_text(doc: Doc) -> str:
    """The prompt, in lm-eval gsm8k's 0-shot format; the model is trained on exactly this."""
    return f"Question: {doc['question']}\nAnswer:"


def doc_to_answer(doc: Doc) -> str:
    """The text the model learns to generate after the prompt (a space, then the solution)."""
    return " " + doc["answer"]


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


# gsm8k's metric settings (lm-eval tasks/gsm8k/gsm8k.yaml), applied to the filtered response.
_EXACT_MATCH_KWARGS = {
    "ignore_case": True,
    "ignore_punctuation": False,
    "regexes_to_ignore": [",", "\\$", "(?s).*#### ", "\\.$"],
}


def process_results(doc: Doc, results: list[str]) -> dict[str, float]:
    """gsm8k's exact_match on the filtered answer, plus `exact_match_tier<k>` for this doc's tier."""
    from lm_eval.api.metrics import exact_match_hf_evaluate

    score = exact_match_hf_evaluate(predictions=[results[0]], references=[doc["answer"]], **_EXACT_MATCH_KWARGS)
    return tier_metrics("exact_match", float(score["exact_match"]), int(doc["tier"]))
