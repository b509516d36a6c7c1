"""`dllm-eval report RUN_DIR [--baseline LABEL] [--out DIR]`: report.md, figures and summary.json."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a results/<run> folder from eval-all, or any folder of lm_eval --log_samples output")
    parser.add_argument("--baseline", help="label every scheduler is compared against (default: the run's baseline)")
    parser.add_argument("--out", help="where to write report.md and figures (default: RUN_DIR)")
    parser.add_argument("--alpha", type=float, help="family-wise significance level (default: the matrix config's, 0.05)")
    parser.add_argument(
        "--min-effect", type=float,
        help="smallest accuracy difference worth detecting, as a fraction (default: the matrix config's, 0.05); "
        "comparisons whose MDE exceeds it are called under-powered",
    )
    parser.add_argument("--metric", help="score to analyse when a task logs several (default: its first higher-is-better metric)")
    parser.add_argument("--no-figures", action="store_true", help="skip the PNG figures")
    parser.add_argument("--csv", action="store_true", help="also write the tidy per-document table as table.csv")


def _defaults() -> tuple[float, float]:
    try:
        from dllm_eval.matrix_config import load_matrix_config

        rep = load_matrix_config().report
        return float(rep.get("alpha", 0.05)), float(rep.get("min_effect", 0.05))
    except Exception:
        return 0.05, 0.05


def run(args: argparse.Namespace) -> int:
    from dllm_eval.analysis.report import write_report

    alpha, min_effect = _defaults()
    path = write_report(
        args.run_dir,
        baseline=args.baseline,
        out=args.out,
        alpha=args.alpha if args.alpha is not None else alpha,
        min_effect=args.min_effect if args.min_effect is not None else min_effect,
        metric=args.metric,
        figures=not args.no_figures,
        csv=args.csv,
    )
    print(f"dllm-eval report: wrote {path}", file=sys.stderr)
    return 0
