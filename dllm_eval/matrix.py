"""`dllm-eval eval-all`: run schedulers x seeds through the stock `lm_eval`, then write the report.

Why a driver around the stock CLI instead of calling `simple_evaluate` in-process: what a user
can rerun by hand must be exactly what produced the numbers. Every cell of the matrix is one
literal `lm_eval` command line, recorded verbatim in its done-marker, in `matrix.json` and in
the report. A cell is finished only when lm_eval exited 0 *and* its marker was written; a folder
without a marker is a leftover of an interrupted run and is redone from scratch, so resuming
never mixes half a run with a whole one -- except for the adapter's request journal
(``traces/journal/``): every cell runs with ``DLLM_EVAL_RESUME=1`` in its environment (the
adapter's resume=true, kept out of the command because it changes no result), so a redone cell
skips the requests its interrupted attempt finished (the journal is keyed on the full request,
so nothing else is reused), and the journal is deleted once the cell is done.

Cells are independent, so they spread without changing a byte of what they compute: ``--gpus``
runs one cell per device concurrently (each lm_eval sees only its device through
CUDA_VISIBLE_DEVICES, so the recorded command is the same wherever it ran), and
``--launcher slurm`` submits each cell as a SLURM job through submitit (``submitit-local`` runs
the same code path with submitit's local executor). The device or job a cell ran on is recorded
in its marker and in ``matrix.json``, next to its timings.

Layout of ``results/<run>/``::

    matrix.json                       settings, configurations, environment, every cell's command
    raw/<label>/seed<k>/.done.json    marker: command, exit code, timings
    raw/<label>/seed<k>/record.json   what besides the scheduler could change its numbers (dllm_eval.cell_record)
    sequential.json                   --sequential: the plan, the decisions and where each configuration stopped
    raw/<label>/seed<k>/lm_eval.log   lm_eval's stdout+stderr
    raw/<label>/seed<k>/traces/       the adapter's per-request traces (journal/ while unfinished)
    slurm/                            submitit's job scripts and logs (--launcher slurm)
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
import threading
import time
from collections.abc import Hashable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dllm_eval import defaults
from dllm_eval.errors import UserError
from dllm_eval.matrix_config import DEFAULT_CONFIG, SWEEP_DIR, MatrixConfig, MatrixFile, load_matrix_config
from dllm_eval.portable import portable_record
from dllm_eval.trace_row import JOURNAL_DIR

DONE_MARKER = ".done.json"
LM_EVAL_CMD_ENV = "DLLM_EVAL_LM_EVAL_CMD"
LAUNCHERS = ("local", "slurm", "submitit-local")
RESUME_ENV = "DLLM_EVAL_RESUME"  # read by the adapter as the default of its resume= argument
# lm-eval's own request bar, or the adapter's "dllm_adaptive[<scheduler>]" bar
_PROGRESS_RE = re.compile(rb"(?:Running (?:generate_until|loglikelihood\w*) requests|dllm_adaptive\[[^\]]*\]):\s*(\d+)%")


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="checkpoint dir, hub id or embedded name (pretrained=...); default: the embedded model")
    parser.add_argument("--models", help="comma-separated models (e.g. tiny_llada,tiny_dream): the whole matrix per model "
                        "under results/<run>/<model>/, and one report with a table set per model")
    parser.add_argument("--tasks", help="comma-separated lm-eval task names (default from the config file)")
    parser.add_argument(
        "--schedulers", help="comma-separated configuration labels or group names (e.g. peers) from the config file "
        "(default: every config not marked default: false); the baseline is always included"
    )
    parser.add_argument("--seeds", help="comma-separated integer seeds (default from the config file)")
    parser.add_argument("--limit", help="documents per task per run (default from the config file, per device); 'none' for all")
    parser.add_argument("--batch", type=int, help="lm_eval --batch_size (default from the config file)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available, else cpu)")
    parser.add_argument("--no-timing", action="store_true",
                        help="skip the interleaved timing pass (tokens/s then come from the cells, unpaired in time)")
    parser.add_argument("--gen-length", type=int,
                        help="fix every configuration's canvas to this many tokens (default: each task's max_gen_toks "
                        "rounded up to a whole block); the answer is still cut at the task's stop strings")
    parser.add_argument("--gen-lengths",
                        help="generation-length sweep after the matrix: comma-separated lengths (e.g. 64,128,256) at which "
                        "settings.sweep's configurations and the baseline are rerun and timed, under <run>/sweep/gen<L>/; "
                        "'none' to skip (default: settings.sweep, on for the devices it lists)")
    parser.add_argument("--run", default="default", help="run name: results go to RESULTS_DIR/RUN (default: %(default)s)")
    parser.add_argument("--results-dir", default="results", help="parent folder of runs (default: %(default)s)")
    parser.add_argument("--config", help=f"matrix config YAML (default: {DEFAULT_CONFIG.name} shipped with dllm-eval)")
    parser.add_argument(
        "--lm-eval-cmd",
        help=f"command that runs lm_eval (default: ${LM_EVAL_CMD_ENV} or '{Path(sys.executable).name} -m dllm_eval.lm_eval_cli', "
        "lm_eval's CLI with a faster task index; 'lm_eval' works the same)",
    )
    parser.add_argument(
        "--sequential", action="store_true",
        help="reveal documents in looks (the task's own order, up to --limit) and stop a configuration once all its "
        "comparisons with the baseline are decided by the group-sequential rule (dllm_eval.analysis.sequential)",
    )
    parser.add_argument("--looks", type=int, default=5, help="looks of --sequential (default: %(default)s)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands and exit")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failing run")
    parser.add_argument("--no-report", action="store_true", help="run the matrix but do not write the report")
    parser.add_argument(
        "--gpus", help="run cells concurrently, one per device: a count N (cuda:0..N-1) or a list (0,1 or cuda:0,cuda:2); "
        "each cell's lm_eval sees only its device (CUDA_VISIBLE_DEVICES). Default: one cell at a time"
    )
    parser.add_argument(
        "--cells-per-gpu", type=int, default=1, metavar="K",
        help="with --gpus: K cells share each device at once (small models leave a GPU mostly idle, and a cell's "
        "CPU work -- lm-eval's start, scoring code in the sandbox -- then overlaps other cells' decoding)"
    )
    parser.add_argument(
        "--cpu-cells", type=int, metavar="K",
        help="a CPU run without --gpus: K cells at once, each with cores/K threads (lm-eval's start, its "
        "task building and the code sandbox are single-threaded, so two 1-thread cells on 2 cores finish "
        "in 0.75x the time of two 2-thread cells in turn). Default: settings.cpu_cells of the matrix "
        "config (the shipped one: 2), else 1"
    )
    parser.add_argument(
        "--launcher", choices=LAUNCHERS, default="local",
        help="local: this machine (default); slurm: one SLURM job per cell through submitit; "
        "submitit-local: submitit's local executor (the slurm code path without SLURM, for tests)",
    )
    slurm = parser.add_argument_group("SLURM (--launcher slurm)")
    slurm.add_argument("--slurm-partition", help="partition to submit to (default: the cluster's)")
    slurm.add_argument("--slurm-time", type=int, default=240, help="minutes per cell job (default: %(default)s)")
    slurm.add_argument("--slurm-gpus-per-job", type=int, default=1, help="GPUs per cell job (default: %(default)s)")
    slurm.add_argument("--slurm-cpus-per-job", type=int, default=8, help="CPUs per cell job (default: %(default)s)")
    slurm.add_argument("--slurm-mem-gb", type=int, help="memory per cell job in GB (default: the cluster's)")
    slurm.add_argument("--slurm-max-parallel", type=int, help="most cell jobs running at once (SLURM array throttle)")
    slurm.add_argument("--slurm-account", help="account to charge")
    slurm.add_argument("--slurm-qos", help="quality of service")
    slurm.add_argument("--slurm-constraint", help="node features, e.g. a100")


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
    # eval-all --sequential: the --limit grows look by look; the adapter's journal is kept so that the
    # next look decodes only the new documents (see _cell_state and execute_cell)
    sequential: bool = False

    @property
    def name(self) -> str:
        return f"{self.config.label}/seed{self.seed}"

    def fingerprint(self, n_prefix: int, limit: int | None = None) -> str:
        """Identity of the work, not of the interpreter that launches it (``limit``: of the same
        command with that --limit, which is how a sequential run recognises an earlier look)."""
        cmd = list(self.command[n_prefix:])
        if limit is not None and "--limit" in cmd:
            cmd[cmd.index("--limit") + 1] = str(limit)
        return hashlib.sha256(json.dumps(cmd).encode()).hexdigest()[:16]


def plan(args: argparse.Namespace) -> tuple[MatrixFile, dict[str, Any], list[Cell], list[str]]:
    """Resolve options against the config file into the list of cells (no side effects)."""
    mf = load_matrix_config(args.config)
    s = mf.settings
    device = args.device or ("cuda" if getattr(args, "gpus", None) else _detect_device())
    if getattr(args, "gpus", None) and ":" in device:
        raise UserError(f"--device {device} with --gpus: give --device cuda (each cell sees only its own device)")
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
    common = common_params(mf, args)
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
            cells.append(Cell(config=cfg, seed=seed, dir=cell_dir, command=cmd,
                              sequential=bool(getattr(args, "sequential_look", None))))
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
    if getattr(args, "gen_length", None):
        settings["gen_length"] = int(args.gen_length)
    return mf, settings, cells, lm_cmd


def common_params(mf: MatrixFile, args: argparse.Namespace) -> dict[str, Any]:
    """settings.common_params, with --gen-length (a sweep point) on top: passed to every configuration."""
    common = dict(mf.settings.get("common_params") or {})
    gen_length = getattr(args, "gen_length", None)
    if gen_length is not None:
        if int(gen_length) <= 0:
            raise UserError(f"--gen-length must be a positive number of tokens, got {gen_length}")
        common["gen_length"] = int(gen_length)
    return common


def _placement(args: argparse.Namespace) -> dict[str, Any]:
    """How the cells were spread (recorded in matrix.json apart from the invocation, so that the
    report, which quotes the invocation, does not depend on it)."""
    out = {"launcher": getattr(args, "launcher", "local"), "gpus": parse_gpus(getattr(args, "gpus", None))}
    if getattr(args, "cells_per_gpu", 1) != 1:
        out["cells_per_gpu"] = args.cells_per_gpu
    if (getattr(args, "cpu_cells", None) or 1) > 1:
        out["cpu_cells"] = args.cpu_cells
    if out["launcher"] != "local":
        out.update({k: v for k, v in vars(args).items() if k.startswith("slurm_") and v is not None})
    return out


def _invocation(args: argparse.Namespace) -> str:
    """The eval-all call as a user would type it (explicit options only; placement options --gpus,
    --launcher, --slurm-* are recorded apart, see `_placement`)."""
    parts = ["dllm-eval", "eval-all"]
    for opt in ("model", "tasks", "schedulers", "seeds", "limit", "batch", "device", "gen_length", "gen_lengths", "run",
                "results_dir", "config", "lm_eval_cmd"):
        v = getattr(args, opt, None)
        if v is not None and not (opt == "run" and v == "default") and not (opt == "results_dir" and v == "results"):
            parts += [f"--{opt.replace('_', '-')}", str(v)]
    if getattr(args, "sequential", False):
        parts += ["--sequential", "--looks", str(args.looks)]
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
    from dllm_eval.cell_record import code_version

    code = code_version()  # the one definition of "which code ran" (cells record the same)
    if code["commit"]:
        env["git_commit"] = code["commit"]
        env["git_dirty"] = code["dirty"]
        env["git_diff_sha256"] = code["diff_sha256"]
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
        if data.get("fingerprint") == cell.fingerprint(n_prefix):
            return "done"
        if cell.sequential:  # a marker of another look: extend it (a smaller --limit), or it covers this look
            old = _limit_of(data.get("command") or [])
            if old is not None and data.get("fingerprint") == cell.fingerprint(n_prefix, limit=old):
                return "partial" if old < (_limit_of(cell.command) or 0) else "done"
        return "conflict"
    return "partial" if cell.dir.exists() else "new"


def _limit_of(command: list[str]) -> int | None:
    """The --limit of a cell's command (None without one)."""
    for i, arg in enumerate(command[:-1]):
        if arg == "--limit":
            try:
                return int(command[i + 1])
            except ValueError:
                return None
    return None


