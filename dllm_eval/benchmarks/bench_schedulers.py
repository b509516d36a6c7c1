"""NFE and wall time of every scheduler setting on one checkpoint (random weights by default).

    python -m dllm_eval.benchmarks.bench_schedulers [--pretrained DIR | --shape small] [--device cpu]
        [--batch 4] [--prompts 8] [--gen-length 128] [--out results/bench/schedulers_cpu.md]

Prints a markdown table: per setting, mean NFE per prompt, total wall time, generated tokens/s
(all canvas tokens, since random weights rarely emit EOS) and forwards/s. Speed targets are
checked here, never in unit tests.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import torch

SETTINGS: list[tuple[str, str, dict]] = [
    ("llada 1 tok/step", "llada", {}),
    ("fast_dllm none tau=0.9", "fast_dllm", {"cache": "none", "threshold": 0.9}),
    ("fast_dllm prefix tau=0.9", "fast_dllm", {"cache": "prefix", "threshold": 0.9}),
    ("fast_dllm dual tau=0.9", "fast_dllm", {"cache": "dual", "threshold": 0.9}),
    ("fast_dllm dual tau=0.9 top-check", "fast_dllm", {"cache": "dual", "threshold": 0.9, "block_check": "top"}),
    ("fast_dllm dual factor=1.0", "fast_dllm", {"cache": "dual", "factor": 1.0}),
    ("fast_dllm dual quota steps=gen/4", "fast_dllm", {"cache": "dual", "threshold": None, "steps": "quarter"}),
    ("fast_dllm dual tau=0.3", "fast_dllm", {"cache": "dual", "threshold": 0.3}),
]


def random_model_on_device(shape: str, device: str):
    """A random-weight model of a named shape allocated straight on `device` in its default dtype."""
    from dllm_eval.benchmarks.bench import random_llada_on_device
    from dllm_eval.checkpoints import SHAPES
    from dllm_eval.models.checkpoint_io import default_dtype
    from dllm_eval.models.llada import LLaDAConfig

    dims = SHAPES[shape]
    config = LLaDAConfig(d_model=dims["d_model"], n_heads=dims["n_heads"], n_kv_heads=dims["n_heads"],
                         n_layers=dims["n_layers"], mlp_hidden_size=dims["mlp_hidden_size"],
                         vocab_size=dims["vocab_size"], embedding_size=dims["vocab_size"],
                         mask_token_id=126336 if dims["vocab_size"] > 126336 else dims["vocab_size"] - 1)
    return random_llada_on_device(config, device, default_dtype(device))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pretrained", help="checkpoint dir; default: a random checkpoint of --shape")
    parser.add_argument("--shape", default="small", help="random-checkpoint shape (tiny, small, llada-8b, dream-7b)")
    parser.add_argument("--arch", default="llada", choices=["llada", "dream"], help="random-checkpoint family")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--prompt-length", type=int, default=64)
    parser.add_argument("--gen-length", type=int, default=128)
    parser.add_argument("--block-length", type=int, default=32)
    parser.add_argument("--in-memory", action="store_true",
                        help="build the random --shape model directly on the device (no 16 GB checkpoint on disk)")
    parser.add_argument("--settings", default="", help="comma-separated labels to run (default: all)")
    parser.add_argument("--schedulers", default="", help="comma-separated extra registered scheduler names")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    from dllm_eval.errors import UserError
    from dllm_eval.models.registry import load_model
    from dllm_eval.schedulers import get_scheduler, param_fields

    with tempfile.TemporaryDirectory() as tmp:
        path = args.pretrained
        if args.in_memory:
            model = random_model_on_device(args.shape, args.device)
        elif path is None:
            from dllm_eval.checkpoints import add_arguments, write_random_checkpoint

            ck_parser = argparse.ArgumentParser()
            add_arguments(ck_parser)
            ck_args = ck_parser.parse_args(["--out", f"{tmp}/ckpt", "--shape", args.shape, "--arch", args.arch])
            path = str(write_random_checkpoint(ck_args))
        if not args.in_memory:
            model = load_model(path, device=args.device)
        vocab_hi = min(model.config.mask_token_id, 250)
        gen = torch.Generator().manual_seed(0)
        prompts = torch.randint(0, vocab_hi, (args.prompts, args.prompt_length), generator=gen)
        settings = list(SETTINGS) + [(name, name, {}) for name in filter(None, args.schedulers.split(","))]
        if args.settings:
            wanted = set(args.settings.split(","))
            settings = [s for s in settings if s[0] in wanted or s[1] in wanted]
        rows = []
        for label, name, params in settings:
            params = dict(params)
            if params.get("steps") == "quarter":
                params["steps"] = args.gen_length // 4
            if param_fields(name)["block_length"] is not None:  # schedulers without blocks (dream) take none
                params.setdefault("block_length", args.block_length)
            sched = get_scheduler(name, gen_length=args.gen_length, **params)
            try:
                sched.generate(model, prompts[: args.batch])  # warm-up
            except UserError as exc:  # a setting this model family does not have (e.g. factor on Dream)
                rows.append((label, None, None, None, None, None, str(exc)))
                continue
            nfe, batch_nfe, wall = 0, 0, 0.0
            started = time.perf_counter()
            for lo in range(0, args.prompts, args.batch):
                out = sched.generate(model, prompts[lo: lo + args.batch])
                nfe += sum(t["nfe"] for t in out.traces)
                batch_nfe += out.batch_nfe
                wall += out.wall_s
            total = time.perf_counter() - started
            tokens = args.prompts * args.gen_length
            rows.append((label, nfe / args.prompts, batch_nfe, total, tokens / total, batch_nfe / total, ""))
    header = (f"Device: {args.device} ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads); checkpoint: {args.pretrained or f'random {args.arch} {args.shape}'}; "
              f"{args.prompts} prompts of {args.prompt_length} tokens, batch {args.batch}, gen_length "
              f"{args.gen_length}, block {args.block_length}, dtype {model.dtype}.")
    lines = [header, "", "| setting | NFE / prompt | batch forwards | wall s | canvas tokens/s | forwards/s |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r[0]} | {r[1]:.1f} | {r[2]} | {r[3]:.2f} | {r[4]:.0f} | {r[5]:.1f} |" if r[1] is not None
              else f"| {r[0]} | n/a: {r[6]} | | | | |" for r in rows]
    table = "\n".join(lines)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
