"""Turning a model's response into the program that gets executed: explicit, switchable steps.

Why this is its own module: how a response is cleaned moves HumanEval scores by tens of points
(harness comparisons in the reference notes), and diffusion models make it worse: they fill a
fixed-length canvas, so a correct function is often followed by chatter, a second copy, or a
half-written tail. Every step below is off unless a task's YAML turns it on, the YAML
parameters are recorded in lm-eval's results config, and each sample records the raw and the
cleaned program plus the list of steps that changed it.

Steps, in the order they apply:
  1. `stop`               cut the response at the first stop string (as generate_until does);
  2. `code_block`         keep a fenced ``` block (the one defining the entry point, else the first);
  3. `prefix`             join with the prompt ("prompt": prompt + response, lm-eval's
                          HumanEval; "prompt_newline": prompt + "\\n" + code, Dream/Fast-dLLM's);
  4. `longest_parseable`  normalise CRLF, then keep the longest run of consecutive lines that
                          parses;
  5. `reachable_only`     keep imports plus the top-level definitions reachable from the entry
                          point (drops demo calls, prints, stray asserts and dead duplicates).
"""

from __future__ import annotations

import ast
import builtins
import re
from dataclasses import asdict, dataclass, field

from dllm_eval.errors import UserError

PREFIX_MODES = ("none", "prompt", "prompt_newline")
FENCE = re.compile(r"^[ \t]*```[^\n`]*$", re.MULTILINE)  # a line that opens or closes a block
DEFAULT_PARSE_BUDGET = 4000  # ast.parse calls allowed per program in longest_parseable_window


@dataclass(frozen=True)
class PostprocessConfig:
    """Which cleaning steps to apply; built from a filter's YAML keyword arguments."""

    stop: tuple[str, ...] = ()
    code_block: bool = False
    fence_open: bool = False  # the response starts inside a fence the prompt/gen_prefix opened
    prefix: str = "none"
    longest_parseable: bool = False
    reachable_only: bool = False
    max_window_lines: int | None = None  # longest_parseable looks at this many leading lines

    @classmethod
    def from_kwargs(cls, **kwargs) -> PostprocessConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise UserError(f"unknown postprocessing option(s) {unknown}; known: {sorted(known)}")
        stop = kwargs.get("stop") or ()
        if isinstance(stop, str):
            stop = (stop,)
        kwargs["stop"] = tuple(str(s) for s in stop)
        config = cls(**kwargs)
        if config.prefix not in PREFIX_MODES:
            raise UserError(f"postprocessing prefix must be one of {PREFIX_MODES}, not {config.prefix!r}")
        return config

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Program:
    """A cleaned program with its provenance, as recorded per sample."""

    raw_program: str  # prefix + response with no cleaning at all
    program: str  # what is executed
    steps: list[str] = field(default_factory=list)  # the steps that changed something
    entry_point: str | None = None


def apply_stop_strings(text: str, stops: tuple[str, ...] | list[str]) -> str:
    """Cut `text` at the earliest occurrence of any (non-empty) stop string."""
    cut = len(text)
    for stop in stops:
        if stop:
            at = text.find(stop)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]


def code_blocks(text: str, *, fence_open: bool = False) -> list[str]:
    """The contents of the fenced blocks in `text`, in order.

    A fence is a line made of ``` plus an optional language tag. With `fence_open`, the text
    before the first fence is a block too (the prompt or gen_prefix opened it). An unclosed last
    block runs to the end of the text: a response cut by the length limit still counts.
    """
    fences = list(FENCE.finditer(text))
    blocks: list[str] = []
    position, inside = 0, fence_open
    for fence in fences:
        if inside:
            blocks.append(text[position : fence.start()])
        position = fence.end() + 1  # skip the newline after the fence line
        inside = not inside
    if inside and position <= len(text):
        blocks.append(text[position:])
    return [b.rstrip("\n") + "\n" if b.strip() else "" for b in blocks]


def extract_code_block(text: str, *, entry_point: str | None = None, fence_open: bool = False) -> str | None:
    """The fenced block that defines `entry_point`, else the first non-empty block; None if there is none."""
    blocks = [b for b in code_blocks(text, fence_open=fence_open) if b.strip()]
    if not blocks:
        return None
    if entry_point:
        pattern = re.compile(rf"^\s*(?:async\s+)?def\s+{re.escape(entry_point)}\s*\(", re.MULTILINE)
        for block in blocks:
            if pattern.search(block):
                return block
    return blocks[0]


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return False
    return True


