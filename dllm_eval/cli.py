"""`dllm-eval`: one command, with subcommands.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`.
Modules are imported only when their subcommand runs, so `dllm-eval --help` stays instant
(torch is not imported for it).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from dllm_eval.errors import UserError

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("dllm_eval.generate_cli", "decode one prompt with a scheduler and print text, NFE and tokens/s"),
    "random-checkpoint": ("dllm_eval.checkpoints", "write a random-weight checkpoint in LLaDA's or Dream's on-disk format"),
    "exec-check": ("dllm_eval.scoring.cli", "run one program in the sandbox and print its verdict"),
    "report": ("dllm_eval.analysis.cli", "write report.md and figures for a run directory"),
    "plan": ("dllm_eval.analysis.planning", "documents a paired comparison needs for a target MDE (from a run or a discordance)"),
    "eval-all": ("dllm_eval.matrix", "run the schedulers x tasks x seeds matrix through lm_eval, then report"),
    "train-tiny": ("dllm_eval.train", "train a small embedded model (LLaDA or Dream format) on the synthetic tasks"),
    "timing": ("dllm_eval.timing", "interleaved, paired tokens/s of several configurations on the same batches"),
    "bench": ("dllm_eval.benchmarks.bench", "time fixed decode workloads against the hardware's floors (results/bench)"),
    "lm-eval": ("dllm_eval.lm_eval_cli", "lm_eval's own CLI (same arguments), indexing only --include_path when it has every task"),
}


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, str | None]:
    parser = argparse.ArgumentParser(prog="dllm-eval", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen and name != "lm-eval":
            importlib.import_module(module).add_arguments(p)
    return parser, chosen


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["lm-eval"]:  # every further argument is lm_eval's, so argparse must not see them
        from dllm_eval.lm_eval_cli import main as lm_eval_main

        return lm_eval_main(argv[1:])
    parser, _ = build_parser(argv)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except UserError as exc:
        print(f"dllm-eval {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dllm-eval {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
