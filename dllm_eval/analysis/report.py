"""Turn a loaded run into report.md, figures and summary.json.

The report answers, for each scheduler against the baseline on the same documents: how large the
difference is (Δ with a paired 95% CI), how sure we are (McNemar p, Holm-adjusted across every
comparison in the report), and whether the run could have seen an effect that matters (MDE at
80% power vs the configured minimum effect). Verdicts are words derived mechanically from those
numbers, so a reader never has to guess what "EXCELLENT" meant.

Computation (``build_summary``) is separate from rendering (``render_markdown``) so tests can
check numbers without parsing markdown, and so writing is all-or-nothing: everything is computed
and rendered into a temporary folder first, then moved into place.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dllm_eval.analysis import claims as claims_mod
from dllm_eval.analysis import stats
from dllm_eval.analysis.claims import CLAIMS, Claim, decide_claim
from dllm_eval.analysis.loading import RunData, load_run
from dllm_eval.analysis.stats import pareto_front
from dllm_eval.errors import UserError
from dllm_eval.matrix_config import sweep_dirs
from dllm_eval.portable import portable, portable_record
from dllm_eval.timing import CANVAS, KEPT, THROUGHPUT_UNITS

__all__ = ["Summary", "build_summary", "render_markdown", "write_report"]

CONTROL_ROLES = ("control_aa", "control_degraded")
N_RESAMPLES = 4999
MOSTLY_EMPTY = 0.5  # a share of empty kept answers above which a length's accuracy is flagged as no verdict


# --------------------------------------------------------------------------------------------
# data containers
# --------------------------------------------------------------------------------------------


@dataclass
class Row:
    """One scheduler on one task (primary filter), with its comparison to the baseline."""

    label: str
    role: str | None
    n_docs: int
    seeds: list[int]
    acc: float
    acc_low: float
    acc_high: float
    nfe_mean: float = math.nan
    tps: float = math.nan
    tps_low: float = math.nan
    tps_high: float = math.nan
    lat_p50: float = math.nan
    lat_p90: float = math.nan
    delta: float = math.nan
    delta_low: float = math.nan
    delta_high: float = math.nan
    p: float = math.nan
    p_midp: float = math.nan
    p_holm: float = math.nan
    test: str = ""
    b: int | None = None
    c: int | None = None
    correlation: float = math.nan
    mde: float = math.nan
    identical: float = math.nan
    ratios: dict[str, dict[str, float]] = field(default_factory=dict)  # nfe/tps/latency -> stats
    verdict: str = ""


@dataclass
class TierRow:
    label: str
    tier: int
    n: int
    acc: float
    acc_low: float
    acc_high: float
    delta: float
    delta_low: float
    delta_high: float
    p: float
    nfe_mean: float
    tps: float


@dataclass
class SubjectRow:
    label: str
    subject: str
    n: int
    acc: float
    acc_low: float
    acc_high: float
    delta: float
    delta_low: float
    delta_high: float


@dataclass
class TaskSummary:
    task: str
    filter: str
    metric: str
    n_docs: int
    rows: list[Row]
    tiers: list[TierRow]
    other_filters: list[dict[str, Any]]
    subjects: list[SubjectRow] = field(default_factory=list)


@dataclass
class ClaimRow:
    seed: str
    text: str
    scheduler: str
    versus: str
    measure: str
    claimed: str
    measured: str
    verdict: str
    note: str = ""
    unit: str = "documents"  # the independent unit behind the interval (documents, or batches for timings)
    n: int | None = None
    mde: str = "—"
    reason: str = ""
    low: float = math.nan
    high: float = math.nan


@dataclass
class SweepRow:
    """One configuration against the baseline at one length of the generation-length sweep, pooled over tasks."""

    gen_length: int
    label: str
    n_docs: int
    acc: float
    acc_base: float
    delta: float
    delta_low: float
    delta_high: float
    nfe: dict[str, float] = field(default_factory=dict)
    tps: dict[str, float] = field(default_factory=dict)
    tps_unit: str = "batches"  # the independent unit and the tokens/s unit of ``tps`` (e.g. canvas tokens/s)
    tps_n: int | None = None
    empty: float = math.nan  # share of this configuration's kept answers with no token (lm_eval cells)
    empty_base: float = math.nan  # the same for the baseline


@dataclass
class Summary:
    run: str
    baseline: str
    alpha: float
    min_effect: float
    labels: list[str]
    roles: dict[str, str | None]
    descriptions: dict[str, str]
    params: dict[str, dict[str, Any]]
    tasks: list[TaskSummary]
    controls: list[dict[str, Any]]
    claims: list[ClaimRow]
    header: dict[str, Any]
    holm_m: int
    notes: list[str]
    per_doc_nfe: dict[str, dict[str, list[float]]]  # task -> label -> per-doc NFE (for the figure)
    claims_family: dict[str, Any] = field(default_factory=dict)  # the claims' multiplicity policy (claims_policy)
    sequential: dict[str, Any] | None = None  # a run's sequential.json (see dllm_eval.analysis.sequential)
    sweep: list[SweepRow] = field(default_factory=list)  # the generation-length sweep (<run>/sweep/gen<L>/)
    power: dict[str, Any] = field(default_factory=dict)  # pooled MDE of the seed comparisons at Holm's alpha/m


# --------------------------------------------------------------------------------------------
# indexing the tidy table
# --------------------------------------------------------------------------------------------


class _Index:
    """Fast (label, task, filter) -> (doc x seed) matrices in one shared document order."""

    def __init__(self, run: RunData):
        self.run = run
        t = run.table
        self.pos: dict[tuple[str, str, str], dict[tuple[int, Any], int]] = {}
        for i, (lab, task, filt, did, seed) in enumerate(zip(t["label"], t["task"], t["filter"], t["doc_id"], t["seed"])):
            self.pos.setdefault((lab, task, filt), {})[(int(did), seed)] = i
        self.docs: dict[str, list[int]] = {}
        for (_lab, task, _filt), m in self.pos.items():
            if task not in self.docs:
                self.docs[task] = sorted({d for d, _ in m})

    def has(self, label: str, task: str) -> bool:
        return (label, task, self.run.primary_filter[task]) in self.pos

    def seeds(self, label: str, task: str) -> list[Any]:
        m = self.pos[(label, task, self.run.primary_filter[task])]
        return sorted({s for _, s in m}, key=lambda s: (s is None, s))

    def matrix(self, label: str, task: str, column: str, filt: str | None = None) -> np.ndarray:
        filt = filt or self.run.primary_filter[task]
        m = self.pos[(label, task, filt)]
        seeds = self.seeds(label, task)
        col = self.run.table[column]
        out = np.full((len(self.docs[task]), len(seeds)), np.nan, dtype=float if col.dtype != object else object)
        for i, d in enumerate(self.docs[task]):
            for j, s in enumerate(seeds):
                k = m.get((d, s))
                if k is not None:
                    out[i, j] = col[k]
        return out

    def seed_batches(self, label: str, task: str) -> np.ndarray:
        """(doc x seed) ids of the batch each document ran in, unique across seeds."""
        b = self.matrix(label, task, "batch_id")
        out = np.empty(b.shape, dtype=object)
        for i, d in enumerate(self.docs[task]):
            for j in range(b.shape[1]):
                v = b[i, j]
                out[i, j] = f"s{j}:b{v}" if v is not None and v == v else f"s{j}:d{d}"
        return out

    def clusters(self, label: str, task: str) -> np.ndarray:
        """Batch of each document in ``label``'s first seed (timings are per batch)."""
        b = self.matrix(label, task, "batch_id")[:, 0]
        return np.array([f"{task}:b{v}" if v is not None and v == v else f"{task}:d{d}" for v, d in zip(b, self.docs[task])], dtype=object)


def _dm(x: np.ndarray) -> np.ndarray:
    return stats.doc_means(x.astype(float))


def _rowsum_mean(x: np.ndarray) -> np.ndarray:
    """Per-document mean over seeds of a cost (NaN when every seed lacks it)."""
    return _dm(x)


# --------------------------------------------------------------------------------------------
# building the summary
# --------------------------------------------------------------------------------------------


def _observed_gen_length(run: RunData, label: str) -> dict[str, str]:
    """gen_length as decoded (from the traces), per task when the adapter sized it per task."""
    if "gen_length" in run.configs[label].params:
        return {}
    parts = []
    for task in run.tasks:
        g = run.table.where(label=label, task=task)["gen_length"]
        g = sorted({int(v) for v in g if np.isfinite(v)})
        if g:
            parts.append(f"{'/'.join(map(str, g))} ({task})")
    return {"gen_length": ", ".join(parts)} if parts else {}


def _order_labels(run: RunData, baseline: str) -> list[str]:
    order: list[str] = []
    if run.matrix and isinstance(run.matrix.get("configs"), dict):
        order = [k for k in run.matrix["configs"] if k in run.configs]
    rest = sorted(k for k in run.configs if k not in order)
    labels = [baseline] + [k for k in order + rest if k != baseline]
    main = [k for k in labels if run.configs[k].role not in CONTROL_ROLES]
    ctrl = [k for k in labels if run.configs[k].role in CONTROL_ROLES]
    return main + ctrl


def _resolve_baseline(run: RunData, baseline: str | None) -> str:
    labels = list(run.configs)
    if baseline:
        if baseline not in run.configs:
            raise UserError(f"baseline {baseline!r} is not in this run; its labels are: {', '.join(labels)}")
        return baseline
    cands: list[str] = []
    if run.matrix and run.matrix.get("baseline") in run.configs:
        cands.append(run.matrix["baseline"])
    cands += [k for k, c in run.configs.items() if c.role == "baseline"]
    if cands:
        return cands[0]
    if run.matrix and run.matrix.get("baseline"):
        raise UserError(
            f"the baseline {run.matrix['baseline']!r} of this run has no finished results; finish it "
            f"(rerun eval-all) or pass --baseline with one of: {', '.join(labels)}"
        )
    if len(labels) == 1:
        return labels[0]
    raise UserError(f"no baseline: pass --baseline LABEL with one of: {', '.join(labels)}")


