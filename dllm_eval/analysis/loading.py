"""Load lm-eval output folders (results, logged samples, our traces) into one tidy table.

One row per (run label, seed, task, doc_id, filter): the score, the decoder's cost from the trace
(NFE, generated tokens, latency), the document's tier and the hashes used to prove that two runs
saw the same documents. Analysis must never compare different documents by accident, so the
loader is strict: a corrupt file, a task without logged samples, duplicate lines, or runs whose
document sets or filters differ fail with a message that says what to do. Anything it tolerates
(a missing trace, an unfinished matrix cell) is recorded in ``RunData.notes`` and printed in the
report; nothing is dropped silently.

Layouts understood:

* ``dllm-eval eval-all`` runs: ``RUN/matrix.json`` and ``RUN/raw/<label>/seed<k>/...`` with a
  ``.done.json`` marker per finished cell (cells without one are skipped, with a note);
* any folder holding lm-eval ``--output_path`` trees: the label is the path below the folder
  (minus ``seed<k>`` and the model sub-folder lm-eval adds), the seed the one lm-eval recorded.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dllm_eval.errors import UserError
from dllm_eval.settings import split_settings

__all__ = ["DONE_MARKER", "ConfigInfo", "RunData", "TidyTable", "UnitInfo", "load_run"]

DONE_MARKER = ".done.json"
_SEED_RE = re.compile(r"^seed(-?\d+)$")
_RESULTS_RE = re.compile(r"^results_(.+)\.json$")
# Metrics lm-eval logs next to the score that are not scores.
_NOT_SCORES = {"resp_len", "bypass"}

COLUMNS: tuple[str, ...] = (
    "label",
    "seed",
    "task",
    "doc_id",
    "filter",
    "metric",
    "correct",
    "tier",
    "subject",
    "nfe",
    "batch_nfe",
    "gen_tokens",
    "gen_length",
    "latency_s",
    "cost_s",
    "batch_id",
    "batch_size",
    "n_events",
    "trace_metrics",
    "doc_hash",
    "target_hash",
    "resp_hash",
    "source",
)
_FLOAT_COLS = {"correct", "nfe", "batch_nfe", "gen_tokens", "gen_length", "latency_s", "cost_s", "batch_size", "n_events", "tier"}


class TidyTable:
    """A small column store: one numpy array per column, one row per logged sample.

    pandas is not a dependency of this project; the analysis needs only selection by equality,
    unique values in first-seen order and export, which a dict of arrays does plainly.
    """

    def __init__(self, columns: dict[str, np.ndarray]):
        lengths = {len(v) for v in columns.values()}
        if len(lengths) > 1:
            raise ValueError(f"columns differ in length: {lengths}")
        self.columns = columns

    @classmethod
    def from_rows(cls, rows: list[dict[str, Any]]) -> TidyTable:
        cols: dict[str, np.ndarray] = {}
        for name in COLUMNS:
            vals = [r.get(name) for r in rows]
            if name in _FLOAT_COLS:
                cols[name] = np.array([math.nan if v is None else float(v) for v in vals], dtype=float)
            else:
                arr = np.empty(len(vals), dtype=object)
                arr[:] = vals
                cols[name] = arr
        return cls(cols)

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]

    def filter(self, mask: np.ndarray) -> TidyTable:
        return TidyTable({k: v[mask] for k, v in self.columns.items()})

    def where(self, **equals: Any) -> TidyTable:
        mask = np.ones(len(self), dtype=bool)
        for k, v in equals.items():
            mask &= self.columns[k] == v
        return self.filter(mask)

    def unique(self, name: str) -> list[Any]:
        seen: dict[Any, None] = {}
        for v in self.columns[name]:
            seen.setdefault(v, None)
        return list(seen)

    def rows(self) -> Iterator[dict[str, Any]]:
        names = list(self.columns)
        for i in range(len(self)):
            yield {k: self.columns[k][i] for k in names}

    def to_csv(self, path: Path) -> None:
        """Write the table (without the per-row trace metrics dict) for use in other tools."""
        names = [c for c in self.columns if c != "trace_metrics"]
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(names)
            for i in range(len(self)):
                w.writerow(["" if _isnan(self.columns[c][i]) else self.columns[c][i] for c in names])


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


@dataclass
class ConfigInfo:
    """What one run label is: scheduler, parameters, and its role in the comparison."""

    label: str
    scheduler: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    role: str | None = None  # "baseline", "control_aa", "control_degraded" or None
    control_of: str | None = None
    description: str = ""
    seeds: list[int] = field(default_factory=list)


@dataclass
class UnitInfo:
    """One lm-eval results file and where it sits in the run."""

    label: str
    seed: int | None
    path: Path
    tasks: list[str]
    meta: dict[str, Any]
    command: str | None = None
    record: dict[str, Any] | None = None  # the cell's record (dllm_eval.cell_record), None for older runs


@dataclass
class RunData:
    root: Path
    table: TidyTable
    configs: dict[str, ConfigInfo]
    tasks: list[str]
    filters: dict[str, list[str]]
    primary_filter: dict[str, str]
    metric: dict[str, str]
    units: list[UnitInfo]
    matrix: dict[str, Any] | None
    notes: list[str]
    has_tiers: dict[str, bool]
    isolation_levels: set[str] = field(default_factory=set)  # sandbox levels the code scores ran at
    timing: list[dict[str, Any]] | None = None  # rows of <run>/timing.json (the interleaved pass)
    timing_meta: dict[str, Any] | None = None

    @property
    def labels(self) -> list[str]:
        return list(self.configs)


# --------------------------------------------------------------------------------------------
# file readers
# --------------------------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UserError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); the file is corrupt or was cut off "
            "by an interrupted run: delete that run folder and run it again"
        ) from None
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror})") from None


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot be read ({exc})") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UserError(
                f"{path}:{lineno}: not valid JSON ({exc.msg}); the file is corrupt or was cut off by an "
                "interrupted run: delete that run folder and run it again"
            ) from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object per line, got {type(obj).__name__}")
        out.append(obj)
    return out


def _isolation_of(sample: dict[str, Any]) -> str | None:
    """The sandbox level a code sample was scored at (its verdict record in `filtered_resps`)."""
    resps = sample.get("filtered_resps")
    first = resps[0] if isinstance(resps, list) and resps else resps
    first = first[0] if isinstance(first, list) and first else first
    if isinstance(first, str) and first.startswith("{"):
        try:
            level = json.loads(first).get("isolation")
        except (json.JSONDecodeError, AttributeError):
            return None
        return str(level) if level else None
    return None


def _hash_resps(sample: dict[str, Any]) -> str:
    payload = json.dumps(sample.get("filtered_resps", sample.get("resps")), sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:16]


def _torch_version(pretty_env_info: Any) -> str | None:
    if isinstance(pretty_env_info, str):
        m = re.search(r"PyTorch version:\s*(\S+)", pretty_env_info)
        if m:
            return m.group(1)
    return None


def _model_args(config: dict[str, Any]) -> dict[str, Any]:
    ma = config.get("model_args")
    if isinstance(ma, dict):
        return ma
    if isinstance(ma, str):
        try:
            return dict(split_settings(ma, what="model_args"))
        except UserError:  # a foreign results file: keep what parses, drop the rest
            return dict(split_settings([p for p in ma.split(",") if "=" in p], what="model_args"))
    return {}


def _to_int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------------


def _cell_of(results_path: Path, base: Path, model_dir: str | None) -> tuple[str | None, int | None, Path]:
    """(label, seed, cell dir) from a results file's place under ``base``."""
    rel = results_path.parent.relative_to(base)
    parts = list(rel.parts)
    seed = None
    cell_parts: list[str] = []
    label_parts: list[str] = []
    for i, p in enumerate(parts):
        m = _SEED_RE.match(p)
        if m:
            seed = int(m.group(1))
            cell_parts = parts[: i + 1]
            continue
        if i == len(parts) - 1 and model_dir is not None and p == model_dir:
            continue
        if seed is None:
            label_parts.append(p)
    cell = base.joinpath(*cell_parts) if cell_parts else results_path.parent
    label = "/".join(label_parts) if label_parts else None
    return label, seed, cell


