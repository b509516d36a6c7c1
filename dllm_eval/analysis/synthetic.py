"""Fake lm-eval output with known effects: for tests, and to try the report without a model.

It writes exactly what ``lm_eval --log_samples --output_path DIR`` plus the dllm_adaptive adapter
write (results_<date>.json, samples_<task>_<date>.jsonl, traces_<task>.jsonl; formats of
../shared/reference/lmeval_code_exec_stats.md section 3), but the "model" is a formula: each
document has a fixed difficulty, each configuration a fixed accuracy shift and cost profile, so
a test knows what the statistics must find (the A/A label is identical to the baseline, the
threshold-0.3 label is clearly worse).

Run as a stand-in for ``lm_eval`` (it accepts the same flags eval-all passes)::

    dllm-eval eval-all --lm-eval-cmd "python -m dllm_eval.analysis.synthetic" --run demo

Environment hooks for tests: ``DLLM_EVAL_FAKE_LOG`` (append one line per invocation),
``DLLM_EVAL_FAKE_FAIL`` (exit 3 after writing a partial samples file when the model_args
contain this string).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

from dllm_eval import defaults

TASKS: dict[str, dict[str, Any]] = {
    "synth_math": {"filters": ["strict-match", "flexible-extract"], "metric": "exact_match", "n_docs": 1000, "tiers": True},
    "synth_code": {"filters": ["create_test"], "metric": "pass@1", "n_docs": 500, "tiers": True},
    "plain_qa": {"filters": ["none"], "metric": "acc", "n_docs": 300, "tiers": False},
}
BASE_ACC = {1: 0.95, 2: 0.72, 3: 0.40, 4: 0.15}
BASE_NFE = {1: 14.0, 2: 22.0, 3: 34.0, 4: 46.0}
TOKENS = {1: 24.0, 2: 48.0, 3: 80.0, 4: 110.0}


def _profile(margs: dict[str, Any]) -> tuple[float, float, float]:
    """(accuracy shift, NFE factor, seconds per forward) of a configuration: the known effects."""
    sched = str(margs.get("scheduler", "fast_dllm"))
    thr = float(margs.get("threshold", 0.9) or 0.9)
    if sched == "llada":
        return 0.02, 128.0 / 22.0, 0.010
    if sched == "fast_dllm":
        shift = -0.15 if thr <= 0.35 else (-0.05 if thr <= 0.6 else 0.0)
        nfe = 0.45 if thr <= 0.35 else 1.0
        if "factor" in margs:
            shift, nfe = -0.01, 0.85
        per = 0.013 if margs.get("cache") == "prefix" else 0.010
        return shift, nfe, per
    table = {
        "drs": (-0.01, 1.3, 0.010),
        "drs_uniform": (-0.01, 1.3, 0.010),
        "drs_v2": (0.0, 0.95, 0.010),
        "adaptive": (0.0, 0.85, 0.009),
        "adaptive_block": (0.0, 0.9, 0.010),
        "adaptive_threshold": (0.0, 0.92, 0.010),
        "tiered_cache": (0.0, 1.0, 0.008),
    }
    return table.get(sched, (0.0, 1.0, 0.010))


def _h(*parts: Any) -> int:
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:15], 16)


def _config_key(margs: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in sorted(margs.items()) if k not in ("seed", "trace_dir")}, sort_keys=True, default=str)


def doc_for(task: str, doc_id: int) -> dict[str, Any]:
    tier = 1 + (doc_id * 7 + 3) % 4
    if task == "synth_code":
        return {"task_id": doc_id, "text": f"Write f{doc_id}(x) returning x+{doc_id}.", "tier": tier,
                "test_list": [f"assert f{doc_id}(1) == {1 + doc_id}"]}
    if task == "synth_math":
        return {"question": f"Problem {doc_id}: what is {doc_id} + {tier}?", "answer": f"#### {doc_id + tier}", "tier": tier}
    return {"question": f"Q{doc_id}", "answer": str(doc_id % 3)}


def simulate(task: str, doc_ids: list[int], margs: dict[str, Any], seed: int) -> list[dict[str, float]]:
    """Per-document outcome and cost for one configuration (deterministic)."""
    shift, nfe_f, per_fwd = _profile(margs)
    key = _config_key(margs)
    out = []
    for d in doc_ids:
        tier = doc_for(task, d).get("tier", 2)
        u = (_h(task, d) % 10**6) / 1e6  # document difficulty: shared by every configuration
        g = np.random.default_rng(_h(key, task, d))
        gs = np.random.default_rng(_h(key, task, d, seed))
        noise = g.normal(0, 0.12) + gs.normal(0, 0.02)
        p = BASE_ACC[tier] + shift
        correct = float(u + noise * 0.5 < p)
        nfe = max(1.0, round(BASE_NFE[tier] * nfe_f * float(np.exp(g.normal(0, 0.15)))))
        toks = max(0.0, round(TOKENS[tier] * float(np.exp(g.normal(0, 0.1)))))
        out.append({"correct": correct, "nfe": nfe, "tokens": toks, "per_fwd": per_fwd, "tier": tier})
    return out


def write_fake_run(
    output_path: str | Path,
    *,
    model_args: dict[str, Any],
    tasks: list[str],
    limit: int | None = None,
    seed: int = defaults.SEED,
    batch_size: int = 16,
    device: str = "cpu",
    trace_dir: str | Path | None = None,
    date_id: str | None = None,
    fail_after_samples: bool = False,
) -> Path:
    """Write one fake lm_eval run; returns the results file."""
    pretrained = model_args.get("pretrained")
    model_name = str(pretrained) if pretrained else f"{_h(_config_key(model_args)) % 16**8:08x}"
    sanitized = re.sub(r"[\"<>:/|\\?*\[\]]+", "__", model_name)
    out_dir = Path(output_path) / sanitized
    out_dir.mkdir(parents=True, exist_ok=True)
    tdir = Path(trace_dir) if trace_dir else Path(output_path) / "traces"  # the adapter's default
    tdir.mkdir(parents=True, exist_ok=True)
    date_id = date_id or _dt.datetime.now().isoformat().replace(":", "-")
    results: dict[str, Any] = {}
    configs: dict[str, Any] = {}
    hib: dict[str, Any] = {}
    nsamp: dict[str, Any] = {}
    for task in tasks:
        spec = TASKS.get(task, {"filters": ["none"], "metric": "acc", "n_docs": 200, "tiers": False})
        n = spec["n_docs"] if limit is None else min(limit, spec["n_docs"])
        ids = list(range(n))
        _journal(tdir, task, ids, model_args, seed)
        sim = simulate(task, ids, model_args, seed)
        metric = spec["metric"]
        lines = []
        for filt in spec["filters"]:
            for d, s in zip(ids, sim):
                doc = doc_for(task, d)
                if not spec["tiers"]:
                    doc.pop("tier", None)
                target = doc.get("answer", "x")
                resp = f"answer {d} {'ok' if s['correct'] else 'wrong'}"
                sample = {
                    "doc_id": d,
                    "doc": doc,
                    "target": str(target),
                    "arguments": {"gen_args_0": {"arg_0": f"prompt {d}", "arg_1": {"until": ["\n\n"], "do_sample": False}}},
                    "resps": [[resp]],
                    "filtered_resps": [resp],
                    "filter": filt,
                    "metrics": [metric],
                    "doc_hash": hashlib.sha256(json.dumps(doc, indent=2, ensure_ascii=False).encode()).hexdigest(),
                    "prompt_hash": hashlib.sha256(f"prompt {d}".encode()).hexdigest(),
                    "target_hash": hashlib.sha256(str(target).encode()).hexdigest(),
                    metric: s["correct"] if filt != "flexible-extract" else max(s["correct"], float(_h(d, "flex") % 10 == 0)),
                }
                lines.append(json.dumps(sample, ensure_ascii=False))
        with open(out_dir / f"samples_{task}_{date_id}.jsonl", "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        if fail_after_samples:
            raise SystemExit(3)
        # traces: batches of batch_size in document order; one wall time per batch
        trows = []
        for b0 in range(0, n, batch_size):
            chunk = list(range(b0, min(n, b0 + batch_size)))
            bnfe = max(sim[i]["nfe"] for i in chunk)
            g = np.random.default_rng(_h(_config_key(model_args), task, b0, seed, "wall"))
            wall = bnfe * sim[chunk[0]]["per_fwd"] * (1 + len(chunk) / 32) * float(np.exp(g.normal(0, 0.05)))
            for i in chunk:
                trows.append(
                    {
                        "task": task, "doc_id": i, "repeat": 0, "scheduler": model_args.get("scheduler"),
                        "config": {k: v for k, v in model_args.items() if k != "trace_dir"}, "seed": seed,
                        "nfe": int(sim[i]["nfe"]), "batch_nfe": int(bnfe), "gen_tokens": int(sim[i]["tokens"]),
                        "gen_length": int(model_args.get("gen_length", 128)), "latency_s": wall,
                        "batch_id": b0 // batch_size, "batch_size": len(chunk), "batch_wall_s": wall,
                        "steps": [{"block": 0, "committed": 1, "conf_min": 0.5, "conf_mean": 0.8, "conf_max": 1.0}],
                        "events": [{"type": "block_size", "value": 16}] if "adaptive" in str(model_args.get("scheduler")) else [],
                        "metrics": {"cache_hit_rate": 0.6 if model_args.get("scheduler") in ("adaptive", "tiered_cache") else 0.45},
                    }
                )
        with open(tdir / f"traces_{task}.jsonl", "a", encoding="utf-8") as f:
            f.write("\n".join(json.dumps(r) for r in trows) + "\n")
        acc = float(np.mean([s["correct"] for s in sim]))
        results[task] = {"alias": task, "sample_len": n}
        for filt in spec["filters"]:
            results[task][f"{metric},{filt}"] = acc
            results[task][f"{metric}_stderr,{filt}"] = float(np.sqrt(acc * (1 - acc) / max(n - 1, 1)))
        configs[task] = {
            "task": task,
            "filter_list": [{"name": f, "filter": [{"function": "take_first"}]} for f in spec["filters"]],
            "metric_list": [{"metric": metric, "aggregation": "mean", "higher_is_better": True}],
        }
        hib[task] = {metric: True}
        nsamp[task] = {"original": spec["n_docs"], "effective": n}
    res = {
        "results": results,
        "group_subtasks": {},
        "configs": configs,
        "versions": {t: 1.0 for t in tasks},
        "n-shot": {t: 0 for t in tasks},
        "higher_is_better": hib,
        "n-samples": nsamp,
        "config": {
            "model": "dllm_adaptive",
            "model_args": model_args,
            "batch_size": str(batch_size),
            "batch_sizes": [],
            "device": device,
            "use_cache": None,
            "limit": limit,
            "bootstrap_iters": 100000,
            "gen_kwargs": {},
            "random_seed": 0,
            "numpy_seed": seed,
            "torch_seed": seed,
            "fewshot_seed": seed,
            "dllm_eval": {
                "pretrained": pretrained or "embedded:synthetic",
                "scheduler": model_args.get("scheduler"),
                "scheduler_args": {k: v for k, v in model_args.items() if k not in ("trace_dir", "pretrained", "seed", "scheduler")},
                "device": device,
                "seed": seed,
                "trace_dir": str(tdir),
                "torch_version": "2.13.0+cpu",
                "totals": {},
                "record": _fake_record(model_args, str(tdir), device, seed),
            },
        },
        "git_hash": "0000000",
        "date": 1.7e9,
        "pretty_env_info": "PyTorch version: 2.13.0+cpu\nIs debug build: False",
        "transformers_version": "5.23.0",
        "lm_eval_version": "0.4.13",
        "task_hashes": {t: "" for t in tasks},
        "model_source": "dllm_adaptive",
        "model_name": model_name,
        "model_name_sanitized": sanitized,
        "total_evaluation_time_seconds": "1.0",
    }
    path = out_dir / f"results_{date_id}.json"
    path.write_text(json.dumps(res, indent=2), encoding="utf-8")
    return path


def _journal(tdir: Path, task: str, ids: list[int], model_args: dict[str, Any], seed: int) -> None:
    """Like the adapter's resume journal: with $DLLM_EVAL_RESUME=1 documents already in
    <trace_dir>/journal/ are not "decoded" again. How many were is appended to
    $DLLM_EVAL_FAKE_DECODED (one JSON line per task), so tests can count decodes."""
    path = tdir / "journal" / "fake.jsonl"
    resume = os.environ.get("DLLM_EVAL_RESUME") == "1"
    key = _config_key(model_args)
    done = set()
    if resume and path.is_file():
        done = {(e["key"], e["task"], e["doc_id"], e["seed"]) for e in map(json.loads, path.read_text().splitlines())}
    new = [d for d in ids if (key, task, d, seed) not in done]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if resume else "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"key": key, "task": task, "doc_id": d, "seed": seed}) + "\n" for d in new)
    log = os.environ.get("DLLM_EVAL_FAKE_DECODED")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps({"scheduler": model_args.get("scheduler"), "threshold": model_args.get("threshold"),
                                "task": task, "decoded": len(new), "limit": len(ids)}) + "\n")


def _fake_record(model_args: dict[str, Any], trace_dir: str, device: str, seed: int) -> dict[str, Any]:
    """The cell record the adapter would write (`dllm_eval.cell_record`), for a formula "model":
    a fixed weights hash, the dtype and compile mode from model_args like the adapter's."""
    from dllm_eval.cell_record import library_versions, sandbox_min_isolation

    return {
        "model": str(model_args.get("pretrained") or "embedded:synthetic"),
        "weights": {"model.safetensors": hashlib.sha256(b"synthetic weights").hexdigest()},
        "tokenizer": {"tokenizer.json": hashlib.sha256(b"synthetic tokenizer").hexdigest()},
        "data": {},
        "versions": library_versions(),
        "code": {"version": "synthetic", "commit": None, "dirty": None, "diff_sha256": None},
        "dtype": str(model_args.get("dtype", "float32")),
        "device_type": device.split(":")[0],
        "compile_mode": str(model_args.get("compile", "none")),
        "sandbox_min_isolation": sandbox_min_isolation(),
        "scheduler": model_args.get("scheduler"),
        "scheduler_args": {k: v for k, v in model_args.items() if k not in ("scheduler", "seed", "trace_dir")},
        "seed": seed,
        "trace_dir": trace_dir,
    }


