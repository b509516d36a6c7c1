"""Elementwise pieces of the forward, each compiled into one kernel under ``compile=inductor``.

In a replayed CUDA graph the launch cost is gone, but every small kernel still occupies the GPU
for a few microseconds: eager RMSNorm in fp32 is ~7 kernels, RoPE on q and k ~12, SiLU-gate 2,
so an 8B step runs ~1,500 kernels, several milliseconds on top of reading the weights.
`torch.compile` turns each piece below into one fused kernel. The math is the model file's own
(each piece is a plain function there, decorated with `fusable`); outside `enabled()` the
plain function runs, so CPU results and the parity tests never see compiled code.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch

F = TypeVar("F", bound=Callable[..., Any])

_state = threading.local()
_compiled: dict[Callable[..., Any], Callable[..., Any]] = {}


@contextlib.contextmanager
def enabled() -> Iterator[None]:
    """Run the `fusable` pieces compiled inside this block (models.graphs uses it for inductor)."""
    before = getattr(_state, "on", False)
    _state.on = True
    try:
        yield
    finally:
        _state.on = before


def fusable(fn: F) -> F:
    """`fn` as is, or compiled (once per function; shapes generalise after the first recompile)
    while `enabled()`."""

    def call(*args: Any) -> Any:
        if not getattr(_state, "on", False):
            return fn(*args)
        compiled = _compiled.get(fn)
        if compiled is None:
            compiled = _compiled[fn] = torch.compile(fn, fullgraph=True)
        return compiled(*args)

    call.__name__, call.__doc__, call.__wrapped__ = fn.__name__, fn.__doc__, fn  # type: ignore[attr-defined]
    return call  # type: ignore[return-value]


__all__ = ["enabled", "fusable"]