def _find_traces(unit_dir: Path, cell_dir: Path, trace_dirs: list[Any]) -> list[Path]:
    """Trace files of one lm_eval run: next to the samples, in <output_path>/traces (the adapter's
    default), in the trace_dir it recorded, or anywhere in the matrix cell."""
    found: dict[Path, None] = {}
    for d in [unit_dir, unit_dir.parent / "traces", *[Path(t) for t in trace_dirs if isinstance(t, str) and t]]:
        if d.is_dir():
            for p in sorted(d.glob("traces_*.jsonl")):
                found[p.resolve()] = None
    if cell_dir != unit_dir and cell_dir.is_dir():
        for p in sorted(cell_dir.rglob("traces_*.jsonl")):
            found[p.resolve()] = None
    return list(found)


def _subject(doc: dict[str, Any]) -> str | None:
    """A document's `subject` field (MATH's seven subjects), for the report's per-subject table."""
    value = doc.get("subject")
    return value if isinstance(value, str) and value else None


def _choose_metric(task: str, sample: dict[str, Any], results: dict[str, Any], wanted: str | None, path: Path) -> str:
    names = [m for m in sample.get("metrics", []) if isinstance(m, str)]
    if wanted:
        if wanted not in sample:
            raise UserError(
                f"{path}: task {task} has no metric {wanted!r} (it logs {', '.join(names) or 'none'}); "
                "pick one of those with --metric"
            )
        return wanted
    hib = (results.get("higher_is_better") or {}).get(task, {})
    for m in names:
        if m in _NOT_SCORES or m not in sample:
            continue
        if hib.get(m, True) is True and isinstance(sample[m], (int, float, bool)):
            return m
    raise UserError(
        f"{path}: cannot tell which logged metric of task {task} is the score (logged: {', '.join(names) or 'none'}); "
        "name it with --metric"
    )


