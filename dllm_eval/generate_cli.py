"""`dllm-eval generate`: decode one prompt with any scheduler, to try settings by hand."""

from __future__ import annotations

import argparse
import json
import sys

from dllm_eval import defaults
from dllm_eval.errors import UserError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pretrained", help="checkpoint directory or hub id (default: the embedded model)")
    parser.add_argument("--scheduler", default=defaults.SCHEDULER, help="scheduler name (see --list)")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="a scheduler parameter, e.g. --set threshold=0.9 (repeatable)")
    parser.add_argument("--prompt", help="the prompt text")
    parser.add_argument("--chat", choices=["auto", "true", "false"], default="auto", help="apply the chat template")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--seed", type=int, default=defaults.SEED)
    parser.add_argument("--json", action="store_true", help="print one JSON object (text, nfe, tokens/s, trace)")
    parser.add_argument("--list", action="store_true", help="list schedulers and their parameters, then exit")


def run(args: argparse.Namespace) -> int:
    from dllm_eval.lm_eval_model import DiffusionLM, describe_model_args
    from dllm_eval.settings import split_settings

    if args.list:
        print(describe_model_args())
        return 0
    if not args.prompt:
        raise UserError("--prompt is required (or use --list)")
    settings = split_settings(args.settings, what="--set")
    lm = DiffusionLM(pretrained=args.pretrained, scheduler=args.scheduler, dtype=args.dtype, seed=args.seed,
                     chat_template=args.chat, device=args.device, **settings)
    gen_length = lm._gen_length(defaults.MAX_GEN_TOKS)
    from dllm_eval.schedulers import get_scheduler

    sched = get_scheduler(lm.scheduler_name, **{**lm.scheduler_args, "gen_length": gen_length})
    decoded = lm.front.generate([args.prompt], sched, [], generator=lm.generator)
    text, n_tokens, out = decoded.texts[0], decoded.gen_tokens[0], decoded.output
    trace = out.traces[0]
    record = {"text": text, "nfe": trace["nfe"], "gen_tokens": n_tokens, "wall_s": round(out.wall_s, 4),
              "tokens_per_s": round(n_tokens / out.wall_s, 2) if out.wall_s else None,
              "scheduler": lm.scheduler_name, "params": lm._resolved_params(gen_length)}
    if args.json:
        json.dump({**record, "trace": trace}, sys.stdout)
        print()
    else:
        print(text)
        print(f"-- NFE {record['nfe']}, {n_tokens} tokens in {record['wall_s']} s ({record['tokens_per_s']} tokens/s)",
              file=sys.stderr)
    return 0