def _ratio_dict(r: stats.RatioResult | None) -> dict[str, float]:
    if r is None:
        return {}
    return {"ratio": r.statistic, "low": r.low, "high": r.high, "p": r.pvalue, "median": r.median_ratio, "n": r.n}


def _has(x: np.ndarray) -> bool:
    return bool(np.any(np.isfinite(x)))


def _seed_for(*parts: Any) -> int:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:8], 16)


def verdict(delta: float, p_adj: float, mde: float, alpha: float, min_effect: float) -> str:
    """The accuracy verdict in words, from the Holm-adjusted p and the MDE."""
    if not math.isfinite(p_adj):
        return "not tested"
    if p_adj < alpha:
        return "better" if delta > 0 else "worse"
    if not math.isfinite(mde):
        return "under-powered: n too small to detect any difference"
    if mde > min_effect:
        return f"under-powered: n too small to detect |Δ| < {100 * mde:.1f} pts"
    return "no detectable difference"


def _timed(run: RunData, label: str, base: str, task: str | None, *, tiers: tuple[int, ...] | None = None,
           confidence_level: float = 0.95, unit: str = KEPT) -> stats.RatioResult | None:
    """Tokens/s ratio in ``unit`` (kept or canvas tokens/s, `dllm_eval.timing`) from the interleaved
    timing pass (`<run>/timing.json`), batches as units; None when the run has no timing for both
    labels (or none in that unit). With `tiers`, only batches whose documents all belong to those
    tiers count."""
    if not run.timing:
        return None
    from dllm_eval.timing import TimedBatch, paired_throughput

    rows = [TimedBatch(**r) for r in run.timing]
    keep = None
    if tiers is not None:
        t = run.table
        tier_of = {(tk, int(d)): tr for tk, d, tr in zip(t["task"], t["doc_id"], t["tier"])}

        def keep(row: TimedBatch) -> bool:
            return all(tier_of.get((row.task, d)) in tiers for d in row.docs)

    return paired_throughput(rows, label, base, task, keep=keep, confidence_level=confidence_level, unit=unit)


def _timed_rate(run: RunData, label: str, task: str) -> float:
    """Kept tokens/s of `label` on `task` in the interleaved timing pass (its tokens over its wall
    time, all timed batches); NaN when the pass skipped the label."""
    mine = [r for r in run.timing if r["label"] == label and r["task"] == task]
    wall = sum(r["wall_s"] for r in mine)
    return sum(r["gen_tokens"] for r in mine) / wall if mine and wall > 0 else math.nan


def _compare(
    idx: _Index, label: str, base: str, task: str, *, alpha: float, filt: str | None = None
) -> tuple[stats.PairedDifferenceResult, dict[str, stats.RatioResult | None], float]:
    a = idx.matrix(label, task, "correct", filt)
    b = idx.matrix(base, task, "correct", filt)
    rs = _seed_for(label, base, task, filt)
    diff = stats.paired_difference(a, b, alpha=alpha, n_resamples=N_RESAMPLES, rng=rs)
    ratios: dict[str, stats.RatioResult | None] = {"nfe": None, "tps": None, "latency": None}
    if filt is None:
        na, nb = _rowsum_mean(idx.matrix(label, task, "nfe")), _rowsum_mean(idx.matrix(base, task, "nfe"))
        if _has(na) and _has(nb):
            ratios["nfe"] = stats.paired_ratio(na, nb, n_resamples=N_RESAMPLES, rng=rs + 1)
        cl = idx.clusters(base, task)
        if idx.run.timing:  # a run with a paired pass shows paired ratios only: a label it skipped has none
            ratios["tps"] = _timed(idx.run, label, base, task)
        else:
            ta, tb = _rowsum_mean(idx.matrix(label, task, "gen_tokens")), _rowsum_mean(idx.matrix(base, task, "gen_tokens"))
            ca, cb = _rowsum_mean(idx.matrix(label, task, "cost_s")), _rowsum_mean(idx.matrix(base, task, "cost_s"))
            if _has(ta) and _has(ca) and _has(tb) and _has(cb):
                ratios["tps"] = stats.paired_ratio(ta, tb, ca, cb, clusters=cl, n_resamples=N_RESAMPLES, rng=rs + 2)
        la, lb = _rowsum_mean(idx.matrix(label, task, "latency_s")), _rowsum_mean(idx.matrix(base, task, "latency_s"))
        if _has(la) and _has(lb):
            ratios["latency"] = stats.paired_ratio(la, lb, clusters=cl, n_resamples=N_RESAMPLES, rng=rs + 3)
    # identical outputs on seed-matched pairs
    ha = idx.matrix(label, task, "resp_hash", filt)
    hb = idx.matrix(base, task, "resp_hash", filt)
    k = min(ha.shape[1], hb.shape[1])
    ident = float(np.mean(ha[:, :k] == hb[:, :k])) if k else math.nan
    return diff, ratios, ident


def build_summary(run: RunData, *, baseline: str | None = None, alpha: float = 0.05, min_effect: float = 0.05) -> Summary:
    """Compute every number of the report (no files written)."""
    base = _resolve_baseline(run, baseline)
    for task in run.tasks:
        if not any(lab == base for lab in run.table.where(task=task)["label"]):
            others = sorted(set(run.table.where(task=task)["label"]))
            raise UserError(
                f"baseline {base!r} has no results for task {task} (run on it: {', '.join(others)}); "
                "rerun the baseline on that task or pass another --baseline"
            )
    labels = _order_labels(run, base)
    roles: dict[str, str | None] = {
        k: "baseline" if k == base else (None if run.configs[k].role == "baseline" else run.configs[k].role) for k in labels
    }
    idx = _Index(run)
    notes = list(run.notes)
    tasks: list[TaskSummary] = []
    holm_entries: list[tuple[Row, str, float]] = []
    per_doc_nfe: dict[str, dict[str, list[float]]] = {}
    for task in run.tasks:
        rows: list[Row] = []
        per_doc_nfe[task] = {}
        for lab in labels:
            if not idx.has(lab, task):
                notes.append(f"{lab} was not run on {task}")
                continue
            corr = idx.matrix(lab, task, "correct")
            acc = stats.accuracy(corr)
            seeds = [s for s in idx.seeds(lab, task) if s is not None]
            row = Row(label=lab, role=roles[lab], n_docs=corr.shape[0], seeds=seeds, acc=acc.statistic, acc_low=acc.low, acc_high=acc.high)
            nfe = idx.matrix(lab, task, "nfe")
            if _has(nfe):
                row.nfe_mean = float(np.nanmean(nfe))
                per_doc_nfe[task][lab] = [float(v) for v in _rowsum_mean(nfe) if np.isfinite(v)]
            if run.timing:  # the same source as the ratio beside it: the paired pass, or nothing
                row.tps = _timed_rate(run, lab, task)
            elif _has(toks := idx.matrix(lab, task, "gen_tokens")) and _has(cost := idx.matrix(lab, task, "cost_s")):
                clus = idx.seed_batches(lab, task).ravel()  # this run's own batches: one timing each
                row.tps, ci = stats.rate_ci(toks.ravel(), cost.ravel(), clusters=clus, n_resamples=N_RESAMPLES, rng=_seed_for(lab, task, "tps"))
                row.tps_low, row.tps_high = ci
            lat = idx.matrix(lab, task, "latency_s").ravel()
            lat = lat[np.isfinite(lat)]
            if lat.size:
                row.lat_p50, row.lat_p90 = (float(v) for v in np.percentile(lat, [50, 90]))
            if lab != base:
                diff, ratios, ident = _compare(idx, lab, base, task, alpha=alpha)
                row.delta, row.delta_low, row.delta_high = diff.statistic, diff.low, diff.high
                row.p, row.p_midp, row.test = diff.pvalue, diff.pvalue_midp, diff.method
                row.b, row.c, row.correlation, row.mde = diff.b, diff.c, diff.correlation, diff.mde
                row.identical = ident
                row.ratios = {k: _ratio_dict(v) for k, v in ratios.items()}
                if row.role not in CONTROL_ROLES:
                    holm_entries.append((row, "acc", row.p))
                    for k, v in ratios.items():
                        if v is not None and math.isfinite(v.pvalue):
                            holm_entries.append((row, k, v.pvalue))
            rows.append(row)
        tiers = _tier_rows(idx, run, task, labels, base, alpha) if run.has_tiers.get(task) else []
        others = _other_filters(idx, run, task, labels, base, alpha)
        n_docs = len(idx.docs[task])
        tasks.append(TaskSummary(task, run.primary_filter[task], run.metric[task], n_docs, rows, tiers, others))
        tasks[-1].subjects = _subject_rows(idx, task, labels, base, alpha)

    adj = stats.holm([p for _, _, p in holm_entries])
    for (row, kind, _), pa in zip(holm_entries, adj):
        if kind == "acc":
            row.p_holm = float(pa)
        else:
            row.ratios[kind]["p_holm"] = float(pa)
    for ts in tasks:
        for row in ts.rows:
            if row.label == base:
                row.verdict = "baseline"
            elif row.role in CONTROL_ROLES:
                row.verdict = verdict(row.delta, row.p, row.mde, alpha, min_effect) + " †"
            else:
                row.verdict = verdict(row.delta, row.p_holm, row.mde, alpha, min_effect)

    controls = _controls(idx, tasks, labels, roles, run, base, alpha)
    sweep_runs = {length: load_run(d) for length, d in sweep_dirs(run.root).items()}
    claims = _claims(idx, run, labels, base, tasks, alpha, sweep_runs)
    header = _header(run, base, labels)
    return Summary(
        run=run.root.name,
        baseline=base,
        alpha=alpha,
        min_effect=min_effect,
        labels=labels,
        roles=roles,
        descriptions={k: run.configs[k].description for k in labels},
        params={k: {"scheduler": run.configs[k].scheduler, **run.configs[k].params, **_observed_gen_length(run, k)} for k in labels},
        tasks=tasks,
        controls=controls,
        claims=claims,
        header=header,
        holm_m=len(holm_entries),
        notes=notes,
        per_doc_nfe=per_doc_nfe,
        claims_family=claims_policy(alpha),
        sequential=_sequential_record(run),
        sweep=_sweep_rows(sweep_runs, base, alpha),
        power=_power(idx, run, labels, base, alpha, len(holm_entries), tasks),
    )