def _parse_model_args(s: str) -> dict[str, Any]:
    """model_args text -> values typed the way lm-eval's CLI would hand them to a model."""
    from dllm_eval.settings import coerce, split_settings

    return {k: coerce(v, None, k) for k, v in split_settings(s, what="--model_args").items()}


def main(argv: list[str] | None = None) -> int:
    """A stand-in for the `lm_eval` CLI that accepts the flags eval-all passes."""
    p = argparse.ArgumentParser(prog="fake-lm_eval")
    p.add_argument("--model")
    p.add_argument("--model_args", default="")
    p.add_argument("--tasks", required=True)
    p.add_argument("--include_path")
    p.add_argument("--batch_size", default="1")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", default="1234")
    p.add_argument("--limit", type=int)
    p.add_argument("--log_samples", action="store_true")
    p.add_argument("--output_path", required=True)
    p.add_argument("--confirm_run_unsafe_code", action="store_true")
    a = p.parse_args(argv)
    margs = _parse_model_args(a.model_args)
    log = os.environ.get("DLLM_EVAL_FAKE_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(a.model_args + "\n")
    fail = os.environ.get("DLLM_EVAL_FAKE_FAIL")
    print("Running generate_until requests:  50%|#####     | 1/2", file=sys.stderr, flush=True)
    write_fake_run(
        a.output_path,
        model_args=margs,
        tasks=a.tasks.split(","),
        limit=a.limit,
        seed=int(str(a.seed).split(",")[0]),
        batch_size=int(a.batch_size),
        device=a.device,
        trace_dir=margs.get("trace_dir"),
        fail_after_samples=bool(fail and fail in a.model_args),
    )
    print("Running generate_until requests: 100%|##########| 2/2", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def write_fake_matrix_run(
    root: str | Path,
    configs: dict[str, dict[str, Any]],
    *,
    tasks: list[str] | tuple[str, ...] = ("synth_math", "synth_code"),
    seeds: list[int] | tuple[int, ...] = (1234,),
    limit: int | None = 60,
    baseline: str | None = None,
    roles: dict[str, str] | None = None,
    matrix: bool = True,
    done: bool = True,
) -> Path:
    """A whole `eval-all`-style run folder (raw/<label>/seed<k>/, markers, matrix.json) in one call.

    ``configs`` maps label -> model_args (scheduler and its parameters). ``roles`` marks
    baseline/control labels in matrix.json, as eval_matrix.yaml would.
    """
    root = Path(root)
    roles = dict(roles or {})
    if baseline:
        roles.setdefault(baseline, "baseline")
    for label, margs in configs.items():
        for seed in seeds:
            cell = root / "raw" / label / f"seed{seed}"
            ma = {**margs, "seed": seed, "trace_dir": str(cell / "traces")}
            write_fake_run(cell, model_args=ma, tasks=list(tasks), limit=limit, seed=seed, trace_dir=cell / "traces",
                           date_id="2026-01-01T00-00-00.000000")
            if done:
                (cell / ".done.json").write_text(json.dumps({"command_str": f"lm_eval --model_args {label} --seed {seed}"}))
    if matrix:
        m = {
            "baseline": baseline,
            "configs": {
                k: {"scheduler": v.get("scheduler"), "params": v, "role": roles.get(k),
                    "control_of": baseline if roles.get(k, "").startswith("control") else None, "description": ""}
                for k, v in configs.items()
            },
            "settings": {"tasks": list(tasks), "seeds": list(seeds), "limit": limit},
            "environment": {"git_commit": "deadbeef", "python": "3.11"},
        }
        (root / "matrix.json").write_text(json.dumps(m, indent=1))
    return root
