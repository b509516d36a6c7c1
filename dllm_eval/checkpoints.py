"""`dllm-eval random-checkpoint`: random weights in LLaDA's exact on-disk format.

The directory has what a hub LLaDA checkpoint has -- config.json (every field of
GSAI-ML/LLaDA-8B-Instruct's, `model_type: llada`, `auto_map` for the remote code),
generation_config.json, `model-0000N-of-0000M.safetensors` shards with
model.safetensors.index.json, and a byte-level tokenizer (tokenizer.json,
tokenizer_config.json with LLaDA's chat template, special_tokens_map.json) -- so it loads with
our loader, with AutoTokenizer, and with LLaDA's own remote modeling code. Tests and benchmarks
use it where a real 16 GB checkpoint cannot be downloaded.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from dllm_eval.errors import UserError

SHAPES = {
    # The real LLaDA-8B dimensions (for GPU benchmarks; ~16 GB in bf16).
    "llada-8b": {"d_model": 4096, "n_layers": 32, "n_heads": 32, "mlp_hidden_size": 12288, "vocab_size": 126464},
    # Small shapes for tests and CPU benchmarks.
    "tiny": {"d_model": 64, "n_layers": 2, "n_heads": 4, "mlp_hidden_size": 128, "vocab_size": 512},
    "small": {"d_model": 256, "n_layers": 4, "n_heads": 4, "mlp_hidden_size": 768, "vocab_size": 1024},
}
LLADA_VOCAB_MIN = 126349  # special tokens at LLaDA's real ids need this many rows


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", default="llada", choices=["llada"], help="architecture (only llada)")
    parser.add_argument("--out", required=True, type=Path, help="output directory (must not exist or be empty)")
    parser.add_argument("--shape", choices=sorted(SHAPES), help="a named shape; explicit flags override it")
    parser.add_argument("--d-model", type=int)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--kv-heads", type=int, help="defaults to --heads (multi-head attention)")
    parser.add_argument("--mlp", type=int, help="mlp_hidden_size")
    parser.add_argument("--vocab", type=int, help="vocab_size (= embedding_size)")
    parser.add_argument("--max-seq-len", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32", "float16"])
    parser.add_argument("--shard-mb", type=int, default=5000, help="maximum shard size in MB")
    parser.add_argument("--force", action="store_true", help="overwrite a non-empty --out")


def make_config(args: argparse.Namespace):
    from dllm_eval.models.llada import LLaDAConfig

    shape = dict(SHAPES[args.shape or "tiny"])
    overrides = {"d_model": args.d_model, "n_layers": args.layers, "n_heads": args.heads,
                 "mlp_hidden_size": args.mlp, "vocab_size": args.vocab}
    shape.update({k: v for k, v in overrides.items() if v is not None})
    for key, value in shape.items():
        if value <= 0:
            raise UserError(f"--{key.replace('_', '-')} must be positive, got {value}")
    if shape["d_model"] % shape["n_heads"]:
        raise UserError(f"--d-model {shape['d_model']} must be divisible by --heads {shape['n_heads']}")
    if (shape["d_model"] // shape["n_heads"]) % 2:
        raise UserError("head dim (d_model / heads) must be even for rotary embeddings")
    kv_heads = args.kv_heads or shape["n_heads"]
    if shape["n_heads"] % kv_heads:
        raise UserError(f"--heads {shape['n_heads']} must be a multiple of --kv-heads {kv_heads}")
    return LLaDAConfig(d_model=shape["d_model"], n_heads=shape["n_heads"], n_kv_heads=kv_heads,
                       n_layers=shape["n_layers"], mlp_hidden_size=shape["mlp_hidden_size"],
                       vocab_size=shape["vocab_size"], embedding_size=shape["vocab_size"],
                       max_sequence_length=args.max_seq_len)


def write_random_checkpoint(args: argparse.Namespace) -> Path:
    import torch

    from dllm_eval.models.llada import random_tensors, write_checkpoint
    from dllm_eval.models.tokenizer import BOS, EOT, MASK, write_byte_tokenizer

    config = make_config(args)
    out: Path = args.out
    if out.exists() and any(out.iterdir()) and not args.force:
        raise UserError(f"{out} exists and is not empty; choose a new --out or pass --force")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        specials = write_byte_tokenizer(staging, config.vocab_size, llada_ids=config.vocab_size >= LLADA_VOCAB_MIN)
    except ValueError as exc:
        raise UserError(f"--vocab {config.vocab_size}: {exc}") from None
    config.mask_token_id = specials[MASK]
    config.eos_token_id = config.pad_token_id = specials["<|endoftext|>"]
    extra = {"bos_token_id": specials[BOS], "eot_token_id": specials[EOT]}
    write_checkpoint(config, random_tensors(config, args.seed), staging, dtype=getattr(torch, args.dtype),
                     max_shard_bytes=args.shard_mb * 1_000_000, extra_config=extra)
    if out.exists():
        shutil.rmtree(out)
    staging.replace(out)
    return out


def run(args: argparse.Namespace) -> int:
    from dllm_eval.models.llada import parameter_count

    out = write_random_checkpoint(args)
    config = make_config(args)
    print(f"wrote {out} ({parameter_count(config):,} parameters, {args.dtype})")
    return 0