def _seed_schedulers() -> set[str]:
    """Schedulers a seed claim is about (or compared with): their comparisons are the ones a run is sized for."""
    return {c.scheduler for c in CLAIMS} | {c.versus for c in CLAIMS if c.versus}


def _power(idx: _Index, run: RunData, labels: list[str], base: str, alpha: float, holm_m: int,
           tasks: list[TaskSummary]) -> dict[str, Any]:
    """What this run can detect: each seed comparison pooled over the tasks, its discordance and the
    MDE (80% power, exact McNemar) at the most stringent Holm step alpha/m, the level `dllm-eval plan`
    sizes runs at; and the largest per-task MDE (at alpha, the tables' MDE column)."""
    m = max(holm_m, 1)
    rows = []
    seed = _seed_schedulers()
    for lab in labels:
        if lab == base or run.configs[lab].role in CONTROL_ROLES or run.configs[lab].scheduler not in seed:
            continue
        pool = _pooled(idx, run, lab, base, None)
        if pool is None:
            continue
        ok = np.isfinite(pool["ca"]) & np.isfinite(pool["cb"])
        n = int(ok.sum())
        disc = int(np.sum(pool["ca"][ok] != pool["cb"][ok]))
        mde = stats.mde_mcnemar(n, disc / n, alpha=alpha / m) if n else math.inf
        rows.append({"label": lab, "n": n, "discordant": disc, "mde": mde})
    per_task = [r.mde for t in tasks for r in t.rows
                if r.label != base and r.role not in CONTROL_ROLES and math.isfinite(r.mde)]
    return {"alpha": alpha, "m": m, "alpha_each": alpha / m, "power": 0.8, "rows": rows,
            "per_task_max": max(per_task) if per_task else math.nan}


def _sweep_rows(sweep_runs: dict[int, RunData], base: str, alpha: float) -> list[SweepRow]:
    """Each length of the generation-length sweep: accuracy (pooled paired Δ, 95%), the share of
    empty kept answers, NFE and canvas tokens/s ratios (the interleaved timing pass at that length
    when it ran, else the cells) per configuration. Descriptive and unadjusted; only the seed claim
    at the longest length enters the claims family."""
    out: list[SweepRow] = []
    for length, sub in sweep_runs.items():
        sbase = _resolve_baseline(sub, base)
        idx = _Index(sub)
        for lab in _order_labels(sub, sbase):
            if lab == sbase or sub.configs[lab].role in CONTROL_ROLES:
                continue
            pool = _pooled(idx, sub, lab, sbase, None)
            if pool is None:
                continue
            rs = _seed_for("sweep", length, lab)
            d = stats.paired_difference(pool["ca"], pool["cb"], alpha=alpha, n_resamples=N_RESAMPLES, rng=rs)
            row = SweepRow(length, lab, d.n, float(np.nanmean(pool["ca"])), float(np.nanmean(pool["cb"])),
                           d.statistic, d.low, d.high)
            if _has(pool["na"]) and _has(pool["nb"]):
                row.nfe = _ratio_dict(stats.paired_ratio(pool["na"], pool["nb"], n_resamples=N_RESAMPLES, rng=rs + 1))
            row.empty, row.empty_base = empty_share(pool["ea"]), empty_share(pool["eb"])
            r, row.tps_unit = _sweep_tps(sub, idx, lab, sbase, 1 - alpha)
            if r is not None:
                row.tps, row.tps_n = _ratio_dict(r), r.n
            out.append(row)
    return out


