"""The package's shape: no import circles, and scheduler files that stay small.

Import circles are found on the source (every `import` / `from ... import` of a dllm_eval
module, lazy ones inside functions included), so a circle that only bites at run time in
some import order is caught too.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "dllm_eval"


def import_graph() -> dict[str, set[str]]:
    modules: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        name = name.removesuffix(".__init__")
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("dllm_eval"):
                deps |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("dllm_eval")}
        modules[name] = deps
    # a module importing its own package (`from dllm_eval.x import y` inside dllm_eval.x.z) is no circle
    return {m: {d for d in ds if d in modules and d != m and not m.startswith(d + ".")} for m, ds in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph[u]):
            if state.get(v) == 1:
                return [*stack[stack.index(v):], v]
            if v not in state and (found := visit(v)):
                return found
        state[u] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_cycle_finder_finds_a_planted_circle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_dllm_eval_has_no_import_circle():
    graph = import_graph()
    assert "dllm_eval.schedulers.base" in graph and "dllm_eval.matrix" in graph
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_leaf_modules_stay_leaves():
    """Settings, defaults, the trace row and the matrix file are read by everyone, so they import
    nothing from the package but `errors` (and `defaults`)."""
    graph = import_graph()
    allowed = {"dllm_eval.errors", "dllm_eval.defaults"}
    for leaf in ("dllm_eval.settings", "dllm_eval.defaults", "dllm_eval.trace_row", "dllm_eval.matrix_config"):
        assert graph[leaf] <= allowed, f"{leaf} imports {sorted(graph[leaf] - allowed)}"