# --------------------------------------------------------------------------------------------
# main entry
# --------------------------------------------------------------------------------------------


def load_run(root: str | Path, *, metric: str | None = None, primary_filter: dict[str, str] | None = None) -> RunData:
    """Load every finished lm-eval run under ``root`` into a ``RunData``.

    Raises ``UserError`` for an empty or missing folder, corrupt JSON/JSONL, a task without logged
    samples, duplicate sample lines, two results for the same (label, seed, task), and runs of one
    task whose documents, hashes or filters differ.
    """
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder; pass the run folder that `dllm-eval eval-all` or lm_eval wrote")
    notes: list[str] = []
    isolation_levels: set[str] = set()
    matrix_path = root / "matrix.json"
    matrix = _read_json(matrix_path) if matrix_path.is_file() else None
    base = root / "raw" if (root / "raw").is_dir() else root
    results_files = sorted(p for p in base.rglob("results_*.json") if _RESULTS_RE.match(p.name))
    if not results_files:
        raise UserError(
            f"no lm-eval results (results_*.json) under {root}; run `dllm-eval eval-all --run NAME` or "
            "`lm_eval ... --log_samples --output_path DIR` first and pass that folder"
        )

    rows: list[dict[str, Any]] = []
    units: list[UnitInfo] = []
    configs: dict[str, ConfigInfo] = {}
    seen_cells: dict[tuple[str, int | None, str], Path] = {}
    task_filters: dict[str, list[str]] = {}
    task_metric: dict[str, str] = {}
    task_primary: dict[str, str] = {}
    skipped_cells: set[Path] = set()

    for rpath in results_files:
        res = _read_json(rpath)
        if not isinstance(res, dict) or "results" not in res:
            raise UserError(f"{rpath}: not an lm-eval results file (no 'results' key)")
        cfg = res.get("config") or {}
        margs = _model_args(cfg)
        label, seed, cell = _cell_of(rpath, base, res.get("model_name_sanitized"))
        if matrix is not None and base.name == "raw" and not (cell / DONE_MARKER).is_file():
            if cell not in skipped_cells:
                skipped_cells.add(cell)
                notes.append(
                    f"skipped {cell.relative_to(root)}: no {DONE_MARKER} marker, so lm_eval did not finish there "
                    "(rerun `dllm-eval eval-all` with the same --run to complete it)"
                )
            continue
        info = cfg.get("dllm_eval") if isinstance(cfg.get("dllm_eval"), dict) else {}
        if label is None:
            label = str(info.get("label") or margs.get("scheduler") or rpath.parent.name)
        if seed is None:
            seed = _to_int(margs.get("seed", cfg.get("random_seed")))
        date_id = _RESULTS_RE.match(rpath.name).group(1)  # type: ignore[union-attr]
        groups = set((res.get("group_subtasks") or {}).keys())
        tasks = [t for t in res["results"] if t not in groups]
        if not tasks:
            raise UserError(f"{rpath}: lists no tasks in 'results'")
        ci = configs.setdefault(label, ConfigInfo(label=label))
        ci.scheduler = ci.scheduler or info.get("scheduler") or margs.get("scheduler")
        if not ci.params:
            params = next((info[k] for k in ("resolved_params", "scheduler_args", "params") if isinstance(info.get(k), dict)), None)
            ci.params = dict(params) if params else {k: v for k, v in margs.items() if k not in ("trace_dir", "seed", "pretrained")}
            user_set = info.get("scheduler_args") if isinstance(info.get("scheduler_args"), dict) else margs
            if "gen_length" not in user_set:
                # the adapter then sizes the canvas per task; the resolved value is a placeholder
                ci.params.pop("gen_length", None)
        if seed is not None and seed not in ci.seeds:
            ci.seeds.append(seed)
        meta = {
            "model": margs.get("pretrained") or info.get("pretrained") or info.get("model") or res.get("model_name"),
            "device": cfg.get("device"),
            "batch_size": cfg.get("batch_size"),
            "limit": cfg.get("limit"),
            "lm_eval_version": res.get("lm_eval_version"),
            "transformers_version": res.get("transformers_version"),
            "torch_version": info.get("torch_version") or _torch_version(res.get("pretty_env_info")),
            "git_hash": res.get("git_hash"),
            "date": res.get("date"),
            "eval_seconds": res.get("total_evaluation_time_seconds"),
            "model_args": margs,
            "n_samples": res.get("n-samples"),
            "dllm_eval": info,
        }
        command = None
        marker = cell / DONE_MARKER
        if marker.is_file():
            command = (_read_json(marker) or {}).get("command_str")
        units.append(UnitInfo(label=label, seed=seed, path=rpath, tasks=tasks, meta=meta, command=command,
                              record=_cell_record(cell, info)))

        traces = _load_traces(_find_traces(rpath.parent, cell, [margs.get("trace_dir"), info.get("trace_dir")]), notes, label, seed)
        for task in tasks:
            key = (label, seed, task)
            if key in seen_cells:
                raise UserError(
                    f"two lm-eval results for label {label!r}, seed {seed}, task {task}: {seen_cells[key]} and {rpath}; "
                    "delete the stale one"
                )
            seen_cells[key] = rpath
            sfiles = sorted(rpath.parent.glob(f"samples_{task}_{date_id}.jsonl"))
            if not sfiles:
                raise UserError(
                    f"{rpath.parent}: results for task {task} but no samples_{task}_{date_id}.jsonl; "
                    "rerun lm_eval with --log_samples"
                )
            samples = _read_jsonl(sfiles[0])
            if not samples:
                raise UserError(f"{sfiles[0]}: empty samples file; rerun that lm_eval run")
            tcfg = (res.get("configs") or {}).get(task, {})
            if task not in task_primary:
                fl = tcfg.get("filter_list") if isinstance(tcfg, dict) else None
                if primary_filter and task in primary_filter:
                    task_primary[task] = primary_filter[task]
                elif isinstance(fl, list) and fl and isinstance(fl[0], dict) and "name" in fl[0]:
                    task_primary[task] = str(fl[0]["name"])
            if task not in task_metric:
                task_metric[task] = _choose_metric(task, samples[0], res, metric, sfiles[0])
            mname = task_metric[task]
            seen_keys: set[tuple[int, str]] = set()
            tr = traces.get(task, {})
            used_trace: set[int] = set()
            for lineno, s in enumerate(samples, 1):
                where = f"{sfiles[0]}:{lineno}"
                for k in ("doc_id", "filter", "doc_hash"):
                    if k not in s:
                        raise UserError(f"{where}: missing field {k!r}; this is not an lm-eval --log_samples file")
                doc_id = _to_int(s["doc_id"])
                if doc_id is None:
                    raise UserError(f"{where}: doc_id {s['doc_id']!r} is not an integer")
                filt = str(s["filter"])
                if (doc_id, filt) in seen_keys:
                    raise UserError(
                        f"{where}: a second line for doc {doc_id}, filter {filt}; lm-eval appends to samples files, "
                        "so two runs wrote here: delete the folder and rerun"
                    )
                seen_keys.add((doc_id, filt))
                task_filters.setdefault(task, [])
                if filt not in task_filters[task]:
                    task_filters[task].append(filt)
                if mname not in s:
                    raise UserError(f"{where}: no value for metric {mname!r}")
                val = s[mname]
                if isinstance(val, bool):
                    val = float(val)
                if not isinstance(val, (int, float)) or not math.isfinite(float(val)):
                    raise UserError(f"{where}: metric {mname!r} is {val!r}, not a finite number")
                if not 0.0 <= float(val) <= 1.0:
                    raise UserError(
                        f"{where}: metric {mname!r} is {val}, outside 0..1; the report compares accuracies: "
                        "choose a 0-1 score with --metric"
                    )
                doc = s.get("doc") if isinstance(s.get("doc"), dict) else {}
                tier = _to_int(doc.get("tier")) if doc else None
                level = _isolation_of(s)
                if level:
                    isolation_levels.add(level)
                t = tr.get(doc_id)
                if t is not None:
                    used_trace.add(doc_id)
                rows.append(
                    {
                        "label": label,
                        "seed": seed,
                        "task": task,
                        "doc_id": doc_id,
                        "filter": filt,
                        "metric": mname,
                        "correct": float(val),
                        "tier": tier,
                        "subject": _subject(doc),
                        "doc_hash": s.get("doc_hash"),
                        "target_hash": s.get("target_hash"),
                        "resp_hash": _hash_resps(s),
                        "source": str(sfiles[0]),
                        **(t or {}),
                    }
                )
            n_docs = len({k[0] for k in seen_keys})
            missing = n_docs - len(used_trace)
            if traces and missing:
                notes.append(f"{label} seed {seed} {task}: {missing} of {n_docs} documents have no trace row (NFE/latency missing there)")
            extra = set(tr) - used_trace
            if extra:
                notes.append(f"{label} seed {seed} {task}: {len(extra)} trace rows match no logged sample; they were not used")
            if not traces:
                notes.append(f"{label} seed {seed}: no traces_*.jsonl found, so NFE, tokens/s and latency are unavailable")

    if matrix is not None and base.name == "raw":
        # cells that died before lm_eval wrote any results, or never started
        for cell in sorted(p for p in base.glob("*/seed*") if p.is_dir()):
            if not (cell / DONE_MARKER).is_file() and cell not in skipped_cells:
                skipped_cells.add(cell)
                notes.append(
                    f"skipped {cell.relative_to(root)}: no {DONE_MARKER} marker, so lm_eval did not finish there "
                    "(see its lm_eval.log; rerun `dllm-eval eval-all` with the same --run to complete it)"
                )
        for rec in matrix.get("cells") or []:
            name = rec.get("cell") if isinstance(rec, dict) else None
            if isinstance(name, str) and "/" in name and not (base / name).exists():
                notes.append(f"{name} is part of this run's matrix but never ran")
    if not rows:
        raise UserError(
            f"no finished runs under {root}: every matrix cell lacks its {DONE_MARKER} marker; "
            "rerun `dllm-eval eval-all` with the same --run to finish them"
        )
    if (root / "sequential.json").is_file():
        rows = _common_documents(rows, notes)
    table = TidyTable.from_rows(rows)
    tasks = table.unique("task")
    for task in tasks:
        task_primary.setdefault(task, task_filters[task][0])
        if task_primary[task] not in task_filters[task]:
            raise UserError(
                f"task {task} has no filter {task_primary[task]!r} (filters: {', '.join(task_filters[task])})"
            )
    _check_alignment(table, tasks)
    _check_records(units, notes)
    _attach_roles(configs, matrix)
    has_tiers = {t: bool(np.any(np.isfinite(table.where(task=t)["tier"]))) for t in tasks}
    for c in configs.values():
        c.seeds.sort()
    timing = _read_json(root / "timing.json") if (root / "timing.json").is_file() else None
    return RunData(
        root=root,
        table=table,
        configs=configs,
        tasks=tasks,
        filters=task_filters,
        primary_filter=task_primary,
        metric=task_metric,
        units=units,
        matrix=matrix,
        notes=notes,
        has_tiers=has_tiers,
        isolation_levels=isolation_levels,
        timing=timing.get("rows") if isinstance(timing, dict) else None,
        timing_meta=timing.get("meta") if isinstance(timing, dict) else None,
    )