def empty_share(per_doc: np.ndarray) -> float:
    """The share of kept answers that are empty, from per-document shares over seeds (NaN where a
    document has no token count); NaN when no document has one."""
    x = np.asarray(per_doc, dtype=float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else math.nan


def _sweep_tps(sub: RunData, idx: _Index, lab: str, base: str, level: float,
               unit: str = CANVAS) -> tuple[stats.RatioResult | None, str]:
    """Tokens/s of ``lab`` over ``base`` in ``unit`` (canvas tokens/s unless told) in one sweep
    sub-run: paired by batch from its interleaved timing pass, else from its cells (documents
    clustered by batch, unpaired in time). The second value names the independent unit and the
    tokens/s unit, as the report prints them."""
    words = THROUGHPUT_UNITS[unit]
    r = _timed(sub, lab, base, None, confidence_level=level, unit=unit)
    if r is not None:
        return r, f"batches (interleaved timing pass; {words})"
    pool = _pooled(idx, sub, lab, base, None)
    num_a, num_b = ("ga", "gb") if unit == CANVAS else ("ta", "tb")
    if pool is None or not all(_has(pool[k]) for k in (num_a, num_b, "sa", "sb")):
        return None, "no timing"
    r = stats.paired_ratio(pool[num_a], pool[num_b], pool["sa"], pool["sb"], clusters=pool["cl"], confidence_level=level,
                           n_resamples=N_RESAMPLES, rng=_seed_for("sweep-tps", lab))
    return r, f"batches of the lm_eval cells (unpaired in time; {words})"


def _tier_rows(idx: _Index, run: RunData, task: str, labels: list[str], base: str, alpha: float) -> list[TierRow]:
    tier_col = idx.matrix(base, task, "tier")[:, 0]
    out: list[TierRow] = []
    tiers = sorted({int(t) for t in tier_col if np.isfinite(t)})
    missing = int(np.sum(~np.isfinite(tier_col)))
    if missing:
        run.notes.append(f"{task}: {missing} documents have no tier and are left out of the tier breakdown only")
    for lab in labels:
        if not idx.has(lab, task):
            continue
        corr = idx.matrix(lab, task, "correct")
        bcorr = idx.matrix(base, task, "correct")
        nfe = idx.matrix(lab, task, "nfe")
        toks, cost = idx.matrix(lab, task, "gen_tokens"), idx.matrix(lab, task, "cost_s")
        for t in tiers:
            m = tier_col == t
            acc = stats.accuracy(corr[m])
            if lab != base:
                d = stats.paired_difference(
                    corr[m], bcorr[m], alpha=alpha, n_resamples=1999, rng=_seed_for(lab, task, t), compute_mde=False
                )
                dv, dl, dh, p = d.statistic, d.low, d.high, d.pvalue
            else:
                dv = dl = dh = p = math.nan
            nf = float(np.nanmean(nfe[m])) if _has(nfe[m]) else math.nan
            tc, cc = toks[m], cost[m]
            ok = np.isfinite(tc) & np.isfinite(cc)
            tps = float(tc[ok].sum() / cc[ok].sum()) if ok.any() and cc[ok].sum() > 0 else math.nan
            out.append(TierRow(lab, t, int(m.sum()), acc.statistic, acc.low, acc.high, dv, dl, dh, p, nf, tps))
    return out


def _subject_rows(idx: _Index, task: str, labels: list[str], base: str, alpha: float) -> list[SubjectRow]:
    """Accuracy per document `subject` (MATH), with the paired Δ vs the baseline; [] without subjects.

    Descriptive, like the tier breakdown: no multiplicity adjustment. A task whose documents all
    share one subject (a MATH subject subtask) gets one row per scheduler, which repeats the
    task table, so it is left out.
    """
    subj_col = idx.matrix(base, task, "subject")[:, 0]
    subjects = sorted({s for s in subj_col if isinstance(s, str)})
    if len(subjects) < 2:
        return []
    out: list[SubjectRow] = []
    bcorr = idx.matrix(base, task, "correct")
    for lab in labels:
        if not idx.has(lab, task):
            continue
        corr = idx.matrix(lab, task, "correct")
        for subject in subjects:
            m = np.array([v == subject for v in subj_col])
            acc = stats.accuracy(corr[m])
            dv = dl = dh = math.nan
            if lab != base:
                d = stats.paired_difference(
                    corr[m], bcorr[m], alpha=alpha, n_resamples=1999, rng=_seed_for(lab, task, subject), compute_mde=False
                )
                dv, dl, dh = d.statistic, d.low, d.high
            out.append(SubjectRow(lab, subject, int(m.sum()), acc.statistic, acc.low, acc.high, dv, dl, dh))
    return out


def _breakdown(s: Summary, t: TaskSummary, rows_of: list[Any], key: str, name: Any, cell: Any) -> list[list[str]]:
    """A scheduler x group table (tiers, subjects): one row per scheduler, one column per group;
    `cell(row, is_baseline)` renders one breakdown row."""
    groups = list(dict.fromkeys(getattr(r, key) for r in rows_of))
    head = ["Scheduler"] + [f"{name(k)} (n={next(r.n for r in rows_of if getattr(r, key) == k)})" for k in groups]
    rows = []
    for lab in [r.label for r in t.rows]:
        cells = [_label_cell(s, lab)]
        for k in groups:
            r = next((x for x in rows_of if x.label == lab and getattr(x, key) == k), None)
            cells.append("—" if r is None else cell(r, lab == s.baseline))
        rows.append(cells)
    return _table(head, rows)


def _delta_text(r: Any) -> str:
    return f" ({_pts(r.delta)} [{_pts(r.delta_low)}, {_pts(r.delta_high)}])"


def _render_subjects(s: Summary, t: TaskSummary) -> list[str]:
    """The per-subject table of one task (markdown lines); nothing when the task has no subjects."""
    if not t.subjects:
        return []

    def cell(r: Any, is_base: bool) -> str:
        return f"{_pct(r.acc)} [{_num(100 * r.acc_low)}, {_num(100 * r.acc_high)}]" + ("" if is_base else _delta_text(r))

    return [f"### {t.task}: by subject (descriptive, unadjusted)", "",
            "Each cell: accuracy [95% CI] (Δ pts vs baseline [95% CI]).", "",
            *_breakdown(s, t, t.subjects, "subject", str, cell)]


def _render_tiers(s: Summary, t: TaskSummary) -> list[str]:
    """The per-tier table of one task (synth tiers, MATH levels); nothing when the task has none."""
    if not t.tiers:
        return []

    def cell(r: Any, is_base: bool) -> str:
        c = _pct(r.acc) + ("" if is_base else _delta_text(r))
        if math.isfinite(r.nfe_mean):
            c += f"; NFE {r.nfe_mean:.1f}"
        if math.isfinite(r.tps):
            c += f"; {r.tps:.0f} tok/s"
        return c

    tiers = sorted(t.tiers, key=lambda r: r.tier)
    return [f"### {t.task}: by difficulty tier (descriptive, unadjusted)", "",
            "Each cell: accuracy (Δ pts vs baseline [95% CI]); mean NFE; tokens/s.", "",
            *_breakdown(s, t, tiers, "tier", lambda k: f"tier {k}", cell)]


def _other_filters(idx: _Index, run: RunData, task: str, labels: list[str], base: str, alpha: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for filt in run.filters[task]:
        if filt == run.primary_filter[task]:
            continue
        for lab in labels:
            if not idx.has(lab, task):
                continue
            acc = stats.accuracy(idx.matrix(lab, task, "correct", filt))
            entry: dict[str, Any] = {"filter": filt, "label": lab, "acc": acc.statistic, "low": acc.low, "high": acc.high}
            if lab != base:
                d, _, _ = _compare(idx, lab, base, task, alpha=alpha, filt=filt)
                entry.update({"delta": d.statistic, "delta_low": d.low, "delta_high": d.high, "p": d.pvalue})
            out.append(entry)
    return out


def _controls(
    idx: _Index, tasks: list[TaskSummary], labels: list[str], roles: dict[str, str | None], run: RunData, base: str, alpha: float
) -> list[dict[str, Any]]:
    """Judge each control against the configuration it controls (the baseline unless stated)."""
    out: list[dict[str, Any]] = []
    for lab in labels:
        role = roles.get(lab)
        if role not in CONTROL_ROLES:
            continue
        ref = run.configs[lab].control_of if run.configs[lab].control_of in run.configs else base
        per_task = []
        for ts in tasks:
            row = next((r for r in ts.rows if r.label == lab), None)
            if row is None or not idx.has(ref, ts.task):
                continue
            if ref == base:
                d = {"delta": row.delta, "low": row.delta_low, "high": row.delta_high, "p": row.p, "b": row.b, "c": row.c,
                     "mde": row.mde, "identical": row.identical, "nfe_ratio": row.ratios.get("nfe", {}).get("ratio", math.nan),
                     "tps": row.ratios.get("tps", {})}
            else:
                diff, ratios, ident = _compare(idx, lab, ref, ts.task, alpha=alpha)
                nfe = ratios.get("nfe")
                d = {"delta": diff.statistic, "low": diff.low, "high": diff.high, "p": diff.pvalue, "b": diff.b, "c": diff.c,
                     "mde": diff.mde, "identical": ident, "nfe_ratio": nfe.statistic if nfe else math.nan,
                     "tps": _ratio_dict(ratios.get("tps"))}
            per_task.append({"task": ts.task, **d})
        if len(per_task) > 1:
            per_task.append({"task": "all tasks (pooled)", **_pooled_control(idx, run, lab, ref, alpha)})
        # the pre-registered test: pooled over tasks when there are several (one test, full n)
        primary = per_task[-1] if per_task else None
        sig = [t for t in per_task if math.isfinite(t["p"]) and t["p"] < alpha]
        if primary is None:
            ok, status = False, "not evaluated: no task has both this control and its reference"
        elif role == "control_aa":
            ok = not sig
            status = (
                "PASS: no difference detected, as required"
                if ok
                else "FAIL: the A/A control differs from the baseline on " + ", ".join(t["task"] for t in sig)
                + ", so the decoder is not deterministic or the comparison is unfair; do not trust this run's other verdicts"
            )
            if math.isfinite(primary["identical"]) and primary["identical"] < 1.0:
                status += (
                    f". Outputs differ on {100 * (1 - primary['identical']):.1f}% of documents although the configuration is "
                    "identical: decoding is not reproducible (seeding, batch composition or thread nondeterminism)"
                )
            noisy = [t for t in per_task if t["tps"] and not (t["tps"]["low"] <= 1.0 <= t["tps"]["high"])]
            if noisy:
                worst = max(noisy, key=lambda t: abs(math.log(t["tps"]["ratio"])))
                status += (
                    f". Timing is not reproducible here: the identical configuration ran at {worst['tps']['ratio']:.2f}× the "
                    f"baseline's tokens/s on {worst['task']}, so throughput differences of that size are machine noise "
                    "(busy or throttled machine?)"
                )
        else:
            ok = primary in sig and primary["delta"] < 0
            if ok:
                ptxt = _p(primary["p"])
                status = (
                    f"PASS: flagged as worse ({primary['task']}: Δ {_pts(primary['delta'])} pts, "
                    f"p{'' if ptxt.startswith('<') else '='}{ptxt})"
                )
            else:
                mde = primary["mde"]
                status = (
                    f"FAIL: not flagged as worse on {primary['task']}; the run is too small to see this degradation"
                    + (f" (MDE {100 * mde:.1f} pts)" if math.isfinite(mde) else "")
                    + ": raise --limit"
                )
        out.append(
            {
                "label": lab, "role": role, "control_of": ref,
                "passed": ok, "status": status, "tasks": per_task,
            }
        )
    return out


def _pooled_control(idx: _Index, run: RunData, lab: str, ref: str, alpha: float) -> dict[str, Any]:
    """The control's comparison with every task's documents pooled into one paired sample."""
    pool = _pooled(idx, run, lab, ref, None)
    if pool is None:
        return {"delta": math.nan, "low": math.nan, "high": math.nan, "p": math.nan, "b": None, "c": None,
                "mde": math.nan, "identical": math.nan, "nfe_ratio": math.nan, "tps": {}}
    rs = _seed_for("control", lab, ref)
    d = stats.paired_difference(pool["ca"], pool["cb"], alpha=alpha, n_resamples=N_RESAMPLES, rng=rs)
    nfe = stats.paired_ratio(pool["na"], pool["nb"], n_resamples=N_RESAMPLES, rng=rs) if _has(pool["na"]) else None
    tps = _timed(run, lab, ref, None)
    if tps is None and _has(pool["ta"]) and _has(pool["sa"]):
        tps = stats.paired_ratio(pool["ta"], pool["tb"], pool["sa"], pool["sb"], clusters=pool["cl"], n_resamples=N_RESAMPLES, rng=rs)
    return {"delta": d.statistic, "low": d.low, "high": d.high, "p": d.pvalue, "b": d.b, "c": d.c, "mde": d.mde,
            "identical": float(np.mean(pool["same"])), "nfe_ratio": nfe.statistic if nfe else math.nan,
            "tps": _ratio_dict(tps)}


# --------------------------------------------------------------------------------------------
# seed claims
# --------------------------------------------------------------------------------------------


def _label_for(run: RunData, labels: list[str], scheduler: str) -> str | None:
    """The run label that ran ``scheduler`` (its own name preferred; controls never stand in)."""
    cands = [k for k in labels if run.configs[k].role not in CONTROL_ROLES and (k == scheduler or run.configs[k].scheduler == scheduler)]
    if scheduler in cands:
        return scheduler
    return cands[0] if cands else None


def _pooled(idx: _Index, run: RunData, lab: str, base: str, tiers: tuple[int, ...] | None) -> dict[str, np.ndarray] | None:
    """Per-document arrays of ``lab`` and ``base`` pooled over every task both ran (and tiers)."""
    parts: dict[str, list[np.ndarray]] = {}
    for task in run.tasks:
        if not (idx.has(lab, task) and idx.has(base, task)):
            continue
        mask = np.ones(len(idx.docs[task]), dtype=bool)
        if tiers is not None:
            if not run.has_tiers.get(task):
                continue
            tc = idx.matrix(base, task, "tier")[:, 0]
            mask = np.isin(tc, tiers)
        if not mask.any():
            continue
        cl = idx.clusters(base, task)[mask]
        for name, who, col in (
            ("ca", lab, "correct"), ("cb", base, "correct"), ("na", lab, "nfe"), ("nb", base, "nfe"),
            ("ta", lab, "gen_tokens"), ("tb", base, "gen_tokens"), ("sa", lab, "cost_s"), ("sb", base, "cost_s"),
            ("ga", lab, "gen_length"), ("gb", base, "gen_length"),
        ):
            parts.setdefault(name, []).append(_dm(idx.matrix(who, task, col))[mask])
        for name, who in (("ea", lab), ("eb", base)):  # per document: the share of its seeds with an empty answer
            kept = idx.matrix(who, task, "gen_tokens").astype(float)
            parts.setdefault(name, []).append(_dm(np.where(np.isfinite(kept), kept == 0, np.nan))[mask])
        parts.setdefault("cl", []).append(cl)
        hit_a = [(m or {}).get("cache_hit_rate") for m in idx.matrix(lab, task, "trace_metrics")[:, 0]]
        hit_b = [(m or {}).get("cache_hit_rate") for m in idx.matrix(base, task, "trace_metrics")[:, 0]]
        parts.setdefault("ha", []).append(np.array([np.nan if v is None else float(v) for v in hit_a])[mask])
        parts.setdefault("hb", []).append(np.array([np.nan if v is None else float(v) for v in hit_b])[mask])
        ra, rb = idx.matrix(lab, task, "resp_hash")[:, 0], idx.matrix(base, task, "resp_hash")[:, 0]
        parts.setdefault("same", []).append((ra == rb).astype(float)[mask])
    if not parts:
        return None
    return {k: np.concatenate(v) for k, v in parts.items()}


def _fmt_claimed(c: Claim) -> str:
    lo, hi = c.claimed
    if c.measure == "acc_delta":
        return f"{100 * lo:+.1f} pts" if lo == hi else f"{100 * lo:+.1f} to {100 * hi:+.1f} pts"
    if c.measure == "identical":
        return "100% identical"
    if c.measure == "frontier":
        return "on the frontier, above the baseline"
    if math.isinf(hi):
        return f"> {lo:.2f}×"
    if lo <= 0:
        return f"< {hi:.2f}×"
    return f"{lo:.2f}×" if lo == hi else f"{lo:.2f}–{hi:.2f}×"


def claims_policy(alpha: float) -> dict[str, Any]:
    """The claims' multiplicity policy: a separate pre-registered family, Bonferroni-level intervals.

    The seeds' claims are fixed in code (``claims.CLAIMS``) before any run, so they form their own
    pre-registered family. Its size m is every interval claim in that list, run or not (a family
    that shrank to whatever a run happened to measure would not be pre-registered). The decision
    table needs *intervals*, and Holm's step-down gives adjusted p-values, not intervals: its
    interval form is Bonferroni's, so each claim's interval is a 1 - alpha/m interval and the MDE is
    computed at alpha/m. All claim intervals then hold their true values simultaneously with
    probability >= 1 - alpha, so every verdict of the table (which only asks where the interval
    lies) is family-wise protected; Holm's first, most stringent step uses exactly alpha/m.
    """
    m = sum(c.measure in claims_mod.INTERVAL_MEASURES for c in CLAIMS)
    return {
        "policy": "separate pre-registered family (claims.CLAIMS), Bonferroni-level simultaneous intervals",
        "m": m,
        "alpha": alpha,
        "alpha_each": alpha / m,
        "confidence_level": 1 - alpha / m,
        "min_units": claims_mod.MIN_UNITS,
    }


def _fill_ratio(row: ClaimRow, r: stats.RatioResult, a_each: float, direction: int) -> tuple[float, float, float]:
    """A ratio claim's n, measured text and MDE from its interval; returns (low, high, mde)."""
    row.n = r.n
    row.measured = f"{r.statistic:.2f}× [{r.low:.2f}, {r.high:.2f}]" if math.isfinite(r.statistic) else "no data"
    mde = stats.mde_ratio(r.log_sd, r.n, alpha=a_each, direction=direction)
    row.mde = "∞" if not math.isfinite(mde) else f"{1 + direction * mde:.2f}×"
    return r.low, r.high, mde


def _sweep_claim(c: Claim, row: ClaimRow, sweep_runs: dict[int, RunData], base: str, a_each: float,
                 level: float) -> ClaimRow:
    """A claim judged at the longest length of the generation-length sweep (tokens/s, paired by batch)."""
    if not sweep_runs:
        row.verdict, row.measured = "not measured", "—"
        row.reason = "no generation-length sweep in this run (`dllm-eval eval-all --gen-lengths 64,128,256`)"
        return row
    longest = max(sweep_runs)
    sub = sweep_runs[longest]
    sbase = _resolve_baseline(sub, base)
    lab = _label_for(sub, _order_labels(sub, sbase), c.scheduler)
    row.versus = sbase
    if lab is None:
        row.reason = f"{c.scheduler} was not in the sweep (settings.sweep.configs)"
        return row
    row.scheduler = lab
    idx = _Index(sub)
    r, unit = _sweep_tps(sub, idx, lab, sbase, level, c.throughput)
    row.unit = f"{unit}, gen_length {longest} (sweep {', '.join(map(str, sweep_runs))})"
    if r is None:
        row.measured, row.verdict = "no timing", claims_mod.NOT_MEASURABLE
        return row
    lo, hi, mde = _fill_ratio(row, r, a_each, claims_mod.claim_direction(c.claimed, c.null or 1.0))
    dec = decide_claim(c, lo, hi, mde=mde, n=row.n)
    row.verdict, row.reason, row.low, row.high = dec.verdict, dec.reason, lo, hi
    pool = _pooled(idx, sub, lab, sbase, None)
    if pool is not None:
        shares = {who: empty_share(pool[k]) for who, k in ((sbase, "eb"), (lab, "ea"))}
        if any(v > MOSTLY_EMPTY for v in shares.values()):
            row.reason += (f"; at gen_length {longest} most kept answers are empty ("
                           + ", ".join(f"`{w}` {100 * v:.0f}%" for w, v in shares.items())
                           + "): the ratio measures decoding speed only, not useful output")
    return row


def _claims(idx: _Index, run: RunData, labels: list[str], base: str, tasks: list[TaskSummary], alpha: float,
            sweep_runs: dict[int, RunData] | None = None) -> list[ClaimRow]:
    """Each seed claim against this run: a simultaneous interval, its unit and n, the MDE, the verdict."""
    fam = claims_policy(alpha)
    a_each, level = fam["alpha_each"], fam["confidence_level"]
    out: list[ClaimRow] = []
    for c in CLAIMS:
        lab = _label_for(run, labels, c.scheduler)
        versus = base if c.versus is None else (_label_for(run, labels, c.versus) or c.versus)
        tier_txt = "" if c.tiers is None else f" (tier {'-'.join(map(str, (c.tiers[0], c.tiers[-1]))) if len(c.tiers) > 1 else c.tiers[0]})"
        row = ClaimRow(c.seed, c.text, lab or c.scheduler, versus, c.measure + tier_txt, _fmt_claimed(c), "—", "not run", c.note,
                       unit=c.unit)
        if c.sweep:
            out.append(_sweep_claim(c, row, sweep_runs or {}, base, a_each, level))
            continue
        if c.measure == "untestable":
            row.verdict, row.measured = "not measured", "—"
            out.append(row)
            continue
        if lab is None or (c.versus is not None and _label_for(run, labels, c.versus) is None):
            out.append(row)
            continue
        if c.measure == "frontier":
            on, total = 0, 0
            above = 0
            for ts in tasks:
                pts = [(r.label, r.acc, r.tps) for r in ts.rows if math.isfinite(r.tps)]
                me = next((p for p in pts if p[0] == lab), None)
                bb = next((p for p in pts if p[0] == base), None)
                if me is None or bb is None:
                    continue
                total += 1
                on += int(me[0] in pareto_front(pts))
                above += int(me[1] >= bb[1] and me[2] > bb[2])
            row.unit, row.n = "tasks", total
            if total == 0:
                row.measured, row.verdict = "no throughput data", claims_mod.NOT_MEASURABLE
            else:
                row.measured = f"on frontier in {on}/{total} tasks; dominates baseline in {above}/{total}"
                row.verdict = "descriptive (not tested)"
                row.reason = "point estimates only: no interval, so no verdict from the decision table"
            out.append(row)
            continue
        pool = _pooled(idx, run, lab, versus, c.tiers)
        if pool is None:
            row.measured, row.verdict = "no matching documents", claims_mod.NOT_MEASURABLE
            out.append(row)
            continue
        rs = _seed_for("claim", c.text)
        n = len(pool["ca"])
        if c.measure == "identical":
            same = pool["same"]
            k = int(same.sum())
            row.n = n
            row.measured = f"{k}/{n} identical ({100 * k / n:.1f}%)"
            if n < claims_mod.MIN_UNITS:
                row.verdict, row.reason = claims_mod.TOO_FEW, f"n = {n} < {claims_mod.MIN_UNITS} independent units: no verdict"
            elif k == n:
                row.verdict, row.reason = "holds exactly", "every document's output is identical (an exact check, not a test)"
            else:
                row.verdict, row.reason = "fails", f"{n - k} documents differ, so the outputs are not identical"
            out.append(row)
            continue
        direction = claims_mod.claim_direction(c.claimed, c.null if c.null is not None else 0.0)
        lo = hi = mde = math.nan
        if c.measure == "acc_delta":
            d = stats.paired_difference(pool["ca"], pool["cb"], alpha=a_each, confidence_level=level,
                                        n_resamples=N_RESAMPLES, rng=rs)
            row.n = d.n
            row.measured = f"{100 * d.statistic:+.1f} pts [{100 * d.low:+.1f}, {100 * d.high:+.1f}]"
            lo, hi, mde = d.low, d.high, d.mde
            row.mde = "∞" if not math.isfinite(mde) else f"{100 * mde:.1f} pts"
        else:  # nfe_ratio, tps_ratio, cache_ratio
            if c.measure == "nfe_ratio":
                r = stats.paired_ratio(pool["na"], pool["nb"], confidence_level=level, n_resamples=N_RESAMPLES, rng=rs)
            elif c.measure == "tps_ratio":
                r = _timed(run, lab, versus, None, tiers=c.tiers, confidence_level=level, unit=c.throughput)
                if r is not None:
                    row.unit = f"batches (interleaved timing pass; {c.throughput_unit})"
                else:
                    num_a, num_b = ("ga", "gb") if c.throughput == CANVAS else ("ta", "tb")
                    r = stats.paired_ratio(pool[num_a], pool[num_b], pool["sa"], pool["sb"], clusters=pool["cl"],
                                           confidence_level=level, n_resamples=N_RESAMPLES, rng=rs)
                    row.unit = f"batches of the lm_eval cells (unpaired in time; {c.throughput_unit})"
            else:
                if not (_has(pool["ha"]) and _has(pool["hb"])):
                    who = versus if _has(pool["ha"]) else lab
                    row.measured = "traces lack cache_hit_rate" + (f" for {who}" if _has(pool["ha"]) or _has(pool["hb"]) else "")
                    if _has(pool["ha"]):
                        row.measured += f" ({lab}: {100 * float(np.nanmean(pool['ha'])):.0f}%)"
                    row.verdict = claims_mod.NOT_MEASURABLE
                    out.append(row)
                    continue
                r = stats.paired_ratio(pool["ha"], pool["hb"], confidence_level=level, n_resamples=N_RESAMPLES, rng=rs)
            lo, hi, mde = _fill_ratio(row, r, a_each, direction)
        dec = decide_claim(c, lo, hi, mde=mde, n=row.n)
        row.verdict, row.reason, row.low, row.high = dec.verdict, dec.reason, lo, hi
        out.append(row)
    return out


def _sequential_record(run: RunData) -> dict[str, Any] | None:
    """The run's ``sequential.json`` (written by ``eval-all --sequential``), or None for a fixed-n run."""
    path = Path(run.root) / "sequential.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: cannot read the sequential record ({exc})") from exc


# --------------------------------------------------------------------------------------------
# header
# --------------------------------------------------------------------------------------------


def _uniq(values: list[Any]) -> list[Any]:
    seen: dict[str, Any] = {}
    for v in values:
        if v is None or v == "":
            continue
        seen.setdefault(json.dumps(v, sort_keys=True, default=str), v)
    return list(seen.values())


def _fmt_limit(v: Any) -> str:
    """lm-eval records --limit as a float (6.0); show whole numbers as such."""
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def run_relative(text: str, commands: list[str]) -> str:
    """`text` with the folder the run was written to (read off the cells' `--output_path
    <run>/raw/...`) made relative to that run folder: a cell command then reads `raw/<label>/...`
    and the matrix call `--results-dir ..`, the same wherever the folder was made or copied to (a
    run made under /tmp on a leased GPU machine and committed under results/ included)."""
    made_in = {m.group(1) for c in commands for m in re.finditer(r"--output_path\s+(\S+?)/raw/", c)}
    if len(made_in) != 1:
        return text
    folder = made_in.pop()
    parent = str(Path(folder).parent)
    text = text.replace(f"{folder}/", "")
    return re.sub(r"(--results-dir\s+)" + re.escape(parent) + r"(?=\s|$)", r"\1..", text)


def _header(run: RunData, base: str, labels: list[str]) -> dict[str, Any]:
    metas = [u.meta for u in run.units]
    env = (run.matrix or {}).get("environment") or {}
    settings = (run.matrix or {}).get("settings") or {}
    models = _uniq([m.get("model") for m in metas])
    commands = []
    for lab in labels:
        for u in sorted((u for u in run.units if u.label == lab), key=lambda u: (u.seed is None, u.seed)):
            if u.command:
                commands.append(u.command)
            else:
                ma = u.meta.get("model_args") or {}
                margs = ",".join(f"{k}={v}" for k, v in ma.items())
                commands.append(
                    f"lm_eval --model dllm_adaptive --model_args {margs} --tasks {','.join(u.tasks)} "
                    f"--batch_size {u.meta.get('batch_size')} --device {u.meta.get('device')}"
                    + (f" --limit {u.meta.get('limit')}" if u.meta.get("limit") is not None else "")
                    + " --log_samples  # reconstructed from the results file; the exact command was not recorded"
                )
    git = env.get("git_commit")
    if git and env.get("git_dirty"):
        git += " (with uncommitted changes)"
    git = git or ", ".join(str(g) for g in _uniq([m.get("git_hash") for m in metas])) or "unknown"
    levels = sorted(run.isolation_levels)
    from dllm_eval.scoring.sandbox import isolation_banner

    if run.timing:
        meta = run.timing_meta or {}
        batches = {(r["task"], r["batch"]): r.get("tier") for r in run.timing}
        tiers = sorted({t for t in batches.values() if t is not None})
        per_tier = ", ".join(f"tier {t}: {sum(v == t for v in batches.values())}" for t in tiers)
        throughput = (f"interleaved timing pass (`timing.json`): {len(batches)} batches of {meta.get('batch', '?')} "
                      f"documents decoded by every configuration in one process on {meta.get('device', '?')}, "
                      + ("in a crossover order balanced for position and predecessor (Williams design)"
                         if meta.get("order") == "williams" else "in rotating (cyclic) order")
                      + ("; every batch first decoded once by every configuration, untimed"
                         if meta.get("warm_each_batch") else "")
                      + ("; **partial: the pass was cut short**" if meta.get("partial") else "")
                      + "; tokens/s ratios are paired by batch"
                      + (f"; batches are tier-homogeneous (each holds documents of one difficulty tier; {per_tier}), "
                         "so a tier claim is judged on batches of that tier alone" if tiers else ""))
        for lab in labels:
            aa = _timed(run, lab, base, None) if run.configs[lab].role == "control_aa" else None
            if aa is not None:
                inside = 0.95 <= aa.statistic <= 1.05
                throughput += (f"; A/A control `{lab}`: paired tokens/s ratio {aa.statistic:.3f}× "
                               f"[{aa.low:.3f}, {aa.high:.3f}] over {aa.n} batches, "
                               + ("within ±5%" if inside else "**outside ±5%: timing noise exceeds the tolerance**"))
    else:
        throughput = ("from the lm_eval cells, each timed in its own process at its own time (not paired in time: "
                      "machine drift lands on one side; read the A/A control's tokens/s ratio as the noise floor)")
    return {
        "throughput_source": throughput,
        "isolation_levels": levels,
        "isolation_banner": isolation_banner(levels) if levels else None,
        "model": ", ".join(portable(str(m)) for m in models) or "the adapter's default (embedded model)",
        "devices": ", ".join(map(str, _uniq([m.get("device") for m in metas]))) or "unknown",
        "batch_sizes": ", ".join(map(str, _uniq([m.get("batch_size") for m in metas]))) or "unknown",
        "limits": ", ".join(_fmt_limit(v) for v in _uniq([m.get("limit") for m in metas])) or "none (full test sets)",
        "torch": ", ".join(map(str, _uniq([m.get("torch_version") for m in metas]))) or env.get("torch") or "unknown",
        "transformers": ", ".join(map(str, _uniq([m.get("transformers_version") for m in metas]))) or env.get("transformers") or "unknown",
        "lm_eval": ", ".join(map(str, _uniq([m.get("lm_eval_version") for m in metas]))) or env.get("lm_eval") or "unknown",
        "python": env.get("python") or "unknown",
        "git": git,
        "invocation": run_relative(portable((run.matrix or {}).get("argv") or ""), commands) or None,
        "settings": settings,
        "commands": [run_relative(portable(c), commands) for c in commands],
        "seeds": {lab: run.configs[lab].seeds for lab in labels},
        "generated": _dt.datetime.now().isoformat(timespec="seconds"),
    }


# --------------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:.1f}%"


def _pts(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{100 * x:+.1f}"


def _p(x: float) -> str:
    if not math.isfinite(x):
        return "—"
    return "<0.001" if x < 0.001 else f"{x:.3f}"


def _ratio(d: dict[str, float], *, with_p: bool = False) -> str:
    if not d or not math.isfinite(d.get("ratio", math.nan)):
        return "n/a"
    s = f"{d['ratio']:.2f}× [{d['low']:.2f}, {d['high']:.2f}]"
    if with_p and math.isfinite(d.get("p_holm", math.nan)):
        s += f" p={_p(d['p_holm'])}"
    return s


def _num(x: float, fmt: str = ".1f") -> str:
    return "n/a" if not math.isfinite(x) else format(x, fmt)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return [*out, ""]


def _label_cell(s: Summary, lab: str) -> str:
    role = s.roles.get(lab)
    tag = {"baseline": " (baseline)", "control_aa": " (A/A control) †", "control_degraded": " (degraded control) †"}.get(role or "", "")
    return f"`{lab}`{tag}"


def _render_measurement_lines(h: dict[str, Any]) -> list[str]:
    """Where throughput comes from, and at which sandbox level code was scored (loudly, if below the floor)."""
    lines = [f"- **Throughput:** {h['throughput_source']}"]
    if h.get("isolation_levels"):
        lines.append(f"- **Code sandbox:** scored at {', '.join(h['isolation_levels'])}")
    if h.get("isolation_banner"):
        lines.insert(0, f"\n> **{h['isolation_banner']}**\n")
    return lines


def render_markdown(s: Summary, figures: dict[str, list[str]]) -> str:
    h = s.header
    L: list[str] = [f"# dllm-eval report: {s.run}", ""]
    L += [
        f"Baseline **`{s.baseline}`**. Generated {h['generated']} by `dllm-eval report`.",
        "",
        "## Run",
        "",
        f"- **Model:** {h['model']}",
        "- **Tasks:** " + "; ".join(f"{t.task} (n = {t.n_docs} documents, metric `{t.metric}`, filter `{t.filter}`)" for t in s.tasks),
        "- **Seeds:** " + _seed_text(h["seeds"]),
        f"- **Device:** {h['devices']}; batch size {h['batch_sizes']}; limit {h['limits']}",
        f"- **Versions:** torch {h['torch']}, transformers {h['transformers']}, lm-eval {h['lm_eval']}, python {h['python']}",
        f"- **Code:** git commit {h['git']}",
        f"- **Statistics:** α = {s.alpha} family-wise (Holm over {s.holm_m} comparisons), minimum effect of interest "
        f"{100 * s.min_effect:.1f} pts, {N_RESAMPLES} bootstrap resamples",
        *_render_power_line(s),
        *_render_claims_policy_line(s),
        *_render_measurement_lines(h),
    ]
    if h.get("invocation"):
        L.append(f"- **Matrix call:** `{h['invocation']}`")
    L += ["", "<details><summary>Exact commands (" + str(len(h["commands"])) + ")</summary>", "", "```sh"]
    L += h["commands"]
    L += ["```", "", "</details>", ""]
    L += _render_claims_header(s)
    L += [
        "## How to read this",
        "",
        "- **Accuracy**: mean score with a Wilson 95% interval (several seeds: clustered by document).",
        "- **Δ**: accuracy minus the baseline's on the same documents, in percentage points, with a paired bootstrap 95% CI "
        "(resampling documents).",
        "- **p (Holm)**: McNemar exact test (several seeds: paired permutation test on per-document means), adjusted with Holm "
        "over every accuracy, NFE, tokens/s and latency comparison in this report. Controls (†) are pre-registered checks: "
        "their p is unadjusted and they are not in the Holm family.",
        "- **b/c**: documents only this scheduler got right / only the baseline got right. Only these carry information.",
        f"- **MDE**: the smallest |Δ| this run detects with 80% power at α = {s.alpha}, given the observed disagreement "
        "(exact power of McNemar's test).",
        "- **NFE ratio**, **tokens/s**, **latency**: ratio of totals against the baseline with a paired bootstrap CI; the "
        "Wilcoxon signed-rank test (Pratt) on per-document (NFE) or per-batch (timings) log-ratios gives the p-value. "
        "Timings are per batch, so batches are the resampling unit. When the run has an interleaved timing pass, "
        "the tokens/s column and its ratio both come from it (kept tokens/s over the timed batches; a configuration "
        "the pass left out shows n/a); otherwise both come from the lm_eval cells.",
        f"- **Verdict**: *better*/*worse* when Holm p < {s.alpha}; otherwise *no detectable difference* if the MDE is at most "
        f"{100 * s.min_effect:.1f} pts, else *under-powered*.",
        "- Confidence intervals are unadjusted 95% intervals while p-values are Holm-adjusted, so an interval that just "
        "excludes 0 (or 1×) can come with a non-significant p: the evidence did not survive the multiplicity correction.",
        "",
    ]
    for t in s.tasks:
        L += [f"## {t.task}", "", f"Filter `{t.filter}`, metric `{t.metric}`, n = {t.n_docs} documents.", ""]
        head = ["Scheduler", "Accuracy [95% CI]", "Δ pts [95% CI]", "p (Holm)", "b/c", "MDE pts", "NFE/doc", "NFE ratio [95% CI]",
                "tokens/s (ratio)", "latency p50/p90 s", "Verdict"]
        rows = []
        for r in t.rows:
            base = r.label == s.baseline
            ctrl = r.role in CONTROL_ROLES
            tps = _num(r.tps, ".0f")
            if not base and r.ratios.get("tps"):
                tps += f" ({r.ratios['tps']['ratio']:.2f}×)"
            rows.append([
                _label_cell(s, r.label),
                f"{_pct(r.acc)} [{_num(100 * r.acc_low)}, {_num(100 * r.acc_high)}]",
                "—" if base else f"{_pts(r.delta)} [{_pts(r.delta_low)}, {_pts(r.delta_high)}]",
                "—" if base else (_p(r.p) + " †" if ctrl else _p(r.p_holm)),
                "—" if base or r.b is None else f"{r.b}/{r.c}",
                "—" if base else ("∞" if not math.isfinite(r.mde) else f"{100 * r.mde:.1f}"),
                _num(r.nfe_mean),
                "—" if base else _ratio(r.ratios.get("nfe", {})),
                tps,
                f"{_num(r.lat_p50, '.2f')} / {_num(r.lat_p90, '.2f')}",
                r.verdict,
            ])
        L += _table(head, rows)
        L += _sentences(s, t)
        for f in figures.get(t.task, []):
            L += [f"![{f}]({f})", ""]
        if t.other_filters:
            L += [f"### {t.task}: other filters (secondary, unadjusted)", ""]
            L += _table(
                ["Filter", "Scheduler", "Accuracy [95% CI]", "Δ pts [95% CI]", "p"],
                [[e["filter"], f"`{e['label']}`", f"{_pct(e['acc'])} [{_num(100 * e['low'])}, {_num(100 * e['high'])}]",
                  "—" if "delta" not in e else f"{_pts(e['delta'])} [{_pts(e['delta_low'])}, {_pts(e['delta_high'])}]",
                  "—" if "p" not in e else _p(e["p"])] for e in t.other_filters],
            )
        L += _render_tiers(s, t)
        L += _render_subjects(s, t)
    L += _render_sequential(s)
    L += ["## Controls", ""]
    if not s.controls:
        L += ["No control configurations were run (the default matrix has an A/A copy of the baseline and a τ=0.3 one).", ""]
    for c in s.controls:
        kind = "A/A (must show no difference)" if c["role"] == "control_aa" else "degraded (must be flagged as worse)"
        L += [f"**`{c['label']}`** vs `{c['control_of']}`, {kind}: **{c['status']}**", ""]
        L += _table(
            ["Task", "Δ pts [95% CI]", "p (unadjusted)", "b/c", "MDE pts", "identical outputs", "NFE ratio", "tokens/s ratio [95% CI]"],
            [[t["task"], f"{_pts(t['delta'])} [{_pts(t['low'])}, {_pts(t['high'])}]", _p(t["p"]),
              "—" if t["b"] is None else f"{t['b']}/{t['c']}", "∞" if not math.isfinite(t["mde"]) else f"{100 * t['mde']:.1f}",
              _pct(t["identical"]), _num(t["nfe_ratio"], ".2f"), _ratio(t["tps"])] for t in c["tasks"]],
        )
    L += _render_sweep(s)
    L += _render_claims_table(s)
    if s.notes:
        L += ["## Data notes", "", *[f"- {n}" for n in dict.fromkeys(s.notes)], ""]
    L += ["## Configurations", ""]
    L += _table(
        ["Label", "Role", "Description", "Parameters"],
        [[f"`{k}`", s.roles.get(k) or "", s.descriptions.get(k, ""),
          ", ".join(f"{pk}={pv}" for pk, pv in s.params.get(k, {}).items() if pv is not None)] for k in s.labels],
    )
    return "\n".join(L)


def _render_power_line(s: Summary) -> list[str]:
    """The header bullet that says what the run could detect (pooled seed comparisons at Holm's
    alpha/m) and what it could not power."""
    p = s.power
    if not p or not p.get("rows"):
        return []
    rows = sorted(p["rows"], key=lambda r: -r["mde"] if math.isfinite(r["mde"]) else -math.inf)
    worst = rows[0]["mde"]
    each = ", ".join(f"`{r['label']}` {_num(100 * r['mde'])} ({r['discordant']}/{r['n']} discordant)" for r in rows)
    ns = sorted({r["n"] for r in rows})
    line = (f"- **Power:** pooled over the tasks ({'/'.join(map(str, ns))} paired documents), the seed comparisons "
            f"detect an accuracy difference of **{_num(100 * worst)} pts** or more with {p['power']:.0%} power at "
            f"α/m = {p['alpha']}/{p['m']} = {p['alpha_each']:.2g} (Holm's first step over this report's family; exact "
            f"McNemar power at each comparison's own discordance; the level `dllm-eval plan` sizes runs at): {each}. "
            f"Not powered: pooled differences below {_num(100 * worst)} pts")
    if math.isfinite(p.get("per_task_max", math.nan)):
        line += (f"; one task alone (per-task MDE up to {_num(100 * p['per_task_max'])} pts even at the unadjusted "
                 f"α = {p['alpha']}, the tables' MDE column)")
    if worst > s.min_effect:
        line += (f"; the minimum effect of interest, {100 * s.min_effect:.1f} pts, which is why verdicts without a "
                 "significant difference read *under-powered*")
    line += "; the tier rows (descriptive)"
    return [line]


def _render_claims_policy_line(s: Summary) -> list[str]:
    """The header bullet that states the claims' multiplicity policy."""
    f = s.claims_family
    if not f:
        return []
    return [
        f"- **Seed claims:** a separate pre-registered family of {f['m']} interval claims (`claims.CLAIMS`), "
        f"not in the Holm family above; each claim's interval is a {100 * f['confidence_level']:.2f}% interval "
        f"(α/m = {f['alpha']}/{f['m']}, Bonferroni: the interval form of Holm's first step), so all claim intervals "
        f"hold together with probability ≥ {1 - f['alpha']:.2f}; the MDE is at the same α/m; no verdict from fewer than "
        f"{f['min_units']} independent units"
    ]


def _render_claims_header(s: Summary) -> list[str]:
    """The decision table the seed-claim verdicts come from, printed in the report's header."""
    f = s.claims_family
    if not f:
        return []
    L = [
        "## How seed claims are judged",
        "",
        f"Each claim's measured interval [lo, hi] (simultaneous {100 * f['confidence_level']:.2f}%, see the Run section "
        "above) is compared with the claimed range [a, b] on the claim's side of no effect (0 for a difference, 1× "
        "for a ratio; for a claimed drop or saving, read the rules mirrored). Exactly one row applies:",
        "",
    ]
    L += _table(["Verdict", "Rule"], [[f"*{v}*", rule] for v, rule in claims_mod.DECISION_TABLE])
    L += [
        "A point claim (\"+18%\") is the range [1.18, 1.18]: no interval lies inside a point, so it is at best "
        "*inconclusive* with the reason \"contains the claimed point\". An open claim (\"more than the baseline\") is "
        "the range (1, ∞). Claims that are not effect sizes are checked exactly instead: identical outputs "
        "(*holds exactly* / *fails*, with the count) and the frontier (*descriptive*, no test).",
        "",
    ]
    return L


def _render_claims_table(s: Summary) -> list[str]:
    """The seed-claims table: every claim with its unit, n, simultaneous interval, MDE, verdict and reason."""
    f = s.claims_family
    lvl = f"{100 * f['confidence_level']:.2f}%" if f else "95%"
    L = ["## Seed claims", "",
         "Each quantitative claim of the two seed proposals next to what this run measured, pooled over the tasks "
         f"(tiers where stated). Intervals are simultaneous {lvl} intervals over the pre-registered claims family; "
         "verdicts follow the decision table in *How seed claims are judged*. Readings of vague wording are in "
         "`dllm_eval/analysis/claims.py`.", ""]
    L += _table(
        ["Seed", "Claim", "Scheduler (vs)", "Claimed", f"Measured [{lvl} CI]", "Unit (n)", "MDE", "Verdict", "Why"],
        [[c.seed, c.text + (f" ({c.note})" if c.note else ""), f"`{c.scheduler}` (vs `{c.versus}`)", c.claimed, c.measured,
          f"{c.unit} (n={c.n})" if c.n is not None else c.unit, c.mde, f"**{c.verdict}**", c.reason] for c in s.claims],
    )
    return L


def _render_sweep(s: Summary) -> list[str]:
    """The generation-length sweep: per length, accuracy, empty answers and cost against the
    baseline (descriptive), and a plain warning at each length where most answers are empty."""
    if not s.sweep:
        return []
    lengths = sorted({r.gen_length for r in s.sweep})
    L = ["## Generation-length sweep", "",
         f"The sweep configurations and the baseline rerun with the canvas fixed to {', '.join(map(str, lengths))} tokens "
         f"(`eval-all --gen-lengths`; sub-runs under `sweep/gen<L>/`), pooled over the tasks. The answer is cut at each "
         "task's stop strings as always, so a longer canvas pads what the schedulers decode and cache. Accuracy and empty "
         "answers come from the lm_eval cells (an answer is empty when nothing is kept before its first stop string or EOS). "
         "Throughput is **canvas tokens/s** (canvas positions decoded, gen_length × rows, per second of wall time): at one "
         "length both configurations decode the same canvas, so its paired ratio is the inverse wall-time ratio, a speed "
         "measure whatever the answers hold; the unit column names the unit each row used. Δ and the ratios are unadjusted "
         "95% intervals (descriptive); the seed claim \"long-sequence scaling\" is judged at the longest length in "
         "*Seed claims*.", ""]
    rows = []
    for r in s.sweep:
        rows.append([str(r.gen_length), f"`{r.label}`", str(r.n_docs), f"{_pct(r.acc_base)} → {_pct(r.acc)}",
                     f"{_pts(r.delta)} [{_pts(r.delta_low)}, {_pts(r.delta_high)}]",
                     f"{_pct(r.empty_base)} / {_pct(r.empty)}", _ratio(r.nfe),
                     _ratio(r.tps), f"{r.tps_unit} (n={r.tps_n})" if r.tps_n is not None else r.tps_unit])
    L += _table(["gen_length", "Configuration", "Documents", "Accuracy (baseline → it)", "Δ pts [95% CI]",
                 "Empty answers (baseline / it)", "NFE ratio [95% CI]", "Throughput ratio [95% CI]", "Unit (n)"], rows)
    L += _sweep_warnings(s.sweep, s.baseline)
    for lab in dict.fromkeys(r.label for r in s.sweep):
        mine = sorted((r for r in s.sweep if r.label == lab and r.tps), key=lambda r: r.gen_length)
        if len(mine) >= 2 and mine[0].tps.get("ratio"):
            growth = mine[-1].tps["ratio"] / mine[0].tps["ratio"]
            unit = "" if len({r.tps_unit for r in (mine[0], mine[-1])}) == 1 else " (the two lengths used different units)"
            L += [f"- `{lab}`: throughput ratio {mine[0].tps['ratio']:.2f}× at {mine[0].gen_length} tokens, "
                  f"{mine[-1].tps['ratio']:.2f}× at {mine[-1].gen_length} ({growth:.2f}× the short-canvas ratio; "
                  f"point estimates){unit}."]
    return [*L, ""]


def _sweep_warnings(sweep: list[SweepRow], baseline: str) -> list[str]:
    """One line per length at which more than MOSTLY_EMPTY of some configuration's kept answers are
    empty: its accuracy there says that the model fails to answer on that canvas, not which
    scheduler is better, so it is no verdict."""
    out = []
    for length in sorted({r.gen_length for r in sweep}):
        mine = [r for r in sweep if r.gen_length == length]
        shares = {baseline: mine[0].empty_base, **{r.label: r.empty for r in mine}}
        if any(math.isfinite(v) and v > MOSTLY_EMPTY for v in shares.values()):
            who = ", ".join(f"`{k}` {_pct(v)}" for k, v in shares.items())
            out.append(f"- **gen_length {length}: most answers are empty** ({who} of kept answers). Accuracy and its "
                       "Δ at this length measure the model failing to answer on a canvas this long, not the schedulers: "
                       "read them as no verdict. The canvas tokens/s ratio still measures speed.")
    return out


def _render_sequential(s: Summary) -> list[str]:
    """The sequential-stopping section when the run was sequential (``sequential.json``), else nothing."""
    if not s.sequential:
        return []
    from dllm_eval.analysis.sequential import render_sequential_record

    lines = render_sequential_record(s.sequential)
    extra = []
    if s.sequential.get("order"):
        extra.append(f"Document order: {s.sequential['order']}.")
    controls = [f for f in (s.sequential.get("families") or {}) if f != "comparisons"]
    if controls:
        extra.append(f"The controls ({', '.join(f'`{c}`' for c in controls)}) are each their own family (Holm over "
                     "their tasks), outside the Holm family of the real comparisons, as in the Controls section.")
    extra.append("The per-task tables above are fixed-n descriptions of the documents every configuration decoded; "
                 "for the comparisons stopped here, the decisions and intervals to read are this section's RCIs.")
    return [*lines[:-1], *extra, ""] if lines and lines[-1] == "" else [*lines, *extra]


def _seed_text(seeds: dict[str, list[int]]) -> str:
    sets = {tuple(v) for v in seeds.values()}
    if len(sets) == 1:
        v = next(iter(sets))
        return ", ".join(map(str, v)) + " (every configuration)" if v else "not recorded"
    return "; ".join(f"{k}: {', '.join(map(str, v)) or '?'}" for k, v in seeds.items())


def _sentences(s: Summary, t: TaskSummary) -> list[str]:
    out = []
    for r in t.rows:
        if r.label == s.baseline:
            continue
        parts = [f"accuracy {r.verdict.rstrip(' †')} (Δ {_pts(r.delta)} pts [{_pts(r.delta_low)}, {_pts(r.delta_high)}])"]
        for key, name in (("nfe", "NFE"), ("tps", "tokens/s")):
            d = r.ratios.get(key) or {}
            if d and math.isfinite(d.get("ratio", math.nan)):
                pk = d.get("p_holm", d.get("p", math.nan))
                sig = math.isfinite(pk) and pk < s.alpha
                parts.append(f"{name} {d['ratio']:.2f}× [{d['low']:.2f}, {d['high']:.2f}]" + ("" if sig else " (not significant)"))
        out.append(f"- `{r.label}`: " + "; ".join(parts) + ".")
    return [*out, ""] if out else []


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def _jsonable(o: Any) -> Any:
    if isinstance(o, float):
        return None if not math.isfinite(o) else o
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.floating, np.integer)):
        return _jsonable(o.item())
    return o


