"""The decode step as replayed CUDA graphs (model argument ``compile=none|graphs|inductor|auto``).

At batch 1 an 8B step is launch-bound: the GPU needs ~3.5 ms to read the weights, but the eager
step issues ~700 small kernels and takes 20-24 ms. A CUDA graph records the step's kernels once
and replays them with one launch. That needs a step that never reads the device and always
touches the same buffers, which the model files provide (see `models.cache`):

- windows arrive as host `range`s, so no step asks the GPU where its window is;
- the KV cache is one preallocated buffer per (batch, canvas length), reset in place between
  decodes (`static_cache`), and its bookkeeping (stamps, written tokens, which rows write) is
  device-side, so a replay updates it exactly as the eager step would;
- every other input (tokens, padding mask) is copied into a static buffer before a replay.

One graph is captured per distinct call: (batch, window, attention kind, write, logits slice,
family options), on the call's second occurrence (a one-off call costs more to capture than to
run). A block-wise decode of G tokens in blocks of K has about 2*G/K distinct calls (the full
forward and the cached step per block start): the cached steps are captured during the first
decode of a shape, the full forwards during the second, and everything replays afterwards.

Windows given as tensors (per-row windows [B, W] of `adaptive`/`drs` when rows diverge, a tiered
refresh's scattered positions) can be graphed by shape, their positions copied into static
buffers like the tokens, for families whose tensor-window forward never reads the device
(``graph_tensor_windows = True`` on the model class; LLaDA's); this waits for its GPU measurement
(`EXPERIMENTAL`). Calls a graph cannot serve (such a window on another family, a cache that is
not the static one, extra queries) run eagerly, so every scheduler works in every mode.

``graphs`` replays exactly the eager kernels, so its tokens equal eager mode's bit for bit.
``inductor`` additionally runs the forward's elementwise pieces (RMSNorm, RoPE, the SiLU gate)
as kernels fused by `torch.compile` (`models.fusion`), and (once measured, see `EXPERIMENTAL`)
the q/k/v and gate/up projections as one matmul each (`fuse_projections` in the model file), and
captures those: fewer kernels, at the price of different rounding (its token match rate with
eager mode is measured by `dllm-eval bench`). ``auto`` is ``graphs`` on a GPU and ``none`` on a CPU.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import Tensor

from dllm_eval.errors import UserError
from dllm_eval.models import fusion
from dllm_eval.models.cache import KVCache

COMPILE_MODES = ("auto", "none", "graphs", "inductor")


# `compile=auto` on a GPU picks inductor from this size up. On the H200 with the LLaDA-8B shape it
# decodes 1.40x (batch 1) and 1.28x (batch 32) faster than graphs (results/bench/llada-8b_cuda.md),
# for compiling the fused pieces once per process (not yet timed); a small model's whole evaluation
# may take less than that saves, so it keeps graphs (the eager kernels replayed, tokens exactly eager's).
INDUCTOR_MIN_PARAMETERS = 1_000_000_000


def resolve_compile_mode(mode: str | None, device: str | torch.device, parameters: int | None = None) -> str:
    """``auto`` -> the fastest mode that works on `device` (on a GPU: inductor for a model of
    `INDUCTOR_MIN_PARAMETERS` or more, graphs for a smaller one or when the size is not yet
    known); one clear line for a bad value."""
    mode = (mode or "auto").strip().lower()
    if mode not in COMPILE_MODES:
        raise UserError(f"compile={mode!r} is not a compile mode; use one of {', '.join(COMPILE_MODES)}")
    on_gpu = torch.device(device).type == "cuda"
    if mode == "auto":
        if not on_gpu:
            return "none"
        return "inductor" if parameters is not None and parameters >= INDUCTOR_MIN_PARAMETERS else "graphs"
    if mode != "none" and not on_gpu:
        raise UserError(f"compile={mode} needs a CUDA device (device={device}); use compile=none or compile=auto on CPU")
    return mode


# Step optimisations that are written and tested on CPU but not yet measured on a GPU stay off
# until `dllm-eval bench` shows their gain (`--experimental NAME` turns one on for a run):
# - "tensor-window-graphs": graph per-row and scattered windows (adaptive/drs rows that diverge,
#   tiered refreshes) instead of running them eagerly;
# - "fused-projections": compile=inductor runs q/k/v and gate/up as one matmul each.
EXPERIMENTAL: dict[str, bool] = {"tensor-window-graphs": False, "fused-projections": False}


def accelerate(model: Any, mode: str) -> Any:
    """The model itself (``none``) or a `GraphedModel` serving it (``graphs``, ``inductor``)."""
    if mode == "none":
        return model
    if mode == "inductor" and EXPERIMENTAL["fused-projections"] and hasattr(model, "fuse_projections"):
        model.fuse_projections()
    return GraphedModel(model, compiled=mode == "inductor")


# Tensor arguments a graph takes as inputs (copied into static buffers before each replay).
TENSOR_INPUTS = ("input_ids", "attention_mask", "window", "window_valid", "logits_positions")


class _Graph:
    """One captured call: its static input buffers (by argument name) and output."""

    def __init__(self, graph: torch.cuda.CUDAGraph, inputs: dict[str, Tensor], out: Tensor) -> None:
        self.graph, self.inputs, self.out = graph, inputs, out

    def __call__(self, tensors: dict[str, Tensor]) -> Tensor:
        for name, buffer in self.inputs.items():
            buffer.copy_(tensors[name])
        self.graph.replay()
        return self.out.clone()  # the next replay overwrites `out`; callers may keep logits


class GraphedModel:
    """Serves `model`'s forward from captured CUDA graphs; everything else is the model's own.

    Attribute reads fall through to the model (config, dtype, device, ...), so schedulers and
    `models.registry.family_of` see the same object they would without graphs.
    """

    def __init__(self, model: Any, *, compiled: bool = False) -> None:
        if torch.device(model.device).type != "cuda":
            raise UserError("CUDA graphs need the model on a CUDA device")
        self.model = model
        self.compiled = compiled
        # what `compiled` turns on (`fusion.enabled`'s parts); `dllm-eval bench` times each alone
        self.fusion_parts = {"elementwise": True, "projections": EXPERIMENTAL["fused-projections"]}
        self.graphs: dict[tuple, _Graph] = {}
        self.seen: dict[tuple, int] = {}  # calls so far per key: a graph is captured on a key's second call
        self.pool = torch.cuda.graph_pool_handle()
        self.cache: KVCache | None = None
        self.captures = 0
        self.replays = 0
        self.eager_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    @property
    def served_model(self) -> Any:
        return self.model

    def static_cache(self, batch: int, length: int) -> KVCache:
        """The one preallocated cache, reset; a new shape replaces it (and its graphs), so memory
        holds one cache at a time however many shapes a run meets."""
        c = self.cache
        if c is not None and c.keys[0].shape[0] == batch and c.length == length:
            c.reset()
            return c
        self.cache = None
        # drop every graph (they hold the old cache's addresses) and start a new memory pool:
        # a pool whose graphs are all gone cannot take new captures
        self.graphs, self.seen = {}, {}
        self.pool = torch.cuda.graph_pool_handle()
        cfg = self.model.config
        c = KVCache(cfg.n_layers, batch, cfg.effective_n_kv_heads, length, cfg.head_dim, self.model.dtype,
                    self.model.device)
        c.static = True
        self.cache = c
        return c

    def _key(self, kwargs: dict[str, Any]) -> tuple | None:
        """The graph serving this call, or None when only the eager forward can (a tensor window
        on a family that reads it on the host, a cache other than the static one, extra queries,
        a CPU tensor). Tensors are keyed by shape (their values are graph inputs); ranges and
        slices by value (they fix the shapes and offsets the step is built with)."""
        ids, window, cache = kwargs["input_ids"], kwargs["window"], kwargs["cache"]
        if kwargs.get("extra") is not None or ids.device.type != "cuda":
            return None
        if isinstance(window, Tensor) and not (kwargs["attend"] == "cache" and self.graph_tensor_windows):
            return None
        if cache is not None and cache is not self.cache:
            return None
        if any(isinstance(v, Tensor) and k not in TENSOR_INPUTS for k, v in kwargs.items()):
            return None  # a tensor the graph would not copy in: its values would be stale on replay

        def layout(value: Any) -> Any:
            if isinstance(value, Tensor):
                return ("tensor", tuple(value.shape), value.dtype)
            if isinstance(value, range | slice):
                return (type(value).__name__, value.start, value.stop, value.step)
            return id(value) if isinstance(value, KVCache) else value

        return tuple((name, layout(value)) for name, value in sorted(kwargs.items()))

    @property
    def graph_tensor_windows(self) -> bool:
        """Whether tensor windows are graphed: switched on (`EXPERIMENTAL`) and the family's
        tensor-window forward is free of host reads (so capturable)."""
        return EXPERIMENTAL["tensor-window-graphs"] and bool(getattr(type(self.model), "graph_tensor_windows", False))

    def __call__(self, input_ids: Tensor, *, window: Any = None, attention_mask: Tensor | None = None,
                 cache: KVCache | None = None, attend: str = "window", write: bool = False,
                 logits_positions: slice | Tensor | None = None, **options: Any) -> Tensor:
        kwargs = dict(input_ids=input_ids, window=window, attention_mask=attention_mask, cache=cache, attend=attend,
                      write=write, logits_positions=logits_positions, **options)
        with fusion.enabled(**self.fusion_parts) if self.compiled else contextlib.nullcontext():
            return self._serve(self._key(kwargs), kwargs)

    forward = __call__

    def _run(self, kwargs: dict[str, Any]) -> Tensor:
        return self.model(kwargs["input_ids"], **{k: v for k, v in kwargs.items() if k != "input_ids"})

    def _serve(self, key: tuple | None, kwargs: dict[str, Any]) -> Tensor:
        if key is None:
            self.eager_calls += 1
            return self._run(kwargs)
        graph = self.graphs.get(key)
        if graph is None:
            self.seen[key] = self.seen.get(key, 0) + 1
            if self.seen[key] < 2:  # a one-off call (a log-likelihood batch, a block's first step)
                self.eager_calls += 1  # costs more to capture than to run
                return self._run(kwargs)
            graph = self._capture(kwargs)
            self.graphs[key] = graph
        self.replays += 1
        return graph({name: kwargs[name] for name in graph.inputs})

    def _capture(self, kwargs: dict[str, Any]) -> _Graph:
        """Warm up on a side stream, then record. The warm-up runs the call for real; every
        graphed call is idempotent on the cache (it writes what it would write again on the
        replay that follows), so running it twice leaves the same state as running it once."""
        inputs = {name: kwargs[name].clone() for name in TENSOR_INPUTS if isinstance(kwargs.get(name), Tensor)}
        static = {**kwargs, **inputs}
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(2 if self.compiled else 1):
                self._run(static)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self._run(static)
        self.captures += 1
        return _Graph(graph, inputs, out)


__all__ = ["COMPILE_MODES", "EXPERIMENTAL", "TENSOR_INPUTS", "GraphedModel", "accelerate", "resolve_compile_mode"]
