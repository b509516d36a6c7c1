"""The trace row: one JSON line per generation request, the one definition both sides use.

The adapter writes a `TraceRow` per request to `<trace_dir>/traces_<task>.jsonl`; the analysis
reads them back with `read_trace_rows` and joins them with lm-eval's logged samples on
(task, doc_id, repeat). Fields that describe *where and when* a request ran (latency, batch,
rank) are listed in `PLACEMENT_FIELDS`: they differ between runs that decoded the same thing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

TRACE_GLOB = "traces_*.jsonl"
# Under trace_dir: each rank's finished requests (answer + trace row), appended batch by batch, so
# a run with the adapter's resume=true continues an interrupted one (see lm_eval_model).
JOURNAL_DIR = "journal"
PLACEMENT_FIELDS = ("latency_s", "batch_id", "batch_size", "batch_wall_s", "batch_nfe", "rank")


def trace_file(trace_dir: Path, task: str) -> Path:
    return trace_dir / f"traces_{task}.jsonl"


@dataclass
class TraceRow:
    """What one request cost and how its scheduler decided.

    - `nfe`: forward passes this request took part in (its cost at batch 1); `batch_nfe`: model
      calls of the whole batch it was decoded in.
    - `gen_tokens`: non-EOS tokens of the kept answer; `gen_length`: the canvas it was decoded on.
    - `latency_s` / `batch_wall_s`: the batch's decode wall time (shared by its rows).
    - `steps`, `events`, `metrics`: the scheduler's per-step commits, adaptation events and
      summary metrics (see `schedulers.base.Trace`).
    """

    task: str
    doc_id: int
    repeat: int = 0
    scheduler: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    nfe: int = 0
    batch_nfe: int = 0
    gen_tokens: int = 0
    gen_length: int = 0
    latency_s: float = 0.0
    batch_id: int | str | None = None
    batch_size: int = 1
    batch_wall_s: float = 0.0
    prompt_tokens: int = 0
    rank: int = 0
    steps: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TraceRow:
        """Tolerant of older files: unknown keys are dropped, missing ones take their defaults."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def read_trace_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, raw dict) of each non-empty line; the caller validates what it needs."""
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                yield lineno, json.loads(line)


def append_trace_rows(path: Path, rows: list[TraceRow], *, fresh: bool) -> None:
    """Write rows to a task's trace file; `fresh` replaces what an older run left there."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w" if fresh else "a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(row.to_json() + "\n")
