"""Schedulers by name: the base class, the registry and the one place parameters are built.

A scheduler is a `Params` dataclass (its model_args, with defaults) and a `decode(run)` method
that says how the method picks tokens; `register` puts it under a name, `register_variant` adds
a named preset (an ablation row, a control). `get_scheduler` types text values by the
parameters' defaults and validates them, so bad settings fail before any weights load.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import torch
from torch import Tensor

from dllm_eval.errors import UserError
from dllm_eval.schedulers.base import CommonParams, DecodeState, DiffusionModel, GenerationOutput, Generators
from dllm_eval.schedulers.blocks import CACHE_MODES, BlockRunner
from dllm_eval.settings import coerce


class Scheduler:
    """Base class: holds validated params; subclasses implement `decode(run)`."""

    name: ClassVar[str] = ""
    Params: ClassVar[type[CommonParams]] = CommonParams
    # True when every random draw goes through `base.propose`, which accepts one generator per
    # batch row; False makes the front end decode sampled batches row by row (see FrontEnd.generate).
    row_streams: ClassVar[bool] = True

    def __init__(self, params: CommonParams) -> None:
        params.validate()
        self.params = params
        if self.cache_mode() not in CACHE_MODES:
            raise UserError(f"cache must be one of {', '.join(CACHE_MODES)}, got {self.cache_mode()!r}")

    def cache_mode(self) -> str:
        """The KV cache the shared block loop keeps for this method: none, prefix or dual (the
        method's `cache` parameter where it has one, else dual)."""
        return getattr(self.params, "cache", "dual")

    def decode(self, run: BlockRunner) -> None:
        """Decode `run.state`'s canvas in place; `run` is the shared block loop (model, cache, trace)."""
        raise NotImplementedError

    @torch.inference_mode()
    def generate(
        self,
        model: DiffusionModel,
        input_ids: Tensor,
        attention_mask: Tensor | None = None,
        generator: Generators = None,
    ) -> GenerationOutput:
        """Decode `gen_length` tokens after each (left-padded) prompt row."""
        started = time.perf_counter()
        state = DecodeState.start(model, input_ids.to(model.device),
                                  None if attention_mask is None else attention_mask.to(model.device),
                                  self.params.gen_length)
        p = self.params
        self.decode(BlockRunner(model, state, self.cache_mode(), generator=generator,
                                propose_kwargs=p.propose_kwargs(), stop_at_eos=p.stop_at_eos))
        if state.canvas.device.type == "cuda":
            torch.cuda.synchronize(state.canvas.device)
        wall = time.perf_counter() - started
        left = int(state.masked(state.prompt_len, state.length).sum())
        if left:
            raise RuntimeError(f"{self.name} left {left} masked positions undecoded (a scheduler bug)")
        return GenerationOutput(state.generated().clone(), state.trace.rows(), state.trace.batch_nfe, wall)


@dataclass(frozen=True)
class SchedulerSpec:
    cls: type[Scheduler]
    preset: dict[str, Any]
    description: str


SCHEDULERS: dict[str, SchedulerSpec] = {}


def register(name: str, description: str, **preset: Any):
    """Class decorator registering a scheduler (and optional preset variants via `register_variant`)."""

    def wrap(cls: type[Scheduler]) -> type[Scheduler]:
        cls.name = name
        SCHEDULERS[name] = SchedulerSpec(cls, preset, description)
        return cls

    return wrap


def register_variant(name: str, base: type[Scheduler], description: str, **preset: Any) -> None:
    """A named preset of an existing scheduler (e.g. an ablation row or a control)."""
    SCHEDULERS[name] = SchedulerSpec(base, preset, description)


def param_fields(name: str) -> dict[str, Any]:
    """Parameter name -> default for a registered scheduler (preset applied)."""
    spec = SCHEDULERS[name]
    defaults = {f.name: f.default for f in fields(spec.cls.Params)}
    defaults.update(spec.preset)
    return defaults


def get_scheduler(name: str, **params: Any) -> Scheduler:
    """Build a registered scheduler; unknown names or parameters fail with the valid options."""
    if name not in SCHEDULERS:
        raise UserError(f"unknown scheduler {name!r}; choose one of: {', '.join(sorted(SCHEDULERS))}")
    spec = SCHEDULERS[name]
    valid = param_fields(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise UserError(f"scheduler {name!r} has no parameter {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    typed = {k: coerce(v, valid[k], k) for k, v in params.items()}
    merged = {**spec.preset, **typed}
    instance = spec.cls(spec.cls.Params(**merged))
    instance.name = name
    return instance
