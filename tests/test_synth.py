"""The synthetic tasks: deterministic, tiered, disjoint, correct gold, and scored like gsm8k/MBPP."""

from __future__ import annotations

import itertools
import re

import pytest

from dllm_eval.synth import common, evaluate, synth_code, synth_math

# ---------------------------------------------------------------------------------------------
# Generation: determinism, tiers, disjointness
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def math_test():
    return synth_math.test_docs()


@pytest.fixture(scope="module")
def code_test():
    return synth_code.test_docs()


def test_generation_is_deterministic_from_the_seed(math_test, code_test):
    assert synth_math.test_docs() == math_test
    assert synth_code.test_docs() == code_test
    assert synth_math.test_docs(n=50, seed=1) != math_test[:50]
    first = list(itertools.islice(synth_math.stream(3), 20))
    assert first == list(itertools.islice(synth_math.stream(3), 20))
    assert first != list(itertools.islice(synth_math.stream(4), 20))


@pytest.mark.parametrize(("module", "n"), [(synth_math, 1000), (synth_code, 500)])
def test_test_split_size_and_interleaved_balanced_tiers(module, n, math_test, code_test):
    docs = math_test if module is synth_math else code_test
    assert len(docs) == n >= (1000 if module is synth_math else 500)
    assert [d["tier"] for d in docs[:8]] == [1, 2, 3, 4, 1, 2, 3, 4]  # --limit k covers every tier
    assert all(isinstance(d["tier"], int) for d in docs)
    counts = {t: sum(d["tier"] == t for d in docs) for t in common.TIERS}
    assert counts == dict.fromkeys(common.TIERS, n // 4)
    assert len({d["question"] for d in docs}) == n  # no duplicate problems
    assert [d["id"] for d in docs] == list(range(n))


@pytest.mark.parametrize("module", [synth_math, synth_code])
def test_train_and_test_are_disjoint(module, math_test, code_test):
    test = math_test if module is synth_math else code_test
    test_keys = {d["key"] for d in test}
    test_questions = {d["question"] for d in test}
    assert all(int(k, 16) % common.TEST_BUCKETS == 0 for k in test_keys)
    for stream_seed in (0, 1):
        train = list(itertools.islice(module.stream(stream_seed), 4000))
        assert not {d["key"] for d in train} & test_keys
        assert not {d["question"] for d in train} & test_questions
    split = module.train_docs()
    assert not {d["key"] for d in split} & test_keys


def test_training_stream_covers_all_tiers_and_hard_ones_more():
    docs = list(itertools.islice(synth_math.stream(0), 4000))
    counts = [sum(d["tier"] == t for d in docs) for t in common.TIERS]
    assert min(counts) > 200
    assert counts[3] > counts[0]


def test_tiers_differ_in_difficulty(math_test, code_test):
    """More operations and bigger numbers per tier; longer programs per tier."""
    for tier in common.TIERS:
        docs = [d for d in math_test if d["tier"] == tier]
        assert all(d["answer"].count("\n") == tier for d in docs)  # one line per operation
        if tier == 1:
            assert all(re.fullmatch(r"\d+[+-]\d+=\d+", d["answer"].split("\n")[0]) for d in docs)
    biggest = [max(int(x) for d in math_test if d["tier"] == t for x in re.findall(r"\d+", d["answer"]))
               for t in common.TIERS]
    assert biggest[0] < 100 <= biggest[1] < 1000 <= min(biggest[2:])
    for doc in math_test:  # multipliers: none at tier 1, one digit at tier 2, 11-49 at tiers 3-4
        factors = [sorted(map(int, re.match(r"(\d+)\*(\d+)=", line).groups()))
                   for line in doc["answer"].split("\n") if "*" in line]
        if doc["tier"] == 1:
            assert not factors
        elif doc["tier"] == 2:
            assert all(low <= 9 for low, _ in factors)
        else:
            assert any(high >= 11 for _, high in factors)
    for doc in math_test:  # tier 3 tells its story with two-digit numbers, tier 4 with three-digit ones
        numbers = [int(x) for x in re.findall(r"\d+", doc["question"])]
        if doc["tier"] == 3:
            assert all(n < 100 for n in numbers)
        elif doc["tier"] == 4:
            assert numbers[0] >= 100
    lines = [sum(d["code"].count("\n") for d in code_test if d["tier"] == t) for t in common.TIERS]
    assert lines == sorted(lines) and len(set(lines)) == 4


def test_code_tiers_state_harder_constants_and_the_code_works_them_out(code_test):
    """Tier 1: plain numbers; 2: a two-digit times a one-digit number; 3: a product of two
    two-digit numbers; 4: a three-digit times a two-digit number. The reference code writes the
    calculation in a comment and uses its result, both computed here from the words alone."""
    stated = re.compile(r"the product of (\d+) and (\d+)")
    expected = {1: [], 2: [(2, 1)], 3: [(2, 2)], 4: [(3, 2)]}
    for doc in code_test:
        found = stated.findall(doc["question"])
        assert [tuple(sorted((len(a), len(b)), reverse=True)) for a, b in found] == expected[doc["tier"]]
        for a, b in found:
            product = int(a) * int(b)
            assert f"    # {a}*{b}={product}\n" in doc["code"], doc["code"]
            assert re.search(rf"x [-+*] {product} for", doc["code"]), doc["code"]


# ---------------------------------------------------------------------------------------------
# Gold answers, recomputed independently
# ---------------------------------------------------------------------------------------------

_OPS = [
    (re.compile(r"(?:buys|finds|gets) (\d+) more"), lambda v, n: v + n),
    (re.compile(r"gives (?:him|her) (\d+) more"), lambda v, n: v + n),
    (re.compile(r"gives (\d+) to"), lambda v, n: v - n),
    (re.compile(r"(?:loses|sells|uses) (\d+)"), lambda v, n: v - n),
    (re.compile(r"(\d+) times as many"), lambda v, n: v * n),
    (re.compile(r"(\d+) equal (?:piles|shares)"), lambda v, n: v / n),
]


def _solve_from_text(question: str) -> float:
    """Read the story sentence by sentence and apply each change: no use of the generator."""
    sentences = [s for s in re.split(r"(?<=[.?])\s+", question) if s]
    value = float(re.search(r"has (\d+) ", sentences[0]).group(1))
    for sentence in sentences[1:-1]:
        hits = [(rx.search(sentence), fn) for rx, fn in _OPS]
        hits = [(m, fn) for m, fn in hits if m]
        assert len(hits) == 1, sentence
        value = hits[0][1](value, int(hits[0][0].group(1)))
    assert sentences[-1].startswith("How many")
    return value


def test_math_gold_answers_are_correct(math_test):
    for doc in math_test:
        expected = _solve_from_text(doc["question"])
        assert expected == int(expected) and expected >= 0, doc  # divisions are exact
        assert doc["target"] == str(int(expected))
        *lines, last = doc["answer"].split("\n")
        assert last == f"#### {doc['target']}"
        for line in lines:  # every calculator line is true arithmetic
            left, right = line.split("=")
            assert eval(left.replace("/", "//")) == int(right), line
        assert len(tokens_upper_bound(doc["answer"])) < synth_math.GEN_LENGTH


def tokens_upper_bound(answer: str) -> list[str]:
    """Characters: each digit/operator/newline is at most one token, so this bounds the length."""
    return list(" " + answer)


def test_code_gold_programs_pass_their_asserts(code_test):
    for doc in code_test[:200]:
        namespace: dict = {}
        exec(doc["code"], namespace)
        for test in doc["test_list"]:
            exec(test, namespace)
        assert len(doc["test_list"]) == 3
        assert doc["code"].startswith(f"def {doc['entry_point']}(xs):")


def test_code_gold_fails_when_a_constant_is_wrong(code_test):
    """The asserts are not vacuous: breaking the program breaks at least one assert for most docs."""
    broken = 0
    for doc in code_test[:100]:
        plain = re.sub(r"^ *#.*\n", "", doc["code"], flags=re.M)  # the scratch comments do not run
        code = re.sub(r"(\d+)", lambda m: str(int(m.group(1)) + 1), plain, count=1)
        code = code.replace("sum(xs)", "len(xs)") if code == plain else code
        namespace: dict = {}
        try:
            exec(code, namespace)
            for test in doc["test_list"]:
                exec(test, namespace)
        except Exception:
            broken += 1
    assert broken >= 60


# ---------------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------------

MATH_DOC = {"tier": 2, "answer": "12+7=19\n19*2=38\n#### 38", "target": "38"}


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (" 12+7=19\n19*2=38\n#### 38", 1.0),
        ("#### 38.", 1.0),
        ("#### 3,8", 1.0),  # gsm8k ignores commas
        (" 12+7=19\n19*2=36\n#### 36", 0.0),
        ("the answer is 38", 0.0),  # strict-match needs '#### '
    ],
)
def test_math_scoring_matches_gsm8k_strict_match(response, expected):
    from lm_eval.filters.extraction import RegexFilter

    strict = RegexFilter(regex_pattern=r"#### (\-?[0-9\.\,]+)", group_select=0)
    filtered = next(iter(strict.apply([[response]], [MATH_DOC])))[0]
    scores = synth_math.process_results(MATH_DOC, [filtered])
    assert scores == {"exact_match": expected, "exact_match_tier1": None, "exact_match_tier2": expected,
                      "exact_match_tier3": None, "exact_match_tier4": None}
    assert evaluate.exact_match(evaluate.strict_match(response), MATH_DOC["answer"]) == bool(expected)
    assert evaluate.strict_match(response) == filtered