_LIVE: set[subprocess.Popen] = set()  # lm_eval processes of running cells, ended on Ctrl-C
_LIVE_LOCK = threading.Lock()


def _run_cell(cell: Cell, bar: Any, base_n: float, env_extra: dict[str, str] | None = None,
              cwd: str | None = None) -> tuple[int, float]:
    """Run one lm_eval command, streaming its output to lm_eval.log and its progress to the bar."""
    cell.dir.mkdir(parents=True, exist_ok=True)
    log_path = cell.dir / "lm_eval.log"
    start = time.monotonic()
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(env_extra or {})
    with open(log_path, "wb") as log:
        log.write(("$ " + shlex.join(cell.command) + "\n").encode())
        log.flush()
        try:
            proc = subprocess.Popen(cell.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        except OSError as exc:
            raise UserError(f"cannot start lm_eval ({cell.command[0]}): {exc.strerror}; set --lm-eval-cmd") from None
        with _LIVE_LOCK:
            _LIVE.add(proc)
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
            _stop(proc)
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(proc)
    return rc, time.monotonic() - start


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def _clear_leftover(cell_dir: Path) -> None:
    """Start a cell clean, never mixing two attempts -- but keep the adapter's request journal,
    from which the new attempt resumes (its entries are keyed on the full request)."""
    if not cell_dir.exists():
        return
    journal = cell_dir / "traces" / JOURNAL_DIR
    for child in cell_dir.iterdir():
        if child.name == "traces" and journal.is_dir():
            for sub in child.iterdir():
                if sub != journal:
                    shutil.rmtree(sub) if sub.is_dir() else sub.unlink()
        elif child.is_dir():
            shutil.rmtree(child)
        else:
            child.unlink()


def execute_cell(cell: Cell, n_prefix: int, placement: str | None, env_extra: dict[str, str] | None = None,
                 cwd: str | None = None, bar: Any = None, base_n: float = 0.0) -> dict[str, Any]:
    """Run one cell to its end and write its done-marker: the one code path for every launcher
    (a thread on this machine, or a submitit job on a SLURM node, which pickles this call).

    Returns the cell's record for matrix.json. `placement` (a device, or a SLURM job) goes into
    the marker and the record only, never into the command, so resume does not depend on it;
    None means "inside a submitit job": the job's host and id.
    """
    if placement is None:
        import submitit

        job = submitit.JobEnvironment()
        placement = f"{job.hostname} job {job.job_id}"
    cell_dir = cell.dir if cwd is None or cell.dir.is_absolute() else Path(cwd) / cell.dir
    located = Cell(cell.config, cell.seed, cell_dir, cell.command, cell.sequential)
    _clear_leftover(cell_dir)
    started = _dt.datetime.now().isoformat(timespec="seconds")
    rc, secs = _run_cell(located, bar, base_n, {**(env_extra or {}), RESUME_ENV: "1"}, cwd)
    if rc == 0 and not (any(cell_dir.rglob("results_*.json")) and any(cell_dir.rglob("samples_*.jsonl"))):
        with open(cell_dir / "lm_eval.log", "a", encoding="utf-8") as log:
            log.write("\ndllm-eval eval-all: lm_eval exited 0 but wrote no results_*.json/samples_*.jsonl\n")
        rc = -1  # a run without logged samples is useless for paired analysis
    record: dict[str, Any] = {"seconds": round(secs, 2), "device": placement}
    if rc == 0:
        marker = {
            "command": cell.command,
            "command_str": shlex.join(cell.command),
            "fingerprint": cell.fingerprint(n_prefix),
            "returncode": rc,
            "started": started,
            "seconds": round(secs, 2),
            "device": placement,
        }
        _copy_cell_record(cell_dir)
        _write_json_atomic(cell_dir / DONE_MARKER, marker)
        if not cell.sequential:
            shutil.rmtree(cell_dir / "traces" / JOURNAL_DIR, ignore_errors=True)  # the traces are final now
        record["status"] = "done"
    else:
        record["status"] = f"failed (exit {rc})"
    return record


def _copy_cell_record(cell_dir: Path) -> None:
    """The adapter's record of the cell (`dllm_eval.cell_record`, in its results file) as
    <cell>/record.json, written atomically; nothing when the runner wrote none."""
    from dllm_eval.cell_record import RECORD_FILE, write_record

    for path in sorted(cell_dir.rglob("results_*.json")):
        try:
            info = (json.loads(path.read_text(encoding="utf-8")).get("config") or {}).get("dllm_eval") or {}
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(info.get("record"), dict):
            write_record(cell_dir / RECORD_FILE, info["record"])
            return


def parse_gpus(spec: str | None) -> list[str] | None:
    """--gpus: a count N (cuda:0..N-1) or a comma list of indices or cuda:k names -> device names."""
    if spec is None:
        return None
    spec = spec.strip()
    if spec.isdigit():
        if int(spec) < 1:
            raise UserError(f"--gpus {spec}: give at least one device")
        return [f"cuda:{i}" for i in range(int(spec))]
    devices = []
    for item in _csv(spec) or []:
        index = item.removeprefix("cuda:")
        if not index.isdigit():
            raise UserError(f"--gpus {spec!r}: use a count (2) or device indices (0,1 or cuda:0,cuda:1)")
        devices.append(f"cuda:{index}")
    if not devices or len(set(devices)) != len(devices):
        raise UserError(f"--gpus {spec!r}: list each device once")
    return devices


def _device_env(device: str) -> dict[str, str]:
    return {"CUDA_VISIBLE_DEVICES": device.removeprefix("cuda:")}


def cpu_cells(args: argparse.Namespace, mf: MatrixFile, device: str) -> int:
    """Cells run at once on a CPU run without --gpus: --cpu-cells, else settings.cpu_cells (given
    plainly or per device), else 1; never more than the machine's cores."""
    if parse_gpus(getattr(args, "gpus", None)) or device != "cpu":
        return 1
    given = getattr(args, "cpu_cells", None)
    k = int(given if given is not None else _per_device(mf.settings.get("cpu_cells"), device, 1))
    if k < 1:
        raise UserError(f"--cpu-cells {k}: give at least 1")
    return min(k, os.cpu_count() or 1)


def _thread_env(threads: int) -> dict[str, str]:
    """A cell's intra-op threads (torch reads OMP_NUM_THREADS at start): fixed per slot, so a cell's
    floating-point reductions do not depend on whether the other slots were busy."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def _slurm_executor(args: argparse.Namespace, run_dir: Path) -> Any:
    """A submitit executor: SLURM (--launcher slurm) or its local stand-in (submitit-local)."""
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm needs submitit: pip install submitit") from None
    cluster = "slurm" if args.launcher == "slurm" else "local"
    executor = submitit.AutoExecutor(folder=run_dir.resolve() / "slurm" / "%j", cluster=cluster)
    params: dict[str, Any] = {
        "name": f"dllm-eval-{args.run}",
        "timeout_min": args.slurm_time,
        "gpus_per_node": args.slurm_gpus_per_job if cluster == "slurm" else 0,
        "cpus_per_task": args.slurm_cpus_per_job,
        "tasks_per_node": 1,
        "nodes": 1,
    }
    if args.slurm_mem_gb:
        params["mem_gb"] = args.slurm_mem_gb
    if cluster == "slurm":
        for opt, key in (("slurm_partition", "slurm_partition"), ("slurm_max_parallel", "slurm_array_parallelism"),
                         ("slurm_account", "slurm_account"), ("slurm_qos", "slurm_qos"),
                         ("slurm_constraint", "slurm_constraint")):
            if getattr(args, opt) is not None:
                params[key] = getattr(args, opt)
    executor.update_parameters(**params)
    return executor


def _tail(path: Path, n: int = 15) -> str:
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").replace("\r", "\n").splitlines()
    except OSError:
        return ""
    return "\n".join(line for line in lines[-n:])


def _run_here(args: argparse.Namespace, todo: list[Cell], n_prefix: int, bar: Any, finished: Any,
              records: dict[str, dict[str, Any]], any_failed: Any, device: str) -> None:
    """This machine: one cell at a time; with --gpus one per device; on a CPU with K = --cpu-cells
    above 1, K at once with cores/K threads each. A small thread pool hands the next cell to
    whichever slot is free."""
    devices = parse_gpus(args.gpus)
    env_of = _device_env
    if devices:
        if getattr(args, "cells_per_gpu", 1) < 1:
            raise UserError(f"--cells-per-gpu {args.cells_per_gpu}: give at least 1")
        devices = [d for _ in range(getattr(args, "cells_per_gpu", 1)) for d in devices]
    elif (getattr(args, "cpu_cells", None) or 1) > 1:
        threads = max(1, (os.cpu_count() or 1) // args.cpu_cells)
        devices = [f"cpu slot {i + 1} of {args.cpu_cells} ({threads} thread{'s' * (threads > 1)})"
                   for i in range(args.cpu_cells)]

        def env_of(slot: str) -> dict[str, str]:
            return _thread_env(threads)
    if not devices:  # serial, with the in-cell progress bar
        for c in todo:
            bar.set_postfix_str(c.name)
            records[c.name]["status"] = "running"
            try:
                finished(c, execute_cell(c, n_prefix, device, bar=bar, base_n=bar.n))
            except KeyboardInterrupt:
                records[c.name]["status"] = "interrupted (will be redone)"
                raise
            if any_failed() and args.fail_fast:
                return
        return
    free = list(devices)
    pending = list(todo)
    running: dict[Future, tuple[Cell, str]] = {}
    with ThreadPoolExecutor(max_workers=len(devices), thread_name_prefix="eval-all") as pool:
        try:
            while pending or running:
                while pending and free and not (any_failed() and args.fail_fast):
                    c, device = pending.pop(0), free.pop(0)
                    records[c.name].update({"status": "running", "device": device})
                    running[pool.submit(execute_cell, c, n_prefix, device, env_of(device))] = (c, device)
                if not running:
                    break
                bar.set_postfix_str(", ".join(f"{c.name}@{d}" for c, d in running.values()))
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in done:
                    c, device = running.pop(fut)
                    free.append(device)
                    finished(c, fut.result())
        except BaseException:
            for fut, (c, _) in running.items():
                fut.cancel()
                records[c.name]["status"] = "interrupted (will be redone)"
            with _LIVE_LOCK:
                for proc in list(_LIVE):
                    _stop(proc)
            raise


def _run_submitit(args: argparse.Namespace, run_dir: Path, todo: list[Cell], n_prefix: int, finished: Any,
                  records: dict[str, dict[str, Any]], save: Any, any_failed: Any) -> None:
    """One submitit job per cell (a SLURM job array under --launcher slurm). Each job runs
    `execute_cell`, so it writes its own marker: cells whose jobs finish after this driver is
    gone are still done for the next call. Waits for the jobs and records them as they end."""
    import submitit

    executor = _slurm_executor(args, run_dir)
    cwd = os.getcwd()
    jobs = []
    with executor.batch():
        for c in todo:
            jobs.append(executor.submit(execute_cell, c, n_prefix, None, None, cwd))
    by_job = {}
    for job, c in zip(jobs, todo):
        records[c.name].update({"status": "submitted", "device": f"{args.launcher} job {job.job_id}"})
        by_job[job.job_id] = c
    save()
    print(f"dllm-eval eval-all: submitted {len(jobs)} job(s) with submitit ({args.launcher}); "
          f"logs in {run_dir / 'slurm'}", file=sys.stderr)
    for job in submitit.helpers.as_completed(jobs, poll_frequency=1 if args.launcher == "submitit-local" else 30):
        c = by_job[job.job_id]
        try:
            record = job.result()
        except Exception as exc:  # the job died (timeout, preemption, node failure): redone next call
            record = {"status": f"failed (job {job.job_id}: {type(exc).__name__})"}
        finished(c, record)


def model_slug(model: str) -> str:
    """A folder name for a model: an embedded name as is, a path's last part, a hub id with / as __."""
    text = str(model).rstrip("/")
    slug = text.replace("/", "__") if text.count("/") == 1 and not Path(text).exists() else Path(text).name
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", slug) or "model"


def timing_pass(args: argparse.Namespace, mf: MatrixFile, settings: dict[str, Any], run_dir: Path) -> bool:
    """The interleaved, paired timing pass (`dllm_eval.timing`) over the run's configurations,
    written to `<run>/timing.json` for the report; settings.timing in the config file sets its
    documents per task (per device), batch size and the labels it skips. Skipped with
    --no-timing, for a fake lm_eval (nothing real to time) and when the file is already there and
    newer than every finished cell (a file older than a cell, e.g. one that came with a clone of a
    committed run, is timed again)."""
    cfg = mf.settings.get("timing") or {}
    out = run_dir / "timing.json"
    if not cfg or getattr(args, "no_timing", False) or args.lm_eval_cmd or os.environ.get(LM_EVAL_CMD_ENV):
        return False
    markers = [m.stat().st_mtime for m in run_dir.glob("raw/*/*/.done.json")]
    if out.is_file() and out.stat().st_mtime >= max(markers, default=0.0):
        return False
    from dllm_eval.models import EMBEDDED_MODEL_DIR
    from dllm_eval.timing import (
        build_requests,
        design_meta,
        eager_front_end,
        interleaved_timing,
        tier_batches,
        write_rows,
    )

    limit = getattr(args, "timing_limit", None) or _per_device(cfg.get("limit", 48), settings["device"], 48)
    if settings.get("limit") is not None:  # never more documents than the cells ran (a quick LIMIT=8 try)
        limit = min(int(limit), int(settings["limit"]))
    batch = int(cfg.get("batch", 4))
    labels = [lab for lab in settings["labels"] if lab not in set(cfg.get("skip") or [])]
    common = common_params(mf, args)
    configs = {lab: (mf.configs[lab].scheduler, {**common, **mf.configs[lab].params}) for lab in labels}
    front = eager_front_end(args.model or EMBEDDED_MODEL_DIR, settings["device"])
    requests = {t: build_requests(t, settings["include_path"], int(limit)) for t in settings["tasks"]}
    from tqdm import tqdm

    with tqdm(total=sum(len(tier_batches(r, batch)) for r in requests.values()) * len(configs),
              desc="timing (interleaved)") as bar:
        rows = interleaved_timing(front, requests, configs, batch, progress=bar)
    write_rows(rows, out, {"baseline": mf.baseline, "labels": labels, "batch": batch, "limit": int(limit),
                           "device": settings["device"], "dtype": str(front.model.dtype).removeprefix("torch."),
                           "gen_length": common.get("gen_length"), **design_meta(front)})
    return True


def _per_device(value: Any, device: str, fallback: Any) -> Any:
    """A setting given per device ({cpu: 48, cuda: 200}) or plainly; the cpu entry stands in."""
    if isinstance(value, dict):
        return value.get(device.split(":")[0], value.get("cpu", fallback))
    return fallback if value is None else value


def sweep_lengths(args: argparse.Namespace, mf: MatrixFile, device: str) -> list[int]:
    """The generation lengths of the sweep: --gen-lengths, else settings.sweep.gen_lengths when
    settings.sweep.run_by_default is on for this device; [] for no sweep."""
    cfg = mf.settings.get("sweep") or {}
    given = getattr(args, "gen_lengths", None)
    if given is not None:
        if str(given).strip().lower() in ("none", "off", ""):
            return []
        raw = _csv(str(given)) or []
    else:
        if not cfg or not _per_device(cfg.get("run_by_default"), device, False):
            return []
        raw = [str(v) for v in cfg.get("gen_lengths") or []]
    try:
        lengths = sorted({int(v) for v in raw})
    except ValueError:
        raise UserError(f"--gen-lengths must be comma-separated token counts (e.g. 64,128,256), got {given!r}") from None
    if len(lengths) < 2 or lengths[0] <= 0:
        raise UserError(f"--gen-lengths needs at least two different positive lengths, got {given if given is not None else raw}")
    return lengths


def sweep_pass(args: argparse.Namespace, mf: MatrixFile, settings: dict[str, Any], run_dir: Path) -> int:
    """The generation-length sweep (settings.sweep): at each length, settings.sweep.configs and the
    baseline rerun through lm_eval with the canvas fixed to that length (accuracy), then the
    interleaved timing pass at that length (paired tokens/s), as a sub-run `<run>/sweep/gen<L>/`
    that resumes like any run. The report reads the sub-runs; the longest length judges the seed
    claim "long-sequence scaling". Returns the worst exit code of the sub-runs."""
    lengths = sweep_lengths(args, mf, settings["device"])
    if not lengths:
        return 0
    cfg = mf.settings.get("sweep") or {}
    labels = mf.expand([str(x) for x in cfg.get("configs") or []])
    if not [lab for lab in labels if lab != mf.baseline]:
        raise UserError(f"{mf.path.name}: settings.sweep.configs must name at least one configuration besides the baseline")
    # an explicit --limit (a quick try) applies to the sweep too; else the sweep's own per-device limit
    limit = settings["limit"] if args.limit is not None else (_per_device(cfg.get("limit"), settings["device"], None)
                                                              or settings["limit"])
    worst = 0
    for length in lengths:
        print(f"dllm-eval eval-all: generation-length sweep, gen_length {length} -> {run_dir / SWEEP_DIR / f'gen{length}'}",
              file=sys.stderr)
        sub = argparse.Namespace(**{**vars(args), "results_dir": str(run_dir / SWEEP_DIR), "run": f"gen{length}",
                                    "schedulers": ",".join(labels), "limit": None if limit is None else str(limit),
                                    "gen_length": length, "gen_lengths": "none", "no_report": True, "models": None,
                                    "timing_limit": limit})
        worst = max(worst, run(sub))
    return worst


def run_models(args: argparse.Namespace, models: list[str]) -> int:
    """The same matrix for each model, one after another, then one report over all of them."""
    if args.model:
        raise UserError("give --model or --models, not both")
    slugs = [model_slug(m) for m in models]
    if len(set(slugs)) != len(slugs):
        raise UserError(f"--models {','.join(models)}: two models map to the same folder name ({', '.join(slugs)})")
    root = Path(args.results_dir) / args.run
    worst = 0
    for model, slug in zip(models, slugs):
        print(f"dllm-eval eval-all: model {model} -> {root / slug}", file=sys.stderr)
        sub = argparse.Namespace(**{**vars(args), "models": None, "model": model, "results_dir": str(root),
                                    "run": slug, "no_report": True})
        worst = max(worst, run(sub))
    if args.dry_run or args.no_report:
        return worst
    from dllm_eval.analysis.report import write_multi_model_report

    mf = load_matrix_config(args.config)
    out = write_multi_model_report(root, {slug: root / slug for slug in slugs}, baseline=mf.baseline,
                                   alpha=float(mf.report.get("alpha", 0.05)),
                                   min_effect=float(mf.report.get("min_effect", 0.05)))
    print(f"dllm-eval eval-all: report over {len(slugs)} models written to {out}", file=sys.stderr)
    return worst


def run(args: argparse.Namespace) -> int:
    models = _csv(getattr(args, "models", None))
    if models:
        return run_models(args, models)
    if getattr(args, "gpus", None) and getattr(args, "launcher", "local") != "local":
        raise UserError("--gpus spreads cells over this machine's devices; with --launcher slurm each job gets "
                        "--slurm-gpus-per-job instead")
    parse_gpus(getattr(args, "gpus", None))  # a bad list fails before anything runs
    if getattr(args, "sequential", False):
        return run_sequential(args)
    mf, settings, cells, lm_cmd = plan(args)
    n_prefix = len(lm_cmd)
    run_dir = Path(args.results_dir) / args.run
    if args.dry_run:
        for c in cells:
            state = _cell_state(c, n_prefix)
            print(f"# {c.name} [{state}]\n{shlex.join(c.command)}")
        return sweep_pass(args, mf, settings, run_dir)  # the sweep's sub-runs print theirs
    states = {c.name: _cell_state(c, n_prefix) for c in cells}
    conflicts = [c for c in cells if states[c.name] == "conflict"]
    if conflicts:
        raise UserError(
            f"{conflicts[0].dir} was finished with different settings than this call "
            f"({len(conflicts)} cell(s) affected); use another --run name, or delete that folder to redo it"
        )
    args.cpu_cells = cpu_cells(args, mf, settings["device"])
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
        "placement": _placement(args),
        "cwd": os.getcwd(),
        "settings": settings,
        "baseline": mf.baseline,
        "configs": configs,
        "environment": _environment(),
        "cells": [],
    }

    def save() -> None:
        matrix["cells"] = list(cell_records.values())
        _write_json_atomic(matrix_path, portable_record(matrix))  # read elsewhere: no machine paths

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
        f"{n_done} already done, results in {run_dir}"
        + (f"; {args.cpu_cells} at a time" if args.cpu_cells > 1 else ""),
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
    lock = threading.Lock()

    def finished(c: Cell, record: dict[str, Any]) -> None:
        with lock:
            cell_records[c.name].update(record)
            if record["status"] != "done":
                failed.append(c)
                bar.write(f"dllm-eval eval-all: {c.name} failed ({record['status'].removeprefix('failed (')}; "
                          f"last lines of {c.dir / 'lm_eval.log'}:", file=sys.stderr)
                bar.write(_tail(c.dir / "lm_eval.log"), file=sys.stderr)
            save()
            bar.n = int(bar.n)
            bar.update(1)

    try:
        if args.launcher != "local":
            _run_submitit(args, run_dir, todo, n_prefix, finished, cell_records, save, lambda: bool(failed))
        else:
            _run_here(args, todo, n_prefix, bar, finished, cell_records, lambda: bool(failed), settings["device"])
    finally:
        bar.close()
        save()

    report_ok = True
    if not failed and timing_pass(args, mf, settings, run_dir):
        print(f"dllm-eval eval-all: interleaved timing written to {run_dir / 'timing.json'}", file=sys.stderr)
    if not failed and sweep_pass(args, mf, settings, run_dir):
        report_ok = False  # a failed sweep length: the report still comes, the exit code says so
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


