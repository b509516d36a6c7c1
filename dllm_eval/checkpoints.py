"""`dllm-eval random-checkpoint`: random weights in LLaDA's or Dream's exact on-disk format.

The directory has what a hub LLaDA checkpoint has -- config.json (every field of
GSAI-ML/LLaDA-8B-Instruct's, `model_type: llada`, `auto_map` for the remote code),
generation_config.json, `model-0000N-of-0000M.safetensors` shards with
model.safetensors.index.json, and a byte-level tokenizer (tokenizer.json,
tokenizer_config.json with LLaDA's chat template, special_tokens_map.json) -- so it loads with
our loader, with AutoTokenizer, and with LLaDA's own remote modeling code. Tests and benchmarks
use it where a real 16 GB checkpoint cannot be downloaded.

`--arch dream` (or `--shape dream-7b`) writes what a hub Dream checkpoint has instead:
config.json with every field of Dream-org/Dream-v0-Instruct-7B's (`model_type: Dream`,
`architectures: [DreamModel]`, `auto_map` to configuration_dream/modeling_dream), Dream's
generation_config.json, the same shard layout, and a Qwen2 byte-level BPE tokenizer in the hub's
files (vocab.json, merges.txt, tokenizer_config.json with `auto_map` to tokenization_dream,
special_tokens_map.json), with Dream's special tokens at their real ids when --vocab >= 152064.
The size flags are the same for both architectures; each maps them to its own config names.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from dllm_eval.errors import UserError

SHAPES = {
    # The real LLaDA-8B dimensions (for GPU benchmarks; ~16 GB in bf16).
    "llada-8b": {"d_model": 4096, "n_layers": 32, "n_heads": 32, "mlp_hidden_size": 12288, "vocab_size": 126464},
    # The real Dream-7B (Qwen2.5-7B) dimensions; GQA with 4 KV heads (~15 GB in bf16).
    "dream-7b": {"d_model": 3584, "n_layers": 28, "n_heads": 28, "n_kv_heads": 4, "mlp_hidden_size": 18944,
                 "vocab_size": 152064},
    # Small shapes for tests and CPU benchmarks.
    "tiny": {"d_model": 64, "n_layers": 2, "n_heads": 4, "mlp_hidden_size": 128, "vocab_size": 512},
    "small": {"d_model": 256, "n_layers": 4, "n_heads": 4, "mlp_hidden_size": 768, "vocab_size": 1024},
}
LLADA_VOCAB_MIN = 126349  # special tokens at LLaDA's real ids need this many rows
SHAPE_ARCH = {"llada-8b": "llada", "dream-7b": "dream"}  # shapes that fix the architecture


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=["llada", "dream"],
                        help="architecture (default: the --shape's, else llada)")
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


def resolve_arch(args: argparse.Namespace) -> str:
    implied = SHAPE_ARCH.get(args.shape or "")
    if args.arch and implied and args.arch != implied:
        raise UserError(f"--shape {args.shape} is a {implied} shape; it cannot be used with --arch {args.arch}")
    return args.arch or implied or "llada"


def make_shape(args: argparse.Namespace) -> dict[str, int]:
    """The size flags over the named shape, validated (same meaning for every architecture)."""
    shape = dict(SHAPES[args.shape or "tiny"])
    overrides = {"d_model": args.d_model, "n_layers": args.layers, "n_heads": args.heads,
                 "mlp_hidden_size": args.mlp, "vocab_size": args.vocab}
    shape.update({k: v for k, v in overrides.items() if v is not None})
    if args.kv_heads is not None:
        shape["n_kv_heads"] = args.kv_heads
    elif args.heads is not None or "n_kv_heads" not in shape:
        shape["n_kv_heads"] = shape["n_heads"]
    for key, value in shape.items():
        if value <= 0:
            flag = {"n_kv_heads": "kv-heads", "n_layers": "layers", "n_heads": "heads", "mlp_hidden_size": "mlp",
                    "vocab_size": "vocab"}.get(key, key.replace("_", "-"))
            raise UserError(f"--{flag} must be positive, got {value}")
    if shape["d_model"] % shape["n_heads"]:
        raise UserError(f"--d-model {shape['d_model']} must be divisible by --heads {shape['n_heads']}")
    if (shape["d_model"] // shape["n_heads"]) % 2:
        raise UserError("head dim (d_model / heads) must be even for rotary embeddings")
    if shape["n_heads"] % shape["n_kv_heads"]:
        raise UserError(f"--heads {shape['n_heads']} must be a multiple of --kv-heads {shape['n_kv_heads']}")
    return shape


def make_config(args: argparse.Namespace):
    shape = make_shape(args)
    if resolve_arch(args) == "dream":
        from dllm_eval.models.dream import DreamConfig

        return DreamConfig(hidden_size=shape["d_model"], num_hidden_layers=shape["n_layers"],
                           num_attention_heads=shape["n_heads"], num_key_value_heads=shape["n_kv_heads"],
                           intermediate_size=shape["mlp_hidden_size"], vocab_size=shape["vocab_size"],
                           max_position_embeddings=args.max_seq_len)
    from dllm_eval.models.llada import LLaDAConfig

    return LLaDAConfig(d_model=shape["d_model"], n_heads=shape["n_heads"], n_kv_heads=shape["n_kv_heads"],
                       n_layers=shape["n_layers"], mlp_hidden_size=shape["mlp_hidden_size"],
                       vocab_size=shape["vocab_size"], embedding_size=shape["vocab_size"],
                       max_sequence_length=args.max_seq_len)


def write_random_checkpoint(args: argparse.Namespace) -> Path:
    import torch

    config = make_config(args)
    out: Path = args.out
    if out.exists() and any(out.iterdir()) and not args.force:
        raise UserError(f"{out} exists and is not empty; choose a new --out or pass --force")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    dtype, shard_bytes = getattr(torch, args.dtype), args.shard_mb * 1_000_000
    if resolve_arch(args) == "dream":
        from dllm_eval.models import dream
        from dllm_eval.models.tokenizer import DREAM_EOS, DREAM_MASK, write_dream_tokenizer

        try:
            specials = write_dream_tokenizer(staging, config.vocab_size, model_max_length=args.max_seq_len)
        except ValueError as exc:
            raise UserError(f"--vocab {config.vocab_size}: {exc}") from None
        config.mask_token_id = specials[DREAM_MASK]
        # As the hub's config: eos = pad = bos = <|endoftext|> (<|beginoftext|> is the tokenizer's BOS).
        config.eos_token_id = config.pad_token_id = config.bos_token_id = specials[DREAM_EOS]
        dream.write_checkpoint(config, dream.random_tensors(config, args.seed), staging, dtype=dtype,
                               max_shard_bytes=shard_bytes)
    else:
        from dllm_eval.models.llada import random_tensors, write_checkpoint
        from dllm_eval.models.tokenizer import BOS, EOT, MASK, write_byte_tokenizer

        try:
            specials = write_byte_tokenizer(staging, config.vocab_size,
                                            llada_ids=config.vocab_size >= LLADA_VOCAB_MIN)
        except ValueError as exc:
            raise UserError(f"--vocab {config.vocab_size}: {exc}") from None
        config.mask_token_id = specials[MASK]
        config.eos_token_id = config.pad_token_id = specials["<|endoftext|>"]
        extra = {"bos_token_id": specials[BOS], "eot_token_id": specials[EOT]}
        write_checkpoint(config, random_tensors(config, args.seed), staging, dtype=dtype,
                         max_shard_bytes=shard_bytes, extra_config=extra)
    if out.exists():
        shutil.rmtree(out)
    staging.replace(out)
    return out


def run(args: argparse.Namespace) -> int:
    if resolve_arch(args) == "dream":
        from dllm_eval.models.dream import parameter_count
    else:
        from dllm_eval.models.llada import parameter_count

    out = write_random_checkpoint(args)
    config = make_config(args)
    print(f"wrote {out} ({resolve_arch(args)}, {parameter_count(config):,} parameters, {args.dtype})")
    return 0
