"""Reading and writing checkpoints in the hub's on-disk format, for every model family.

`config.json`, then `model.safetensors.index.json` with `model-0000i-of-0000n.safetensors`
shards (or a single `model.safetensors`). Every way a checkpoint can be broken -- a corrupt
config.json, an index naming a shard that is not there, a truncated shard, a tensor whose
shape disagrees with config.json, missing or unexpected weights -- is one `UserError` line
that names the file, so a user knows which download to repeat.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from dllm_eval.errors import UserError
from dllm_eval.models import EMBEDDED_MODELS

WEIGHTS_INDEX = "model.safetensors.index.json"
SINGLE_WEIGHTS = "model.safetensors"


class ConfigDict:
    """config.json <-> a family's config dataclass: the fields the forward reads under the
    checkpoint's own names, every other field kept in `extra` so a saved config round-trips."""

    extra: dict[str, Any]

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Any:
        known = {f.name for f in fields(cls)} - {"extra"}  # type: ignore[arg-type]
        config = cls(**{k: v for k, v in raw.items() if k in known})
        config.extra = {k: v for k, v in raw.items() if k not in known}
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        out.update({k: v for k, v in asdict(self).items() if k != "extra"})  # type: ignore[call-overload]
        return dict(sorted(out.items()))

    def validate(self) -> None:
        """Families reject architectures their model file does not implement."""


def default_dtype(device: torch.device | str) -> torch.dtype:
    """bf16 on GPU (as these models are run), fp32 on CPU (bf16 matmuls are slow and imprecise there)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def resolve_checkpoint(pretrained: str | os.PathLike) -> Path:
    """A local directory, an embedded model's name (`tiny_llada`, `tiny_dream`: see
    `dllm_eval.models.EMBEDDED_MODELS`), or a hub id downloaded (config, tokenizer and
    safetensors only). An existing directory wins over a name, so `./tiny_dream` stays a path."""
    path = Path(pretrained).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise UserError(f"{path} has no config.json: not a checkpoint directory")
        return path
    if str(pretrained) in EMBEDDED_MODELS:
        asset = EMBEDDED_MODELS[str(pretrained)]
        if not (asset / "config.json").is_file():
            raise UserError(f"pretrained={pretrained}: the embedded model {pretrained} is not shipped in this "
                            f"installation ({asset} has no weights: not trained and committed yet; train it with "
                            f"`dllm-eval train-tiny --arch {str(pretrained).removeprefix('tiny_')} --out {asset}`)")
        return asset
    if path.exists():
        raise UserError(f"pretrained={pretrained} is a file; pass the checkpoint directory")
    if str(pretrained).count("/") != 1 or str(pretrained).startswith((".", "/", "~")):
        raise UserError(f"pretrained={pretrained}: no such directory, and not a hub id of the form org/name")
    from huggingface_hub import snapshot_download

    try:
        local = snapshot_download(
            str(pretrained),
            allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.jinja", "*.txt", "*.model", "*.py"],
        )
    except Exception as exc:  # offline, gated, typo: say which and how to fix it
        raise UserError(
            f"could not fetch {pretrained} from the Hugging Face Hub ({type(exc).__name__}); "
            "download it first or pass a local directory"
        ) from exc
    return Path(local)


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`, or one line naming the file and what is wrong with it."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} is missing; the checkpoint download is incomplete") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); download it again") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} must hold a JSON object, found {type(raw).__name__}")
    return raw


def read_config_json(path: str | os.PathLike) -> dict[str, Any]:
    return read_json(Path(path) / "config.json")


def weight_files(path: Path) -> list[Path]:
    """The shard files of a checkpoint directory, each checked to exist."""
    index = path / WEIGHTS_INDEX
    if index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise UserError(f"{index} has no weight_map; download it again")
        files = [path / name for name in sorted(set(weight_map.values()))]
    elif (path / SINGLE_WEIGHTS).is_file():
        files = [path / SINGLE_WEIGHTS]
    else:
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise UserError(f"{path} has no safetensors weights ({WEIGHTS_INDEX} or {SINGLE_WEIGHTS})")
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise UserError(f"{path}: shard {missing[0]} listed in {WEIGHTS_INDEX} is missing; the download is incomplete")
    return files


def load_weights(model: nn.Module, path: Path, family: str, device: str | torch.device, dtype: torch.dtype) -> None:
    """Fill a meta-initialised `model` from the checkpoint's shards, strictly by weight name and
    shape; every mismatch names the file it came from."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    state: dict[str, Tensor] = {}
    for shard in weight_files(path):
        try:
            tensors = load_file(str(shard), device=str(device))
        except (SafetensorError, OSError, RuntimeError) as exc:
            raise UserError(f"{shard} cannot be read ({str(exc).splitlines()[0]}): truncated or corrupt, "
                            "download it again") from None
        for name, tensor in tensors.items():
            if name in expected and tuple(tensor.shape) != expected[name]:
                raise UserError(f"{shard}: {name} has shape {tuple(tensor.shape)} but config.json implies "
                                f"{expected[name]}; the weights and {path / 'config.json'} do not belong together")
            state[name] = tensor.to(dtype)
    missing, unexpected = sorted(expected.keys() - state.keys()), sorted(state.keys() - expected.keys())
    if missing or unexpected:
        raise UserError(f"{path}: weights do not match the {family} layout; missing={missing[:5]} "
                        f"unexpected={unexpected[:5]}")
    model.load_state_dict(state, assign=True, strict=True)


def write_shards(tensors: Iterable[tuple[str, Tensor]], out: Path, dtype: torch.dtype,
                 max_shard_bytes: int = 5 * 1024**3) -> list[Path]:
    """`model-0000i-of-0000n.safetensors` shards plus the index, flushed as they fill, so an
    8B-shaped random checkpoint never needs more than one shard in memory."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    names: list[list[str]] = []
    tmp_files: list[Path] = []
    pending: dict[str, Tensor] = {}
    pending_bytes, total = 0, 0

    def flush() -> None:
        nonlocal pending, pending_bytes
        tmp = out / f".shard-{len(tmp_files):05d}.tmp"
        save_file(pending, str(tmp), metadata={"format": "pt"})
        tmp_files.append(tmp)
        names.append(list(pending))
        pending, pending_bytes = {}, 0

    for name, tensor in tensors:
        t = tensor.detach().to("cpu", dtype).contiguous()
        nbytes = t.numel() * t.element_size()
        if pending and pending_bytes + nbytes > max_shard_bytes:
            flush()
        pending[name] = t
        pending_bytes += nbytes
        total += nbytes
    if pending:
        flush()
    files, weight_map = [], {}
    for i, (tmp, shard_names) in enumerate(zip(tmp_files, names), start=1):
        final = out / f"model-{i:05d}-of-{len(tmp_files):05d}.safetensors"
        tmp.replace(final)
        files.append(final)
        weight_map.update(dict.fromkeys(shard_names, final.name))
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (out / WEIGHTS_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    return files