# --------------------------------------------------------------------------------------------
# eval-all --sequential
# --------------------------------------------------------------------------------------------

SEQUENTIAL_FILE = "sequential.json"
ORDER = "each task's own document order (lm-eval --limit n takes the first n documents), fixed before the run"
_CONTROL_ROLES = ("control_aa", "control_degraded")


def cell_outcomes(cell_dir: Path, task: str) -> np.ndarray:
    """The cell's 0/1 scores on ``task`` (primary filter) in document order, read with the report's loader."""
    from dllm_eval.analysis.loading import load_run

    run = load_run(cell_dir)
    t = run.table.where(task=task, filter=run.primary_filter[task])
    order = np.argsort(t["doc_id"].astype(float))
    ids = t["doc_id"][order].astype(float)
    if not np.array_equal(ids, np.arange(ids.size)):
        raise UserError(f"{cell_dir}: task {task} documents are not 0..{ids.size - 1} in order; "
                        "--sequential needs the task's own order")
    scores = t["correct"][order]
    if not np.all(np.isin(scores, (0.0, 1.0))):
        raise UserError(f"{cell_dir}: task {task} has scores other than 0/1; --sequential pairs 0/1 outcomes")
    return scores


def sequential_families(labels: list[str], baseline: str, roles: dict[str, str | None], tasks: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Family name -> its comparisons (configuration, task): the real ones together, each control alone."""
    out: dict[str, list[tuple[str, str]]] = {"comparisons": []}
    for lab in labels:
        if lab == baseline:
            continue
        fam = lab if roles.get(lab) in _CONTROL_ROLES else "comparisons"
        out.setdefault(fam, []).extend((lab, t) for t in tasks)
    return {k: v for k, v in out.items() if v}


def _plan_for(args: argparse.Namespace, n_max: int, alpha: float, mde: float) -> Any:
    from dllm_eval.analysis.sequential import SequentialPlan

    if args.looks < 1:
        raise UserError(f"--looks must be at least 1, got {args.looks}")
    try:
        return SequentialPlan(n_max=n_max, looks=args.looks, alpha=alpha, mde=mde)
    except ValueError as exc:
        raise UserError(f"--sequential with --limit {n_max} and --looks {args.looks}: {exc}") from None


def run_sequential(args: argparse.Namespace) -> int:
    """eval-all --sequential: the look loop; returns eval-all's exit status.

    The design is fixed before any outcome: at most --limit documents per task in the task's own
    order (lm-eval's --limit n takes the first n), revealed in --looks equal steps. At look k every
    still-running configuration and the baseline run through `run` with --limit n_k in the same
    cell folders; the adapter's journal, kept between looks (Cell.sequential), answers the documents
    already decoded. The paired 0/1 outcomes so far then go through the pure rule
    (`dllm_eval.analysis.sequential.decide_counts`): the real comparisons (configuration x task)
    are one Holm family, each control its own, as in the report; a configuration stops when all
    its comparisons are decided, the baseline runs while any configuration does. <run>/sequential.json
    holds plan, decisions and stops after each look; rerunning the same command replays the looks
    from the files.
    """
    from dllm_eval.analysis.sequential import DECIDED, configuration_stops, decide_counts

    mf, settings, cells, _ = plan(args)
    n_max = settings["limit"]
    if n_max is None:
        raise UserError("--sequential reveals documents up to a maximum: give --limit N (or settings.limit)")
    if len(settings["seeds"]) != 1:
        raise UserError(f"--sequential pairs one outcome per document: give one seed (got {settings['seeds']})")
    seq = _plan_for(args, int(n_max), float(settings["alpha"]), float(settings["min_effect"]))
    base, labels, tasks = mf.baseline, settings["labels"], settings["tasks"]
    roles = {lab: mf.configs[lab].role for lab in labels}
    fams = sequential_families(labels, base, roles, tasks)
    run_dir = Path(args.results_dir) / args.run
    seed = settings["seeds"][0]
    if args.dry_run:
        print(f"# --sequential: looks after {', '.join(map(str, seq.look_sizes))} documents per task; "
              "look 1 runs every configuration:")
    counts: dict[Hashable, list[tuple[int, int]]] = {key: [] for fam in fams.values() for key in fam}
    running = [lab for lab in labels if lab != base]
    decisions: dict[str, list[Any]] = {}
    look = 0
    for look in range(1, seq.k + 1):
        n = seq.look_sizes[look - 1]
        sub = argparse.Namespace(**{**vars(args), "sequential": False, "sequential_look": look, "limit": str(n),
                                    "schedulers": ",".join([base, *running]), "no_report": True, "no_timing": True})
        print(f"dllm-eval eval-all --sequential: look {look} of {seq.k}: {n} documents per task for "
              f"{len(running)} configuration(s) and the baseline", file=sys.stderr)
        rc = run(sub)
        if args.dry_run:
            return rc
        if rc != 0:
            print(f"dllm-eval eval-all --sequential: look {look} did not finish; rerun the same command to resume",
                  file=sys.stderr)
            return rc
        outcome = {(lab, t): cell_outcomes(run_dir / "raw" / lab / f"seed{seed}", t)
                   for lab in [base, *running] for t in tasks}
        for (_lab, t), x in outcome.items():
            if x.size < n:
                raise UserError(f"task {t} has only {x.size} documents, fewer than look {look}'s {n}: "
                                f"give --limit {x.size} or less with --sequential")
        for key in counts:
            lab, t = key  # type: ignore[misc]
            if lab in running:
                a, b = outcome[(lab, t)][:n], outcome[(base, t)][:n]
                counts[key].append((int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))))
            else:  # stopped: never read again by the rule, which freezes a stopped configuration
                counts[key].append(counts[key][-1])
        decisions = {fam: decide_counts(seq, {k: counts[k] for k in keys}, look) for fam, keys in fams.items()}
        stops = {s.configuration: s for ds in decisions.values() for s in configuration_stops(seq, ds)}
        running = [lab for lab in running if not all(d.decided for ds in decisions.values() for d in ds
                                                     if d.configuration == lab)]
        _write_sequential(run_dir, seq, decisions, fams, look, stops)
        if not running:
            break
    for c in cells:  # the traces are final now
        shutil.rmtree(c.dir / "traces" / JOURNAL_DIR, ignore_errors=True)
    _finish_matrix_json(run_dir, args, settings)
    n_decided = sum(d.status in DECIDED for ds in decisions.values() for d in ds)
    print(f"dllm-eval eval-all --sequential: {n_decided} of {len(counts)} comparisons decided after look {look}",
          file=sys.stderr)
    if timing_pass(args, mf, settings, run_dir):
        print(f"dllm-eval eval-all: interleaved timing written to {run_dir / 'timing.json'}", file=sys.stderr)
    if args.no_report:
        return 0
    from dllm_eval.analysis.report import write_report

    try:
        out = write_report(run_dir, baseline=base, alpha=float(settings["alpha"]), min_effect=float(settings["min_effect"]))
    except UserError as exc:
        print(f"dllm-eval eval-all: no report: {exc}", file=sys.stderr)
        return 1
    print(f"dllm-eval eval-all: report written to {out}", file=sys.stderr)
    return 0


def _write_sequential(run_dir: Path, seq: Any, decisions: dict[str, list[Any]], fams: dict[str, list[tuple[str, str]]],
                      look: int, stops: dict[Hashable, Any]) -> None:
    """<run>/sequential.json: the plan of the real family, every decision, the families and the stops."""
    from dataclasses import asdict, replace

    from dllm_eval.analysis.sequential import to_record

    all_decisions = [d for ds in decisions.values() for d in ds]
    record = to_record(replace(seq, family_size=len(fams.get("comparisons", [])) or None), all_decisions)
    record.update({
        "order": ORDER,
        "looks_run": look,
        "families": {fam: [list(k) for k in keys] for fam, keys in fams.items()},
        "stops": {str(k): asdict(v) for k, v in stops.items()},
    })
    _write_json_atomic(run_dir / SEQUENTIAL_FILE, record)


def _finish_matrix_json(run_dir: Path, args: argparse.Namespace, settings: dict[str, Any]) -> None:
    """matrix.json as the whole sequential run (the looks rewrote it with their own --limit)."""
    path = run_dir / "matrix.json"
    m = json.loads(path.read_text(encoding="utf-8"))
    m["argv"] = _invocation(args)
    m["settings"] = {**m.get("settings", {}), "limit": settings["limit"], "labels": settings["labels"],
                     "sequential": {"looks": args.looks, "file": SEQUENTIAL_FILE}}
    _write_json_atomic(path, portable_record(m))