def write_report(
    run_dir: str | Path,
    *,
    baseline: str | None = None,
    out: str | Path | None = None,
    alpha: float = 0.05,
    min_effect: float = 0.05,
    metric: str | None = None,
    figures: bool = True,
    csv: bool = False,
) -> Path:
    """Load ``run_dir``, compute, and write report.md, figures and summary.json into ``out``.

    Everything is produced in a temporary folder first; only when all of it succeeded are the
    files moved into ``out`` (default: ``run_dir``), so an error never leaves half a report.
    """
    if not (0 < alpha < 1):
        raise UserError(f"--alpha must be between 0 and 1, got {alpha}")
    if not (0 < min_effect < 1):
        raise UserError(f"--min-effect is a fraction of accuracy (e.g. 0.05 for 5 points), got {min_effect}")
    run = load_run(run_dir, metric=metric)
    summary = build_summary(run, baseline=baseline, alpha=alpha, min_effect=min_effect)
    out_dir = Path(out) if out else Path(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=out_dir))
    try:
        figs: dict[str, list[str]] = {}
        if figures:
            from dllm_eval.analysis.plots import make_figures

            figs = make_figures(summary, tmp)
        (tmp / "report.md").write_text(render_markdown(summary, figs), encoding="utf-8")
        if csv:
            run.table.to_csv(tmp / "table.csv")
        (tmp / "summary.json").write_text(json.dumps(portable_record(_jsonable(asdict(summary))), indent=1, default=str),
                                          encoding="utf-8")
        for f in sorted(tmp.iterdir()):
            os.replace(f, out_dir / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir / "report.md"


# --------------------------------------------------------------------------------------------
# several models in one run
# --------------------------------------------------------------------------------------------


def render_multi_model(summaries: dict[str, Summary], reports: dict[str, str]) -> str:
    """One report over several models: each model's full report (its own table set, under its
    own heading) and, first, one line per seed claim saying whether the models' verdicts agree."""
    models = list(summaries)
    L = [f"# dllm-eval report over {len(models)} models: {', '.join(f'`{m}`' for m in models)}", "",
         "Each model's matrix ran on the same tasks, documents and configurations; each has its own report below "
         "(its own statistics: comparisons are never pooled across models). A seed claim *agrees* when every model "
         "reaches the same verdict from the decision table.", "",
         "## Seed claims across models", "",
         "| seed | claim | " + " | ".join(f"`{m}`" for m in models) + " | models agree? |",
         "|---|---|" + "---|" * len(models) + "---|"]
    by_model = {m: {(c.seed, c.text): c for c in s.claims} for m, s in summaries.items()}
    for key in dict.fromkeys(k for rows in by_model.values() for k in rows):
        cells = [by_model[m].get(key) for m in models]
        verdicts = [c.verdict if c else "not run" for c in cells]
        shown = [f"{v} ({c.measured})" if c and c.measured not in ("", "—") else v for v, c in zip(verdicts, cells)]
        judged = [v for v in verdicts if v not in ("not run", "not measured", claims_mod.TOO_FEW)]
        agree = ("—" if len(judged) < 2 else "yes" if len(set(judged)) == 1 else "**no**")
        L.append(f"| {key[0]} | {key[1]} | " + " | ".join(shown) + f" | {agree} |")
    for m in models:
        body = reports[m].splitlines()
        L += ["", f"## Model `{m}`", ""]
        L += [("#" + line) if line.startswith("#") else line for line in body[1:]]  # its headings one level down
    return "\n".join(L) + "\n"


def write_multi_model_report(root: str | Path, runs: dict[str, Path], **kw: Any) -> Path:
    """`report.md` in `root` over the per-model runs (each also keeps its own report.md)."""
    summaries, reports = {}, {}
    for model, run_dir in runs.items():
        path = write_report(run_dir, **kw)
        reports[model] = path.read_text(encoding="utf-8")
        summaries[model] = build_summary(load_run(run_dir), baseline=kw.get("baseline"), alpha=kw.get("alpha", 0.05),
                                         min_effect=kw.get("min_effect", 0.05))
    out = Path(root) / "report.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(render_multi_model(summaries, reports), encoding="utf-8")
    os.replace(tmp, out)
    return out
