"""Postprocessing steps, each against hand-written expected output (the independent oracle)."""

from __future__ import annotations

import pytest

from dllm_eval.errors import UserError
from dllm_eval.scoring import check_asserts
from dllm_eval.scoring.postprocess import (
    PostprocessConfig,
    apply_stop_strings,
    build_program,
    code_blocks,
    entry_point_from_tests,
    extract_code_block,
    longest_parseable_window,
    reachable_definitions,
)

# ---------------------------------------------------------------- stop strings


def test_stop_strings_cut_at_the_earliest_match():
    text = "    return x\n\ndef other():\n    pass\n# comment\n"
    assert apply_stop_strings(text, ["\n#", "\ndef"]) == "    return x\n"
    assert apply_stop_strings(text, []) == text
    assert apply_stop_strings(text, ["", "[DONE]"]) == text
    assert apply_stop_strings("code[DONE]more", ["[DONE]"]) == "code"


# ---------------------------------------------------------------- code blocks

CHATTY = """Sure! Here is a helper:
```python
def helper(x):
    return x * 2
```
And the solution:
```py
def solve(x):
    return helper(x) + 1
```
Hope this helps."""


def test_code_blocks_are_found_in_order():
    assert code_blocks(CHATTY) == ["def helper(x):\n    return x * 2\n", "def solve(x):\n    return helper(x) + 1\n"]


def test_block_defining_the_entry_point_is_preferred():
    assert extract_code_block(CHATTY, entry_point="solve").startswith("def solve(x):")
    assert extract_code_block(CHATTY).startswith("def helper(x):")
    assert extract_code_block(CHATTY, entry_point="missing").startswith("def helper(x):")


def test_fence_opened_by_the_prompt_and_unclosed_blocks():
    # gen_prefix ended with ```python: the response starts inside the block
    assert extract_code_block("    return 1\n```\nExplanation.", fence_open=True) == "    return 1\n"
    # a response cut by the length limit inside a block still yields the block
    assert extract_code_block("Here:\n```python\ndef f():\n    return 1") == "def f():\n    return 1\n"
    assert extract_code_block("no fences at all") is None
    assert extract_code_block("```\n```") is None


def test_inline_backticks_are_not_fences():
    text = "```python\ns = '```'\nprint(s)\n```"
    assert extract_code_block(text) == "s = '```'\nprint(s)\n"


# ---------------------------------------------------------------- longest parseable window


def test_whole_program_that_parses_is_unchanged():
    code = "def f(x):\n    return x\n"
    assert longest_parseable_window(code) == code


def test_trailing_truncation_and_leading_prose_are_dropped():
    code = "Here is the code:\nimport math\n\ndef f(x):\n    return math.sqrt(x)\n\ndef g(y):\n    return (y +"
    assert longest_parseable_window(code) == "import math\n\ndef f(x):\n    return math.sqrt(x)\n"


def test_window_is_the_longest_not_the_first():
    code = "x = 1\n)))\na = 1\nb = 2\nc = 3\n"
    assert longest_parseable_window(code) == "a = 1\nb = 2\nc = 3\n"


def test_nothing_parseable_gives_empty_and_crlf_is_normalised():
    assert longest_parseable_window(")))\n(((") == ""
    assert longest_parseable_window("x = 1\r\ny = 2\r\n") == "x = 1\ny = 2\n"


def test_window_search_is_bounded():
    code = "\n".join(f"v{i} = (" for i in range(300))
    assert longest_parseable_window(code, budget=50) == ""


def test_max_window_lines():
    code = "a = 1\nb = 2\nc = 3\n"
    assert longest_parseable_window(code, max_lines=2) == "a = 1\nb = 2"


# ---------------------------------------------------------------- reachable definitions

MESSY = '''import math
from typing import List

SCALE = 3
UNUSED = 99

def helper(x):
    return x * SCALE

def unrelated():
    return 0

def solve(values: List[int]) -> int:
    return sum(helper(v) for v in values) + math.floor(0.5)

print(solve([1, 2]))
assert solve([1]) == 3

if __name__ == "__main__":
    solve([])
'''


def test_reachable_definitions_keep_what_the_entry_point_needs():
    expected = '''import math

from typing import List

SCALE = 3

def helper(x):
    return x * SCALE

def solve(values: List[int]) -> int:
    return sum(helper(v) for v in values) + math.floor(0.5)
'''
    assert reachable_definitions(MESSY, "solve") == expected


