"""`dllm-eval exec-check FILE`: run one program in the sandbox and print its verdict.

Useful to see what the scorer sees: the isolation level on this machine, the status of a
suspicious sample (paste `program` from a samples file into a file), or how long it takes.
Exit status: 0 if the program passed, 1 if it did not, 2 on bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dllm_eval.errors import UserError
from dllm_eval.scoring.sandbox import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT, ISOLATION_LEVELS, run_program

VERDICT_FIELDS = ("passed", "status", "duration_s", "isolation", "stdout_tail", "stderr_tail")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="Python program to run (use - for stdin)")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="S",
                        help=f"wall-clock limit in seconds (default {DEFAULT_TIMEOUT:g})")
    parser.add_argument("--memory-mb", type=int, default=DEFAULT_MEMORY_MB, metavar="MB",
                        help=f"address-space limit (default {DEFAULT_MEMORY_MB})")
    parser.add_argument("--isolation", choices=("auto", *ISOLATION_LEVELS), default=None,
                        help="isolation level (default: $DLLM_EVAL_SANDBOX, else the strongest available)")
    parser.add_argument("--no-guard", action="store_true",
                        help="turn off the Python-level guard (to see what the OS isolation alone contains)")
    parser.add_argument("--json", action="store_true", help="print the verdict as one JSON object")


def _read_source(name: str) -> str:
    if name == "-":
        return sys.stdin.read()
    path = Path(name)
    if not path.is_file():
        raise UserError(f"{name}: no such file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def run(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        raise UserError(f"--timeout must be a positive number of seconds, not {args.timeout:g}")
    source = _read_source(args.file)
    result = run_program(source, timeout=args.timeout, memory_mb=args.memory_mb,
                         isolation=args.isolation, guard=not args.no_guard)
    verdict = {key: getattr(result, key) for key in VERDICT_FIELDS}
    if args.json:
        verdict.update(reason=result.reason, returncode=result.returncode, guard=result.guard)
        print(json.dumps(verdict))
    else:
        guard = "on" if result.guard else "off"
        print(f"{result.status} in {result.duration_s:.3f} s (isolation {result.isolation}, guard {guard})")
        if result.reason:
            print(f"reason: {result.reason}")
        for name in ("stdout_tail", "stderr_tail"):
            text = getattr(result, name)
            if text:
                print(f"--- {name.replace('_tail', '')} (tail) ---")
                print(text, end="" if text.endswith("\n") else "\n")
    return 0 if result.passed else 1
