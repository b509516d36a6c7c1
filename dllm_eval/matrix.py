"""`dllm-eval eval-all`: run schedulers x seeds through the stock `lm_eval`, then write the report.

Why a driver around the stock CLI instead of calling `simple_evaluate` in-process: what a user
can rerun by hand must be exactly what produced the numbers. Every cell of the matrix is one
literal `lm_eval` command line, recorded verbatim in its done-marker, in `matrix.json` and in
the report. A cell is finished only when lm_eval exited 0 *and* its marker was written; a folder
without a marker is a leftover of an interrupted run and is redone from scratch, so resuming
never mixes half a run with a whole one.

Layout of ``results/<run>/``::

    matrix.json                       settings, configurations, environment, every cell's command
    raw/<label>/seed<k>/.done.json    marker: command, exit code, timings
    raw/<label>/seed<k>/lm_eval.log   lm_eval's stdout+stderr
    raw/<label>/seed<k>/traces/       the adapter's per-request traces
    raw/<label>/seed<k>/<model>/      lm_eval's results_*.json and samples_*.jsonl
    report.md, fig_*.png              from `dllm-eval report`
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dllm_eval import defaults
from dllm_eval.errors import UserError
from dllm_eval.matrix_config import DEFAULT_CONFIG, MatrixConfig, MatrixFile, load_matrix_config

DONE_MARKER = ".done.json"
LM_EVAL_CMD_ENV = "DLLM_EVAL_LM_EVAL_CMD"
# lm-eval's own request bar, or the adapter's "dllm_adaptive[<scheduler>]" bar
_PROGRESS_RE = re.compile(rb"(?:Running (?:generate_until|loglikelihood\w*) requests|dllm_adaptive\[[^\]]*\]):\s*(\d+)%")


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="checkpoint dir or hub id (pretrained=...); default: the embedded model")
    parser.add_argument("--tasks", help="comma-separated lm-eval task names (default from the config file)")
    parser.add_argument(
        "--schedulers", help="comma-separated configuration labels or group names (e.g. peers) from the config file "
        "(default: every config not marked default: false); the baseline is always included"
    )
    parser.add_argument("--seeds", help="comma-separated integer seeds (default from the config file)")
    parser.add_argument("--limit", help="documents per task per run (default from the config file, per device); 'none' for all")
    parser.add_argument("--batch", type=int, help="lm_eval --batch_size (default from the config file)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    parser.add_argument("--run", default="default", help="run name: results go to RESULTS_DIR/RUN (default: %(default)s)")
    parser.add_argument("--results-dir", default="results", help="parent folder of runs (default: %(default)s)")
    parser.add_argument("--config", help=f"matrix config YAML (default: {DEFAULT_CONFIG.name} shipped with dllm-eval)")
    parser.add_argument(
        "--lm-eval-cmd",
        help=f"command that runs lm_eval (default: ${LM_EVAL_CMD_ENV} or '{Path(sys.executable).name} -m dllm_eval.lm_eval_cli', "
        "lm_eval's CLI with a faster task index; 'lm_eval' works the same)",
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failing run")
    parser.add_argument("--no-report", action="store_true", help="run the matrix but do not write the report")


def _csv(value: str | None) -> list[str] | None:
    if value is None:
        return None
    items = [v.strip() for v in value.split(",") if v.strip()]
    return items or None


def _detect_device() -> str:
    try:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    except Exception:
        return "cpu"


def _fmt_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    s = str(v)
    if any(ch in s for ch in ",= ") or not s:
        raise UserError(f"model_args value {s!r} contains ',', '=' or a space, which lm_eval cannot parse")
    return s


def _rel(p: Path) -> str:
    """A path as it will appear in the recorded command: relative to the cwd when inside it."""
    try:
        return str(p.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(p.resolve())


@dataclass
class Cell:
    config: MatrixConfig
    seed: int
    dir: Path
    command: list[str]

    @property
    def name(self) -> str:
        return f"{self.config.label}/seed{self.seed}"

    def fingerprint(self, n_prefix: int) -> str:
        """Identity of the work, not of the interpreter that launches it."""
        return hashlib.sha256(json.dumps(self.command[n_prefix:]).encode()).hexdigest()[:16]


def plan(args: argparse.Namespace) -> tuple[MatrixFile, dict[str, Any], list[Cell], list[str]]:
    """Resolve options against the config file into the list of cells (no side effects)."""
    mf = load_matrix_config(args.config)
    s = mf.settings
    device = args.device or _detect_device()
    by_device = (s.get("tasks_by_device") or {}).get(device.split(":")[0])  # e.g. MATH-500 on GPUs only
    tasks = _csv(args.tasks) or [str(t) for t in (by_device or s.get("tasks") or [])]
    if not tasks:
        raise UserError("no tasks: pass --tasks or set settings.tasks in the config file")
    try:
        seeds = [int(x) for x in (_csv(args.seeds) or [str(x) for x in (s.get("seeds") or [defaults.SEED])])]
    except ValueError:
        raise UserError(f"--seeds must be comma-separated integers, got {args.seeds!r}") from None
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds lists a seed twice: {seeds}")
    wanted = _csv(args.schedulers)
    if wanted:
        labels = [mf.baseline] + [w for w in mf.expand(wanted) if w != mf.baseline]
    else:
        labels = mf.default_labels()
    # limit: CLI > per-device setting > plain setting
    limit: int | None
    if args.limit is not None:
        if str(args.limit).lower() in ("none", "all", "0"):
            limit = None
        else:
            try:
                limit = int(args.limit)
            except ValueError:
                raise UserError(f"--limit must be an integer or 'none', got {args.limit!r}") from None
    else:
        lim = s.get("limit")
        if isinstance(lim, dict):
            lim = lim.get(device.split(":")[0], lim.get("cpu"))
        limit = None if lim is None else int(lim)
    if limit is not None and limit <= 0:
        raise UserError(f"--limit must be positive, got {limit}")
    batch = args.batch or int(s.get("batch") or 16)
    if batch <= 0:
        raise UserError(f"--batch must be positive, got {batch}")
    inc = Path(str(s.get("include_path") or "tasks"))
    if not inc.is_absolute() and not inc.is_dir():
        alt = Path(__file__).resolve().parents[1] / inc  # the repo's tasks/ when run from elsewhere
        inc = alt if alt.is_dir() else inc
    if not inc.is_dir():
        raise UserError(
            f"task folder {inc} not found; run from the repository root or set settings.include_path in {mf.path.name}"
        )
    lm_cmd_str = args.lm_eval_cmd or os.environ.get(LM_EVAL_CMD_ENV)
    # Default: lm_eval's own CLI through dllm_eval.lm_eval_cli, which skips indexing lm-eval's
    # ~14,000 built-in task files when --include_path has every task (see that module).
    lm_cmd = shlex.split(lm_cmd_str) if lm_cmd_str else [sys.executable, "-m", "dllm_eval.lm_eval_cli"]
    run_dir = Path(args.results_dir) / args.run
    if not re.match(r"^[A-Za-z0-9_.+-]+$", args.run):
        raise UserError(f"--run {args.run!r}: use letters, digits and _ . + - only")
    common = s.get("common_params") or {}
    cells: list[Cell] = []
    for label in labels:
        cfg = mf.configs[label]
        for seed in seeds:
            cell_dir = run_dir / "raw" / label / f"seed{seed}"
            margs: dict[str, Any] = {}
            if args.model:
                margs["pretrained"] = args.model
            margs["scheduler"] = cfg.scheduler
            margs.update(common)
            margs.update(cfg.params)
            margs["seed"] = seed
            margs["trace_dir"] = _rel(cell_dir / "traces")
            cmd = [
                *lm_cmd,
                "--model",
                "dllm_adaptive",
                "--model_args",
                ",".join(f"{k}={_fmt_value(v)}" for k, v in margs.items()),
                "--tasks",
                ",".join(tasks),
                "--include_path",
                _rel(inc),
                "--batch_size",
                str(batch),
                "--device",
                device,
                "--seed",
                str(seed),
            ]
            if limit is not None:
                cmd += ["--limit", str(limit)]
            cmd += ["--log_samples", "--output_path", _rel(cell_dir), "--confirm_run_unsafe_code"]
            cells.append(Cell(config=cfg, seed=seed, dir=cell_dir, command=cmd))
    settings = {
        "run": args.run,
        "model": args.model,
        "tasks": tasks,
        "seeds": seeds,
        "limit": limit,
        "batch": batch,
        "device": device,
        "include_path": _rel(inc),
        "lm_eval_cmd": lm_cmd,
        "config_file": str(mf.path),
        "labels": labels,
        "alpha": mf.report.get("alpha", 0.05),
        "min_effect": mf.report.get("min_effect", 0.05),
    }
    return mf, settings, cells, lm_cmd


def _invocation(args: argparse.Namespace) -> str:
    """The eval-all call as a user would type it (explicit options only)."""
    parts = ["dllm-eval", "eval-all"]
    for opt in ("model", "tasks", "schedulers", "seeds", "limit", "batch", "device", "run", "results_dir", "config", "lm_eval_cmd"):
        v = getattr(args, opt, None)
        if v is not None and not (opt == "run" and v == "default") and not (opt == "results_dir" and v == "results"):
            parts += [f"--{opt.replace('_', '-')}", str(v)]
    return shlex.join(parts)


def _environment() -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    for mod in ("torch", "transformers", "lm_eval", "scipy", "numpy"):
        try:
            from importlib.metadata import version

            env[mod] = version(mod if mod != "lm_eval" else "lm_eval")
        except Exception:
            env[mod] = None
    try:
        repo = Path(__file__).resolve().parents[1]
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        # Code only: untracked files and results/ (where this very run writes) are not changed code.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!results"],
                               cwd=repo, capture_output=True, text=True, timeout=10)
        if head.returncode == 0:
            env["git_commit"] = head.stdout.strip()
            env["git_dirty"] = bool(dirty.stdout.strip())
    except Exception:
        pass
    return env


def _write_json_atomic(path: Path, obj: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _cell_state(cell: Cell, n_prefix: int) -> str:
    """'done' (marker matches), 'conflict' (marker for other settings), 'partial' or 'new'."""
    marker = cell.dir / DONE_MARKER
    if marker.is_file():
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            return "partial"
        return "done" if data.get("fingerprint") == cell.fingerprint(n_prefix) else "conflict"
    return "partial" if cell.dir.exists() else "new"


def _run_cell(cell: Cell, bar: Any, base_n: float) -> tuple[int, float]:
    """Run one lm_eval command, streaming its output to lm_eval.log and its progress to the bar."""
    cell.dir.mkdir(parents=True, exist_ok=True)
    log_path = cell.dir / "lm_eval.log"
    start = time.monotonic()
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    with open(log_path, "wb") as log:
        log.write(("$ " + shlex.join(cell.command) + "\n").encode())
        log.flush()
        try:
            proc = subprocess.Popen(cell.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        except OSError as exc:
            raise UserError(f"cannot start lm_eval ({cell.command[0]}): {exc.strerror}; set --lm-eval-cmd") from None
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                log.write(chunk)
                hits = _PROGRESS_RE.findall(chunk)
                if hits and bar is not None:
                    frac = min(int(hits[-1]), 100) / 100.0
                    bar.n = base_n + frac * 0.99
                    bar.refresh()
            rc = proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    return rc, time.monotonic() - start


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        return ""
    return "\n".join(line for line in lines[-n:])


def run(args: argparse.Namespace) -> int:
    mf, settings, cells, lm_cmd = plan(args)
    n_prefix = len(lm_cmd)
    run_dir = Path(args.results_dir) / args.run
    if args.dry_run:
        for c in cells:
            state = _cell_state(c, n_prefix)
            print(f"# {c.name} [{state}]\n{shlex.join(c.command)}")
        return 0
    states = {c.name: _cell_state(c, n_prefix) for c in cells}
    conflicts = [c for c in cells if states[c.name] == "conflict"]
    if conflicts:
        raise UserError(
            f"{conflicts[0].dir} was finished with different settings than this call "
            f"({len(conflicts)} cell(s) affected); use another --run name, or delete that folder to redo it"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    matrix_path = run_dir / "matrix.json"
    previous: dict[str, Any] = {}
    if matrix_path.is_file():
        try:
            previous = json.loads(matrix_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            previous = {}
    configs = dict(previous.get("configs") or {})
    for c in cells:
        configs[c.config.label] = {
            "scheduler": c.config.scheduler,
            "params": c.config.params,
            "role": c.config.role,
            "control_of": c.config.control_of,
            "description": c.config.description,
        }
    cell_records = {r["cell"]: r for r in previous.get("cells", []) if isinstance(r, dict) and "cell" in r}
    matrix: dict[str, Any] = {
        "created": previous.get("created") or _dt.datetime.now().isoformat(timespec="seconds"),
        "updated": _dt.datetime.now().isoformat(timespec="seconds"),
        "argv": _invocation(args),
        "cwd": os.getcwd(),
        "settings": settings,
        "baseline": mf.baseline,
        "configs": configs,
        "environment": _environment(),
        "cells": [],
    }

    def save() -> None:
        matrix["cells"] = list(cell_records.values())
        _write_json_atomic(matrix_path, matrix)

    for c in cells:
        cell_records.setdefault(c.name, {"cell": c.name})
        cell_records[c.name].update({"label": c.config.label, "seed": c.seed, "command": shlex.join(c.command)})
        if states[c.name] == "done":
            cell_records[c.name]["status"] = "done"
    save()

    todo = [c for c in cells if states[c.name] != "done"]
    n_done = len(cells) - len(todo)
    print(
        f"dllm-eval eval-all: {len(cells)} runs ({len(settings['labels'])} configurations x {len(settings['seeds'])} seeds) "
        f"on {', '.join(settings['tasks'])}, limit {settings['limit']}, device {settings['device']}; "
        f"{n_done} already done, results in {run_dir}",
        file=sys.stderr,
    )
    failed: list[Cell] = []
    from tqdm import tqdm

    bar = tqdm(
        total=len(cells),
        initial=n_done,
        unit="run",
        dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n:.1f}/{total} runs [{elapsed}<{remaining}]{postfix}",
    )
    try:
        for c in todo:
            if c.dir.exists():  # a partial leftover: start clean, never mix two attempts
                shutil.rmtree(c.dir)
            bar.set_postfix_str(c.name)
            started = _dt.datetime.now().isoformat(timespec="seconds")
            base_n = bar.n
            try:
                rc, secs = _run_cell(c, bar, base_n)
            except KeyboardInterrupt:
                cell_records[c.name]["status"] = "interrupted (will be redone)"
                raise
            bar.n = base_n
            if rc == 0 and not (any(c.dir.rglob("results_*.json")) and any(c.dir.rglob("samples_*.jsonl"))):
                with open(c.dir / "lm_eval.log", "a", encoding="utf-8") as log:
                    log.write("\ndllm-eval eval-all: lm_eval exited 0 but wrote no results_*.json/samples_*.jsonl\n")
                rc = -1  # a run without logged samples is useless for paired analysis
            if rc == 0:
                marker = {
                    "command": c.command,
                    "command_str": shlex.join(c.command),
                    "fingerprint": c.fingerprint(n_prefix),
                    "returncode": rc,
                    "started": started,
                    "seconds": round(secs, 2),
                }
                _write_json_atomic(c.dir / DONE_MARKER, marker)
                cell_records[c.name].update({"status": "done", "seconds": round(secs, 2)})
            else:
                failed.append(c)
                cell_records[c.name].update({"status": f"failed (exit {rc})", "seconds": round(secs, 2)})
                bar.write(f"dllm-eval eval-all: {c.name} failed (exit {rc}); last lines of {c.dir / 'lm_eval.log'}:", file=sys.stderr)
                bar.write(_tail(c.dir / "lm_eval.log"), file=sys.stderr)
            save()
            bar.update(1)
            if failed and args.fail_fast:
                break
    finally:
        bar.close()
        save()

    report_ok = True
    if not args.no_report:
        from dllm_eval.analysis.report import write_report

        try:
            out = write_report(
                run_dir,
                baseline=mf.baseline,
                alpha=float(settings["alpha"]),
                min_effect=float(settings["min_effect"]),
            )
            print(f"dllm-eval eval-all: report written to {out}", file=sys.stderr)
        except UserError as exc:
            report_ok = False
            print(f"dllm-eval eval-all: no report: {exc}", file=sys.stderr)
    if failed:
        names = ", ".join(c.name for c in failed)
        print(
            f"dllm-eval eval-all: {len(failed)} run(s) failed: {names}. Their logs are in {run_dir}/raw/<label>/seed<k>/lm_eval.log; "
            "rerun the same command to retry only those.",
            file=sys.stderr,
        )
        return 1
    return 0 if report_ok else 1
