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
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

F = TypeVar("F", bound=Callable[..., Any])

_state = threading.local()
_compiled: dict[Callable[..., Any], Callable[..., Any]] = {}


@contextlib.contextmanager
def enabled(elementwise: bool = True, projections: bool = True) -> Iterator[None]:
    """Inside this block, run the `fusable` pieces compiled (`elementwise`) and the projections a
    model fused (`projections`; see `fuse_linears`). models.graphs uses it for inductor; `dllm-eval
    bench` times each part alone."""
    before = (getattr(_state, "on", False), getattr(_state, "projections", False))
    _state.on, _state.projections = elementwise, projections
    try:
        yield
    finally:
        _state.on, _state.projections = before


def projections_fused() -> bool:
    """Whether a model that fused its projections should use them now (else the separate layers,
    which read the same storage: eager and graphs modes keep their exact kernels)."""
    return getattr(_state, "projections", False)


def fusable(fn: F) -> F:
    """`fn` as is, or compiled (once per function; shapes generalise after the first recompile)
    while `enabled()`."""

    def call(*args: Any) -> Any:
        if not getattr(_state, "on", False):
            return fn(*args)
        compiled = _compiled.get(fn)
        if compiled is None:
            _allow_recompiles()
            compiled = _compiled[fn] = torch.compile(fn, fullgraph=True)
        try:
            return compiled(*args)
        except torch._dynamo.exc.FailOnRecompileLimitHit:
            # more distinct shapes than the limit: this piece runs eagerly from now on, rather
            # than ending a run hours in (same math; only the fused kernel is given up)
            warnings.warn(f"compile=inductor: {fn.__name__} met more shapes than torch.compile's recompile "
                          "limit; it runs unfused from now on", stacklevel=2)
            _compiled[fn] = fn
            return fn(*args)

    call.__name__, call.__doc__, call.__wrapped__ = fn.__name__, fn.__doc__, fn  # type: ignore[attr-defined]
    return call  # type: ignore[return-value]


def _allow_recompiles(limit: int = 64) -> None:
    """One piece (RMSNorm, say) meets many shapes in one process: batch 1 and batch 32 (size 1 is
    always specialised), each window length, strided views. Dynamo's default of 8 compiles per
    function is reached by a long bench, and with fullgraph=True that is a hard error; raise it."""
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    setattr(config, name, max(getattr(config, name), limit))


def fuse_linears(*layers: nn.Linear) -> tuple[Tensor, Tensor | None]:
    """One weight (and bias) serving several linear layers of the same input as one matmul.

    A step at batch 1 reads each weight once, and three skinny matmuls (q, k, v) leave more of the
    HBM bandwidth unused than one three times as wide. The layers' own parameters are re-pointed
    to views of the fused tensor, so no weight is stored twice, and `state_dict` and in-place
    loading still see the checkpoint's names and values. The weights move to the fused tensor:
    fuse before capturing any CUDA graph that reads them."""
    weight = torch.cat([layer.weight.detach() for layer in layers])
    bias = None if layers[0].bias is None else torch.cat([layer.bias.detach() for layer in layers])
    row = 0
    for layer in layers:
        n = layer.weight.shape[0]
        layer.weight = nn.Parameter(weight[row: row + n], requires_grad=False)
        if bias is not None:
            layer.bias = nn.Parameter(bias[row: row + n], requires_grad=False)
        row += n
    return weight, bias


__all__ = ["enabled", "fusable", "fuse_linears", "projections_fused"]
