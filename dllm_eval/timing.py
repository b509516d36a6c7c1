"""`dllm-eval timing`: interleaved, paired throughput measurements of several configurations.

Why a separate pass: accuracy comes from independent lm_eval runs, but their timings are taken
minutes apart, so machine drift (another process, a throttled CPU, a GPU clocking down) lands
on one configuration and not the other. On the project's 2-core CPU the baseline run twice
measured 0.85x its own throughput. Here one process decodes the *same batches* with every
configuration, after one untimed warm-up batch per configuration. Each batch then gives a paired
ratio, and drift that lasts longer than one batch cancels in the ratio.

The order within a batch is a Williams crossover design (`crossover_order`): over K consecutive
batches (2K for an odd K) every configuration runs at every position equally often *and follows
every other configuration equally often*. A plain cyclic shift balances positions but gives each
configuration the same predecessor in every batch, so whatever one decode leaves behind for the
next (allocator blocks of its shapes, a clock state) lands on one configuration only. On the GPU
that bias was large: eager decoding of a new batch pays first-touch costs for its shapes (CUDA
caching-allocator growth and the like), and the baseline, always run right after the peer
samplers' differently shaped decodes, measured 0.82x its own A/A twin (1.21x [1.12, 1.31], tiny_dream,
H200, 2026-12-02). So on CUDA every batch is also decoded once by every configuration, untimed,
before its timed round (`warm_each_batch`): first-touch costs then never land in a timing.

Batches are tier-homogeneous: documents that carry a difficulty tier (the synthetic tasks) are
batched within their tier (`tier_batches`), so a claim about one tier ("throughput on easy
content") is computed from batches made only of that tier's documents. Mixed batches would leave
such a claim almost no units: with tiers cycling 1,2,3,4 in document order, a batch of 4 consecutive
documents holds one of each tier and never counts for tier 1 alone.

The prompts, stop strings and generation lengths are the lm-eval task's own: requests are built
by lm-eval's task manager (`--include_path tasks`), rendered and decoded by the same front end
as the `dllm_adaptive` adapter. Output: one JSON file with a row per (task, batch, configuration)
(wall time, non-EOS tokens of the kept answers, canvas tokens, empty answers, NFE, documents), read
by the report; and a table of tokens/s ratios against the baseline with paired bootstrap intervals
over batches.

Two throughput units, because they answer different questions (`THROUGHPUT_UNITS`):

* kept tokens/s (`KEPT`): the non-EOS tokens of the answers as kept (cut at the stop strings)
  per second of wall time, the useful output a user receives. It is what the seeds mean by
  "throughput", but it rewards a configuration for writing longer answers, and it is meaningless
  when the answers are empty (a batch whose answers are all empty has no ratio at all).
* canvas tokens/s (`CANVAS`): canvas positions decoded (gen_length x rows) per second of wall
  time. Two configurations decoding the same batch on the same canvas length do the same amount
  of nominal work, so the paired per-batch ratio of canvas tokens/s is exactly the inverse ratio
  of their wall times: a pure speed measure, valid whatever the answers contain. The
  generation-length sweep uses it, because the embedded tiny models, trained on 64- and 96-token
  canvases, leave most answers empty on long canvases.

    dllm-eval timing --schedulers fast_dllm_dual_t0.9,fast_dllm_dual_t0.9_AA,adaptive --tasks synth_math \\
        --limit 160 --batch 8 --out results/<run>/timing.json
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dllm_eval.errors import UserError

TIMING_FILE = "timing.json"

KEPT = "kept"
CANVAS = "canvas"
THROUGHPUT_UNITS = {KEPT: "kept tokens/s", CANVAS: "canvas tokens/s"}
"""Throughput units of the timing pass, by key: the words the report prints beside a ratio."""


def eager_front_end(model: str | Path, device: str) -> Any:
    """The front end every timing pass decodes with (`dllm-eval timing` and eval-all's pass):
    `load_front_end(..., compile="none")`, eager steps on every device.

    Why eager: CUDA graphs are state shared by the configurations of one process (a graph captured
    while one configuration decodes a batch shape is replayed by the next), which would favour
    whichever configuration meets a shape second; the GPU report of 2026-12-01 measured an A/A
    ratio of 2.55x that way. `dllm-eval bench` times graphs alone."""
    from dllm_eval.frontend import load_front_end

    return load_front_end(model, device=device, compile="none")


@dataclass
class TimedBatch:
    """One configuration's decode of one batch: the unit of every paired timing comparison."""

    task: str
    batch: int
    label: str
    position: int  # where in this batch's crossover order the configuration ran (0 = first)
    wall_s: float
    gen_tokens: int
    nfe: int
    docs: list[int]
    tier: int | None = None  # the one difficulty tier of every document in the batch (None: untiered)
    # Canvas positions decoded: gen_length x rows (None in files written before it was recorded).
    canvas_tokens: int | None = None
    empty: int | None = None  # rows whose kept answer has no token (None: not recorded)

    def tokens(self, unit: str = KEPT) -> int | None:
        """The numerator of tokens/s in `unit` (`KEPT` or `CANVAS`); None when not recorded."""
        if unit == KEPT:
            return self.gen_tokens
        if unit == CANVAS:
            return self.canvas_tokens
        raise ValueError(f"unknown throughput unit {unit!r}; use one of {', '.join(THROUGHPUT_UNITS)}")


def warms_each_batch(front: Any) -> bool:
    """`interleaved_timing`'s default: an untimed round of every batch on CUDA, where a new batch's
    shapes cost first-touch work; none on a CPU, where they do not (its A/A is within ±1%)."""
    return front.model.device.type == "cuda"


def design_meta(front: Any) -> dict[str, Any]:
    """What a timing file records of how it was measured (read by the report): the order design
    and whether each batch had an untimed round first. Files without "order" came from the
    earlier cyclic-shift order."""
    return {"order": "williams", "warm_each_batch": warms_each_batch(front)}


def crossover_order(labels: list[str], batch: int) -> list[str]:
    """The order configurations decode batch `batch`: row `batch` of a Williams design.

    For K configurations, sequence r is r, r+1, r-1, r+2, r-2, ... (mod K); for an odd K the
    reversed sequences follow as rows K..2K-1. Over one full cycle (K rows, 2K when K is odd)
    every configuration sits at every position equally often and directly follows every other
    configuration equally often, so first-order carry-over between decodes is shared out."""
    k = len(labels)
    first = [0]
    for i in range(1, k):
        first.append((i + 1) // 2 if i % 2 else k - i // 2)
    cycle = k if k % 2 == 0 else 2 * k
    r = batch % cycle
    order = [(j + r) % k for j in first]
    if r >= k:  # odd K: the second square holds the reversed sequences
        order = [(j + r - k) % k for j in first][::-1]
    return [labels[j] for j in order]


def canvas_length(max_gen_toks: int, block_length: int | None, fixed: int | None = None) -> int:
    """The adapter's rule: `max_gen_toks` rounded up to a whole block, unless gen_length is fixed."""
    if fixed:
        return int(fixed)
    unit = block_length or 1
    return unit * max(1, math.ceil(max_gen_toks / unit))


Request = tuple[int, str, dict, int | None]
"""(doc_id, context, gen_kwargs, tier) of one document; tier is the doc's `tier` field, or None."""


def build_requests(task: str, include_path: str | None, limit: int) -> list[Request]:
    """One `Request` per document of a generate_until task's first `limit` documents, as lm-eval
    builds them (the first `limit`, never a selection by outcome)."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=include_path) if include_path else TaskManager()
    tasks = manager.load([task])["tasks"]
    if task not in tasks:
        raise UserError(f"timing: {task} is a group; name its tasks one by one ({', '.join(tasks)})")
    obj = tasks[task]
    obj.build_all_requests(limit=limit, rank=0, world_size=1)
    out = []
    for inst in obj.instances:
        if inst.request_type != "generate_until":
            raise UserError(f"timing: {task} has {inst.request_type} requests; only generate_until tasks are timed")
        if inst.repeats and inst.idx == 0:
            doc = inst.doc if isinstance(inst.doc, dict) else {}
            tier = doc.get("tier")
            out.append((int(inst.doc_id), inst.args[0], dict(inst.args[1]), None if tier is None else int(tier)))
    return out


def tier_batches(reqs: list[Request], batch_size: int) -> list[list[Request]]:
    """Batches of at most `batch_size` documents, each from one tier: the documents are grouped by
    tier (tiers in order of first appearance, document order kept within a tier) and each group is
    cut into consecutive batches. Untiered documents (tier None) form one group of their own, so an
    untiered task is batched exactly as before, in document order."""
    groups: dict[int | None, list[Request]] = {}
    for r in reqs:
        groups.setdefault(r[3], []).append(r)
    return [g[i:i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]


def interleaved_timing(front: Any, requests: dict[str, list[Request]],
                       configs: dict[str, tuple[str, dict[str, Any]]], batch_size: int,
                       progress: Any = None, *, warm_each_batch: bool | None = None,
                       rows: list[TimedBatch] | None = None) -> list[TimedBatch]:
    """Decode every task's batches with every configuration in crossover order; one row per decode.

    `warm_each_batch` (default: on for a CUDA model) decodes each batch once with every
    configuration, untimed, before its timed round. `rows`, when given, is filled in place, so a
    caller that is interrupted keeps the rows timed so far."""
    import torch

    from dllm_eval.schedulers import get_scheduler

    if warm_each_batch is None:
        warm_each_batch = warms_each_batch(front)
    labels = list(configs)
    rows = [] if rows is None else rows
    for task, reqs in requests.items():
        batches = tier_batches(reqs, batch_size)
        built = {}
        for label, (name, params) in configs.items():
            block = get_scheduler(name, **params).params.block_length
            gen_length = canvas_length(int(batches[0][0][2].get("max_gen_toks", 256)), block, params.get("gen_length"))
            built[label] = get_scheduler(name, **{**params, "gen_length": gen_length})
        stops = list(batches[0][0][2].get("until") or [])
        for label in labels:  # warm-up: allocator, kernels, caches; not timed
            front.generate([r[1] for r in batches[0]], built[label], stops)
        for b, batch in enumerate(batches):
            contexts = [r[1] for r in batch]
            order = crossover_order(labels, b)
            rounds = [False, True] if warm_each_batch else [True]  # timed?
            for timed in rounds:
                for position, label in enumerate(order):
                    generator = torch.Generator(device=front.model.device).manual_seed(b)
                    started = time.perf_counter()
                    decoded = front.generate(contexts, built[label], stops, generator=generator)
                    if not timed:
                        continue
                    wall = time.perf_counter() - started
                    rows.append(TimedBatch(task, b, label, position, wall, sum(decoded.gen_tokens),
                                           sum(t["nfe"] for t in decoded.output.traces), [r[0] for r in batch],
                                           batch[0][3], canvas_tokens=built[label].params.gen_length * len(batch),
                                           empty=sum(1 for n in decoded.gen_tokens if n == 0)))
                    if progress is not None:
                        progress.update(1)
    return rows


def paired_throughput(rows: list[TimedBatch], label: str, baseline: str, task: str | None = None, *,
                      keep: Any = None, confidence_level: float = 0.95, unit: str = KEPT) -> Any:
    """Tokens/s of `label` over `baseline` in `unit` (`KEPT` or `CANVAS`), paired by batch
    (`stats.paired_ratio`, batches as units); None when the two share no batch, or when a shared
    batch lacks the unit's count (a file from before canvas tokens were recorded). `keep(row) ->
    bool` selects batches (e.g. by tier)."""
    from dllm_eval.analysis.stats import paired_ratio

    def pick(lab: str) -> dict[tuple[str, int], TimedBatch]:
        return {(r.task, r.batch): r for r in rows
                if r.label == lab and (task is None or r.task == task) and (keep is None or keep(r))}

    a, b = pick(label), pick(baseline)
    keys = sorted(a.keys() & b.keys())
    if not keys:
        return None
    num_a, num_b = [a[k].tokens(unit) for k in keys], [b[k].tokens(unit) for k in keys]
    if any(v is None for v in (*num_a, *num_b)):
        return None
    return paired_ratio(num_a, num_b, [a[k].wall_s for k in keys], [b[k].wall_s for k in keys],
                        confidence_level=confidence_level)


def summary_table(rows: list[TimedBatch], baseline: str) -> str:
    """Markdown: per task and pooled, each configuration's kept and canvas tokens/s, its paired
    ratios to the baseline in both units, and its share of empty answers."""
    tasks = list(dict.fromkeys(r.task for r in rows))
    labels = list(dict.fromkeys(r.label for r in rows))
    lines = ["| task | configuration | batches | kept tokens/s | ratio [95% CI] | canvas tokens/s | ratio [95% CI] "
             "| empty answers |", "|---|---|---|---|---|---|---|---|"]
    for task in [*tasks, None]:
        for label in labels:
            mine = [r for r in rows if r.label == label and (task is None or r.task == task)]
            wall = max(1e-9, sum(r.wall_s for r in mine))
            cells = []
            for unit in (KEPT, CANVAS):
                counts = [r.tokens(unit) for r in mine]
                cells.append("—" if any(c is None for c in counts) else f"{sum(counts) / wall:.1f}")
                res = None if label == baseline else paired_throughput(rows, label, baseline, task, unit=unit)
                cells.append("baseline" if label == baseline else
                             "—" if res is None else f"{res.statistic:.3f}x [{res.low:.3f}, {res.high:.3f}]")
            empty = [r.empty for r in mine]
            share = "—" if any(e is None for e in empty) else f"{100 * sum(empty) / max(1, sum(len(r.docs) for r in mine)):.0f}%"
            lines.append(f"| {task or 'all (pooled)'} | `{label}` | {len(mine)} | {' | '.join(cells)} | {share} |")
    return "\n".join(lines) + "\n"


def write_rows(rows: list[TimedBatch], path: Path, meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": [asdict(r) for r in rows]}, indent=1) + "\n")
    tmp.replace(path)  # never a half-written file


def read_rows(path: Path) -> tuple[dict[str, Any], list[TimedBatch]]:
    data = json.loads(path.read_text())
    return data["meta"], [TimedBatch(**r) for r in data["rows"]]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="checkpoint dir, hub id or embedded name (default: the embedded model)")
    parser.add_argument("--schedulers", required=True,
                        help="comma-separated configuration labels from the matrix config; the first is the baseline")
    parser.add_argument("--tasks", default="synth_math,synth_code")
    parser.add_argument("--include-path", default="tasks")
    parser.add_argument("--config", help="matrix config YAML (default: the shipped eval_matrix.yaml)")
    parser.add_argument("--limit", type=int, default=64, help="documents per task")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", help="JSON file for the timed batches")


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from dllm_eval.matrix_config import load_matrix_config
    from dllm_eval.models import EMBEDDED_MODEL_DIR

    mf = load_matrix_config(args.config)
    labels = mf.expand([x.strip() for x in args.schedulers.split(",") if x.strip()])
    if len(labels) < 2:
        raise UserError("--schedulers needs a baseline and at least one configuration to compare")
    common = mf.settings.get("common_params") or {}
    configs = {lab: (mf.configs[lab].scheduler, {**common, **mf.configs[lab].params}) for lab in labels}
    if args.limit < 1 or args.batch < 1:
        raise UserError("--limit and --batch must be positive")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    front = eager_front_end(args.model or EMBEDDED_MODEL_DIR, device)
    requests = {t: build_requests(t, args.include_path, args.limit) for t in args.tasks.split(",") if t}
    total = sum(len(tier_batches(r, args.batch)) for r in requests.values()) * len(configs)
    meta = {"baseline": labels[0], "labels": labels, "batch": args.batch, "limit": args.limit,
            "device": str(front.model.device), "dtype": str(front.model.dtype).removeprefix("torch."),
            "torch": torch.__version__, "threads": torch.get_num_threads(), **design_meta(front)}
    rows: list[TimedBatch] = []
    # A pass cut short (Ctrl-C, or `timeout`'s SIGTERM on a leased machine) still writes the rows it
    # timed, marked partial: every finished batch is a complete paired unit.
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        with tqdm(total=total, desc="timing (interleaved)") as bar:
            interleaved_timing(front, requests, configs, args.batch, progress=bar, rows=rows)
    except KeyboardInterrupt:
        meta["partial"] = True
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.out and rows:
        write_rows(rows, Path(args.out), meta)
    if meta.get("partial"):
        print(f"dllm-eval timing: interrupted after {len(rows)} timed decodes"
              + (f"; wrote them to {args.out} (marked partial)" if args.out and rows else ""), file=sys.stderr)
    if rows:
        print(summary_table(rows, labels[0]))
    return 130 if meta.get("partial") else 0


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
