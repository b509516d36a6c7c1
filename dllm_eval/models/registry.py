"""Model families by name: which loader reads a checkpoint, chosen from its config.json.

A checkpoint says what it is through `model_type` (`"llada"`, `"Dream"`); `load_model` reads
it and calls that family's loader, so nothing else in the harness branches on the family. A
new family is one model file (config with the family-independent property names, a `forward`
with the window/cache/align signature, a loader) plus one `Family` line here.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from typing import Any

import torch

from dllm_eval.errors import UserError


@dataclass(frozen=True)
class Family:
    """One model family: the `model_type` its config.json carries and where its code lives."""

    name: str  # the CLI's --arch value
    model_type: str  # config.json's model_type
    module: str  # the model file
    loader: str  # function in `module`: (pretrained, device, dtype) -> model

    def load(self, pretrained: str | os.PathLike, device: str | torch.device = "cpu",
             dtype: torch.dtype | None = None) -> Any:
        return getattr(importlib.import_module(self.module), self.loader)(pretrained, device=device, dtype=dtype)


FAMILIES: dict[str, Family] = {
    "llada": Family("llada", "llada", "dllm_eval.models.llada", "load_llada"),
    "dream": Family("dream", "Dream", "dllm_eval.models.dream", "load_dream"),
}


def family_of_model_type(model_type: str | None, where: str = "config.json") -> Family:
    """The family whose checkpoints carry `model_type`; one clear line if none does."""
    for family in FAMILIES.values():
        if model_type == family.model_type:
            return family
    supported = ", ".join(f"{f.model_type!r} ({f.name})" for f in FAMILIES.values())
    raise UserError(f"{where}: model_type={model_type!r} is not supported; supported model types: {supported}")


def family_of(model: Any) -> Family:
    """The family of a loaded model (by its module), e.g. to pick a tokenizer or a default; a
    model served through CUDA graphs (`models.graphs.GraphedModel`) is its served model's family."""
    model = getattr(model, "served_model", model)
    for family in FAMILIES.values():
        if type(model).__module__ == family.module:
            return family
    raise ValueError(f"{type(model).__name__} is not a model of a registered family")


def load_model(pretrained: str | os.PathLike, device: str | torch.device = "cpu",
               dtype: torch.dtype | None = None) -> Any:
    """Load any supported checkpoint (local directory or hub id) by its config.json's model_type."""
    from dllm_eval.models.checkpoint_io import read_config_json, resolve_checkpoint

    path = resolve_checkpoint(pretrained)
    raw = read_config_json(path)
    family = family_of_model_type(raw.get("model_type"), where=str(path / "config.json"))
    return family.load(path, device=device, dtype=dtype)


__all__ = ["FAMILIES", "Family", "family_of", "family_of_model_type", "load_model"]