def _common_documents(rows: list[dict[str, Any]], notes: list[str]) -> list[dict[str, Any]]:
    """A sequential run (eval-all --sequential) stopped configurations at different looks: the
    per-task tables pair every configuration on the documents all of them decoded (the first n),
    and say so; the stopping decisions themselves come from sequential.json."""
    docs: dict[tuple[str, Any, str], set[int]] = {}
    for r in rows:
        docs.setdefault((r["label"], r["seed"], r["task"]), set()).add(r["doc_id"])
    common: dict[str, set[int]] = {}
    for (_lab, _seed, task), ids in docs.items():
        common[task] = ids if task not in common else common[task] & ids
    for task, ids in common.items():
        most = max(len(v) for k, v in docs.items() if k[2] == task)
        if len(ids) < most:
            notes.append(f"{task}: sequential run, configurations stopped at different looks; the tables pair every "
                         f"configuration on the {len(ids)} documents all of them decoded (of up to {most}); read the "
                         "stopping decisions from the sequential section")
    return [r for r in rows if r["doc_id"] in common[r["task"]]]


def _cell_record(cell: Path, info: dict[str, Any]) -> dict[str, Any] | None:
    """<cell>/record.json (eval-all), else the record the adapter put into the results file."""
    from dllm_eval.cell_record import RECORD_FILE

    path = cell / RECORD_FILE
    if path.is_file():
        rec = _read_json(path)
        if not isinstance(rec, dict):
            raise UserError(f"{path}: expected a JSON object (a cell record)")
        return rec
    rec = info.get("record")
    return rec if isinstance(rec, dict) else None


