"""`dllm-eval eval-all --sequential`: reveal documents in looks and stop what is decided.

The design is fixed before any outcome is seen: at most ``--limit`` documents per task, in the
task's own order (lm-eval's ``--limit n`` takes the first n documents of the test split, so the
order never depends on outcomes), revealed in ``--looks`` equal steps
(`SequentialPlan.look_sizes`). At look k every still-running configuration and the baseline are
run by the ordinary eval-all machinery with ``--limit n_k``: the cell is the same folder as at
look k-1, and the adapter's resume journal, kept between looks, answers the documents already
decoded, so each document is decoded once per configuration. Then the paired 0/1 outcomes so far
go through the stopping rule (`dllm_eval.analysis.sequential.decide_counts`, a pure function):

* the real comparisons (configuration x task, against the baseline) form one family, Holm across
  them as in the report's main table; each control (A/A, degraded) is its own family over its
  tasks, outside that one, as the report's controls are;
* a configuration stops when all its comparisons are decided (better, worse, or equivalent within
  the report's min_effect); the baseline runs as long as any configuration does.

After each look `<run>/sequential.json` holds the plan, the decisions and the stop of each
configuration; the report renders it (per configuration: the look it stopped at and why, and the
repeated confidence intervals valid at that look). An interrupted run resumes with the same
command: looks already run are replayed from the files (the rule is a pure function of them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Hashable
from pathlib import Path
from typing import Any

import numpy as np

from dllm_eval.errors import UserError
from dllm_eval.trace_row import JOURNAL_DIR

SEQUENTIAL_FILE = "sequential.json"
ORDER = "each task's own document order (lm-eval --limit n takes the first n documents), fixed before the run"
CONTROL_ROLES = ("control_aa", "control_degraded")


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


def families(labels: list[str], baseline: str, roles: dict[str, str | None], tasks: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Family name -> its comparisons (configuration, task): the real ones together, each control alone."""
    out: dict[str, list[tuple[str, str]]] = {"comparisons": []}
    for lab in labels:
        if lab == baseline:
            continue
        fam = lab if roles.get(lab) in CONTROL_ROLES else "comparisons"
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
    """The look loop (see the module docstring); returns eval-all's exit status."""
    from dllm_eval import matrix
    from dllm_eval.analysis.sequential import DECIDED, configuration_stops, decide_counts

    mf, settings, cells, _ = matrix.plan(args)
    n_max = settings["limit"]
    if n_max is None:
        raise UserError("--sequential reveals documents up to a maximum: give --limit N (or settings.limit)")
    if len(settings["seeds"]) != 1:
        raise UserError(f"--sequential pairs one outcome per document: give one seed (got {settings['seeds']})")
    seq = _plan_for(args, int(n_max), float(settings["alpha"]), float(settings["min_effect"]))
    base, labels, tasks = mf.baseline, settings["labels"], settings["tasks"]
    roles = {lab: mf.configs[lab].role for lab in labels}
    fams = families(labels, base, roles, tasks)
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
        rc = matrix.run(sub)
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
    if matrix.timing_pass(args, mf, settings, run_dir):
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
    from dllm_eval.matrix import _write_json_atomic

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
    from dllm_eval.matrix import _invocation, _write_json_atomic

    path = run_dir / "matrix.json"
    m = json.loads(path.read_text(encoding="utf-8"))
    m["argv"] = _invocation(args)
    m["settings"] = {**m.get("settings", {}), "limit": settings["limit"], "labels": settings["labels"],
                     "sequential": {"looks": args.looks, "file": SEQUENTIAL_FILE}}
    _write_json_atomic(path, m)