def test_code_scoring_runs_the_asserts():
    doc = synth_code.test_docs(n=4)[1]
    good = synth_code.process_results(doc, ["\n" + doc["code"]])
    assert good == {"pass_at_1": 1.0, **{f"pass_at_1_tier{k}": 1.0 if k == doc["tier"] else None for k in (1, 2, 3, 4)}}
    fenced = synth_code.process_results(doc, ["Here:\n```python\n" + doc["code"] + "\n```\n"])
    assert fenced["pass_at_1"] == 1.0
    wrong = synth_code.process_results(doc, [doc["code"].replace("return", "return 1 + ", 1)])
    assert wrong["pass_at_1"] == 0.0
    assert synth_code.process_results(doc, ["def oops(:"])["pass_at_1"] == 0.0


def test_lm_eval_loads_the_tasks_with_the_trained_prompt_format():
    from pathlib import Path

    from lm_eval.tasks import TaskManager

    tasks = Path(__file__).resolve().parents[1] / "tasks"
    loaded = TaskManager(include_path=str(tasks)).load(["synth_math", "synth_code"])["tasks"]
    math_task, code_task = loaded["synth_math"], loaded["synth_code"]
    docs = list(math_task.test_docs())
    assert len(docs) == synth_math.N_TEST and docs[0]["tier"] == 1
    assert math_task.doc_to_text(docs[0]) == synth_math.doc_to_text(synth_math.test_docs(n=1)[0])
    assert math_task.config.generation_kwargs["max_gen_toks"] == synth_math.GEN_LENGTH
    assert code_task.config.generation_kwargs["max_gen_toks"] == synth_code.GEN_LENGTH
    assert len(list(code_task.test_docs())) == synth_code.N_TEST
    assert math_task.config.num_fewshot == 0


@pytest.mark.slow
def test_lm_eval_end_to_end_with_a_perfect_model():
    """Filters, process_results and the per-tier aggregation, through lm-eval's evaluator."""
    from pathlib import Path

    from lm_eval import simple_evaluate
    from lm_eval.api.model import LM
    from lm_eval.tasks import TaskManager

    by_prompt = {synth_math.doc_to_text(d): " " + d["answer"] for d in synth_math.test_docs()}

    class Oracle(LM):
        def generate_until(self, requests, disable_tqdm=False):
            return [by_prompt[r.args[0]] if i % 3 else "#### -1" for i, r in enumerate(requests)]

        def loglikelihood(self, requests, disable_tqdm=False):
            raise NotImplementedError

        def loglikelihood_rolling(self, requests, disable_tqdm=False):
            raise NotImplementedError

    tasks = Path(__file__).resolve().parents[1] / "tasks"
    out = simple_evaluate(model=Oracle(), tasks=["synth_math"], limit=24, log_samples=False,
                          task_manager=TaskManager(include_path=str(tasks)))
    res = out["results"]["synth_math"]
    assert res["exact_match,strict-match"] == pytest.approx(16 / 24)
    for tier in common.TIERS:
        assert f"exact_match_tier{tier},strict-match" in res