def _check_records(units: list[UnitInfo], notes: list[str]) -> None:
    """Refuse to compare cells whose records differ outside the scheduler settings (UserError
    naming the field, the cells and the values); cells without a record only get a note."""
    from dllm_eval.cell_record import compare_records

    def name(u: UnitInfo) -> str:
        return u.label if u.seed is None else f"{u.label}/seed{u.seed}"

    with_record = {name(u): u.record for u in units if u.record is not None}
    without = sorted({name(u) for u in units if u.record is None})
    if without:
        notes.append(
            f"{len(without)} cell(s) have no record of weights, tokenizer, data, versions, dtype and sandbox "
            f"(made before cells were recorded), so they could not be checked to match: {', '.join(without[:6])}"
            + (" ..." if len(without) > 6 else "")
        )
    compare_records(with_record)  # type: ignore[arg-type]


def _load_traces(paths: list[Path], notes: list[str], label: str, seed: int | None) -> dict[str, dict[int, dict[str, Any]]]:
    """Per task, per doc_id: the trace fields we analyse, summed over repeats.

    NFE and generated tokens are summed over a document's repeats (its total cost); latency and the
    per-row wall-time share are summed too, so a document's cost is what it took to answer it.
    """
    out: dict[str, dict[int, dict[str, Any]]] = {}
    dup = 0
    seen: set[tuple[str, int, int]] = set()
    for path in paths:
        fallback_task = path.stem[len("traces_") :]
        for lineno, r in enumerate(_read_jsonl(path), 1):
            task = str(r.get("task") or fallback_task)
            doc_id = _to_int(r.get("doc_id"))
            if doc_id is None:
                raise UserError(f"{path}:{lineno}: trace row without an integer doc_id")
            rep = _to_int(r.get("repeat")) or 0
            key = (task, doc_id, rep)
            if key in seen:
                dup += 1
                continue
            seen.add(key)
            bw, bs, lat = r.get("batch_wall_s"), r.get("batch_size"), r.get("latency_s")
            cost = None
            if isinstance(bw, (int, float)) and isinstance(bs, (int, float)) and bs > 0:
                cost = float(bw) / float(bs)
            elif isinstance(lat, (int, float)):
                cost = float(lat)
            entry = out.setdefault(task, {}).get(doc_id)
            vals = {
                "nfe": _num(r.get("nfe")),
                "batch_nfe": _num(r.get("batch_nfe")),
                "gen_tokens": _num(r.get("gen_tokens")),
                "gen_length": _num(r.get("gen_length")),
                "latency_s": _num(lat),
                "cost_s": cost,
                "batch_size": _num(bs),
                "batch_id": None if r.get("batch_id") is None else str(r.get("batch_id")),
                "n_events": float(len(r.get("events") or [])),
                "trace_metrics": r.get("metrics") if isinstance(r.get("metrics"), dict) else {},
            }
            if entry is None:
                out[task][doc_id] = vals
            else:
                for k in ("nfe", "batch_nfe", "gen_tokens", "latency_s", "cost_s", "n_events"):
                    if entry.get(k) is not None and vals.get(k) is not None:
                        entry[k] = entry[k] + vals[k]
    if dup:
        notes.append(
            f"{label} seed {seed}: {dup} duplicate trace rows (same task, doc_id, repeat) ignored; "
            "was the trace folder reused by two runs?"
        )
    return out