def longest_parseable_window(
    code: str, *, max_lines: int | None = None, budget: int = DEFAULT_PARSE_BUDGET
) -> str:
    """The longest run of consecutive lines that `ast.parse` accepts (the earliest on ties).

    A window can only start at an unindented, non-blank line (anything else is an
    "unexpected indent"), which keeps the search to a few thousand parses at most; `budget`
    caps it for pathological inputs, returning the best window found so far.
    """
    code = code.replace("\r\n", "\n").replace("\r", "\n")
    lines = code.split("\n")
    if max_lines is not None:
        lines = lines[:max_lines]
    joined = "\n".join(lines)
    if _parses(joined):
        return joined
    starts = [i for i, line in enumerate(lines) if line.strip() and not line[0].isspace()]
    best = (0, 0)
    for start in starts:
        for end in range(len(lines), start + (best[1] - best[0]), -1):
            if budget <= 0:
                return "\n".join(lines[best[0] : best[1]])
            budget -= 1
            if _parses("\n".join(lines[start:end])):
                best = (start, end)
                break
    window = "\n".join(lines[best[0] : best[1]])
    return window if window.strip() else ""


def _names_used(node: ast.AST) -> set[str]:
    """Every identifier a definition refers to (loads, attribute roots, decorator/base/default names)."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _definition_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    names = []
    for target in targets:
        names += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
    return names


def _segment(lines: list[str], node: ast.stmt) -> str:
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return "\n".join(lines[first - 1 : node.end_lineno])


def reachable_definitions(code: str, entry_point: str) -> str:
    """Keep imports and the top-level definitions `entry_point` needs; drop everything else.

    Functions, classes and assignments are nodes of a dependency graph (an edge for every name a
    definition mentions); the kept set is what the entry point reaches. When a name is defined
    twice only the last definition is kept, as that is the one Python would call. If the code
    does not parse or does not define the entry point, it is returned unchanged: cleaning must
    never turn a runnable program into an empty one.
    """
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return code
    body = tree.body
    last_definition: dict[str, int] = {}
    for index, node in enumerate(body):
        for name in _definition_names(node):
            last_definition[name] = index
    if entry_point not in last_definition:
        return code
    keep: set[int] = set()
    pending = [last_definition[entry_point]]
    while pending:
        index = pending.pop()
        if index in keep:
            continue
        keep.add(index)
        for name in _names_used(body[index]):
            target = last_definition.get(name)
            if target is not None and target not in keep:
                pending.append(target)
    lines = code.split("\n")
    kept = [
        _segment(lines, node)
        for index, node in enumerate(body)
        if index in keep or isinstance(node, (ast.Import, ast.ImportFrom))
    ]
    return "\n\n".join(kept) + "\n"


def entry_point_from_tests(tests: list[str], defined: set[str] | None = None) -> str | None:
    """The function the tests exercise: the first called name that the program defines
    (or, without `defined`, the first called name that is not a builtin). MBPP has no entry point field."""
    builtin_names = set(dir(builtins))
    for test in tests:
        try:
            tree = ast.parse(test)
        except SyntaxError:
            continue
        calls = sorted(
            (n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)),
            key=lambda n: (n.lineno, n.col_offset),
        )
        for call in calls:
            name = call.func.id
            if (defined is not None and name in defined) or (defined is None and name not in builtin_names):
                return name
    return None


def defined_names(code: str) -> set[str]:
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return set(re.findall(r"^\s*(?:async\s+)?(?:def|class)\s+(\w+)", code, re.MULTILINE))
    return {name for node in tree.body for name in _definition_names(node)}


def build_program(
    response: str,
    config: PostprocessConfig,
    *,
    prompt: str = "",
    entry_point: str | None = None,
    tests: list[str] | None = None,
) -> Program:
    """Apply `config`'s steps to one response; record what changed."""
    steps: list[str] = []

    def join(code: str) -> str:
        if config.prefix == "prompt":
            return prompt + code
        if config.prefix == "prompt_newline":
            return prompt + "\n" + code
        return code

    raw_program = join(response)
    code = response
    if config.stop:
        cut = apply_stop_strings(code, config.stop)
        if cut != code:
            steps.append("stop")
        code = cut
    if config.code_block:
        block = extract_code_block(code, entry_point=entry_point, fence_open=config.fence_open)
        if block is not None and block != code:
            steps.append("code_block")
            code = block
    program = join(code)
    if config.longest_parseable:
        normalised = program.replace("\r\n", "\n").replace("\r", "\n")
        if normalised != program:
            steps.append("newlines")
        program = normalised
        window = longest_parseable_window(program, max_lines=config.max_window_lines)
        if window != program:
            steps.append("longest_parseable")
        program = window
    if entry_point is None and tests:
        entry_point = entry_point_from_tests(tests, defined_names(program)) or entry_point_from_tests(tests)
    if config.reachable_only and entry_point:
        kept = reachable_definitions(program, entry_point)
        if kept != program:
            steps.append("reachable_only")
        program = kept
    return Program(raw_program=raw_program, program=program, steps=steps, entry_point=entry_point)