def test_last_duplicate_definition_wins_and_decorators_and_classes_are_kept():
    code = (
        "import functools\n\ndef solve(x):\n    return -1\n\nclass Box:\n    def __init__(self, v):\n        self.v = v\n\n"
        "@functools.lru_cache(maxsize=None)\ndef solve(x):\n    return Box(x).v\n\nsolve(3)\n"
    )
    expected = (
        "import functools\n\nclass Box:\n    def __init__(self, v):\n        self.v = v\n\n"
        "@functools.lru_cache(maxsize=None)\ndef solve(x):\n    return Box(x).v\n"
    )
    assert reachable_definitions(code, "solve") == expected


def test_reachable_definitions_never_destroy_a_program():
    assert reachable_definitions("def other():\n    pass\n", "solve") == "def other():\n    pass\n"
    assert reachable_definitions("def broken(:\n", "broken") == "def broken(:\n"


# ---------------------------------------------------------------- entry points from tests


def test_entry_point_from_mbpp_style_tests():
    tests = ["assert set(similar_elements((3, 4), (4, 5))) == set((4,))", "assert similar_elements((1,), (1,)) == (1,)"]
    assert entry_point_from_tests(tests) == "similar_elements"
    assert entry_point_from_tests(tests, defined={"similar_elements", "set"}) == "set"
    assert entry_point_from_tests(["assert len([]) == 0"]) is None


# ---------------------------------------------------------------- configuration and the full pipeline


def test_config_validation():
    assert PostprocessConfig.from_kwargs(stop="[DONE]").stop == ("[DONE]",)
    with pytest.raises(UserError, match="unknown postprocessing option"):
        PostprocessConfig.from_kwargs(sanitise=True)
    with pytest.raises(UserError, match="prefix must be one of"):
        PostprocessConfig.from_kwargs(prefix="suffix")


PROMPT = 'def add_one(x: int) -> int:\n    """Return x + 1."""\n'
TESTS = ["def check(candidate):\n    assert candidate(1) == 2\n    assert candidate(-1) == 0\n", "check(add_one)"]


def test_lm_eval_rule_prompt_plus_completion_cut_at_stops():
    config = PostprocessConfig.from_kwargs(prefix="prompt", stop=["\ndef", "\nprint"])
    built = build_program("    return x + 1\nprint(add_one(1))\n", config, prompt=PROMPT, entry_point="add_one")
    assert built.program == PROMPT + "    return x + 1"
    assert built.raw_program == PROMPT + "    return x + 1\nprint(add_one(1))\n"
    assert built.steps == ["stop"]
    assert check_asserts(built.program, TESTS).passed


def test_sanitize_rule_rescues_a_chatty_diffusion_response():
    response = (
        "Here is my solution:\n```python\nimport math\n\ndef add_one(x: int) -> int:\n    return x + 1\n\n"
        "print(add_one(41))\nassert add_one(1) == 3\n```\nThis adds one. <|eot_id|><|eot_id|>"
    )
    config = PostprocessConfig.from_kwargs(prefix="prompt_newline", code_block=True, longest_parseable=True,
                                           reachable_only=True)
    built = build_program(response, config, prompt=PROMPT, entry_point="add_one")
    assert built.steps == ["code_block", "reachable_only"]
    assert built.program == "import math\n\ndef add_one(x: int) -> int:\n    return x + 1\n"
    assert check_asserts(built.program, TESTS).passed
    # the same response without cleaning is a failing program (prose is a syntax error)
    assert not check_asserts(built.raw_program, TESTS).passed


def test_sanitize_rule_for_mbpp_infers_the_entry_point():
    response = "def is_even(n):\n    return n % 2 == 0\n\nprint(is_even(3))\n[DONE] trailing"
    config = PostprocessConfig.from_kwargs(stop=["[DONE]"], code_block=True, longest_parseable=True,
                                           reachable_only=True)
    tests = ["assert is_even(2) == True", "assert is_even(3) == False"]
    built = build_program(response, config, tests=tests)
    assert built.entry_point == "is_even"
    assert built.program == "def is_even(n):\n    return n % 2 == 0\n"
    assert check_asserts(built.program, tests).passed


def test_all_steps_off_is_the_identity():
    built = build_program("anything at all ```", PostprocessConfig())
    assert built.program == built.raw_program == "anything at all ```" and built.steps == []