def _num(v: Any) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and math.isfinite(float(v)):
        return float(v)
    return None


def _check_alignment(table: TidyTable, tasks: list[str]) -> None:
    """Every (label, seed) of a task must have the same documents, hashes and filters."""
    for task in tasks:
        sub = table.where(task=task)
        groups: dict[tuple[str, Any], dict[tuple[int, str], tuple[Any, Any]]] = {}
        for lab, seed, did, filt, dh, th in zip(
            sub["label"], sub["seed"], sub["doc_id"], sub["filter"], sub["doc_hash"], sub["target_hash"]
        ):
            groups.setdefault((lab, seed), {})[(int(did), filt)] = (dh, th)
        ref_key = next(iter(groups))
        ref = groups[ref_key]
        ref_docs = {k[0] for k in ref}
        ref_filters = {k[1] for k in ref}
        for key, g in groups.items():
            if key == ref_key:
                continue
            docs = {k[0] for k in g}
            filters = {k[1] for k in g}
            who = f"{key[0]!r} (seed {key[1]})"
            ref_who = f"{ref_key[0]!r} (seed {ref_key[1]})"
            if filters != ref_filters:
                raise UserError(
                    f"task {task}: {who} has filters {sorted(filters)} but {ref_who} has {sorted(ref_filters)}; "
                    "runs must use the same task version"
                )
            if docs != ref_docs:
                only_a = sorted(docs - ref_docs)[:5]
                only_b = sorted(ref_docs - docs)[:5]
                raise UserError(
                    f"task {task}: {who} has {len(docs)} documents but {ref_who} has {len(ref_docs)} "
                    f"(only in the first: {only_a}, only in the second: {only_b}); "
                    "rerun them with the same --limit and task version"
                )
            for k, (dh, th) in g.items():
                rdh, rth = ref[k]
                if dh != rdh or (th is not None and rth is not None and th != rth):
                    what = "doc_hash" if dh != rdh else "target_hash"
                    raise UserError(
                        f"task {task}, doc {k[0]}: {what} differs between {who} and {ref_who}; "
                        "the runs scored different data, so they cannot be paired: regenerate one of them"
                    )


def _attach_roles(configs: dict[str, ConfigInfo], matrix: dict[str, Any] | None) -> None:
    """Roles come from the run's matrix.json, else from the packaged eval_matrix.yaml by label."""
    source: dict[str, Any] = {}
    if matrix and isinstance(matrix.get("configs"), dict):
        source = matrix["configs"]
    else:
        try:
            from dllm_eval.matrix_config import load_matrix_config

            source = {k: v.__dict__ for k, v in load_matrix_config().configs.items()}
        except Exception:  # the yaml is optional for analysis of foreign runs
            source = {}
    for label, ci in configs.items():
        spec = source.get(label)
        if not isinstance(spec, dict):
            continue
        ci.role = spec.get("role") or ci.role
        ci.control_of = spec.get("control_of") or ci.control_of
        ci.description = spec.get("description") or ci.description
        ci.scheduler = ci.scheduler or spec.get("scheduler")
