"""Evaluate a checkpoint on the synthetic tasks with the real schedulers, without lm-eval.

Why this exists next to the lm-eval tasks: the GPU machine that trains the embedded model has
no lm-eval, and a scheduler sweep over 1000 documents is minutes there but an hour on a
2-core laptop. The prompts, generation lengths, stop strings and scoring are those of
tasks/synth/*.yaml (math: gsm8k's strict-match filter and exact_match settings, reproduced here
and checked against lm-eval in tests/test_synth.py; code: the sandbox's `check_asserts`).

    python -m dllm_eval.synth.evaluate --model dllm_eval/assets/tiny_llada --device cuda \\
        --config llada --config fast_dllm:threshold=0.9 --out results/embedded/eval.json
    python -m dllm_eval.synth.evaluate --summarize results/embedded/eval.json   # markdown tables
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dllm_eval import defaults
from dllm_eval.synth import synth_code, synth_math

TASKS = {"synth_math": synth_math, "synth_code": synth_code}
BLOCK_LENGTH = defaults.BLOCK_LENGTH

# The default sweep of issue 3: LLaDA at one token per step, Fast-dLLM dual cache at 4 thresholds.
DEFAULT_CONFIGS = (
    "llada",
    "fast_dllm:cache=dual,threshold=0.9",
    "fast_dllm:cache=dual,threshold=0.7",
    "fast_dllm:cache=dual,threshold=0.5",
    "fast_dllm:cache=dual,threshold=0.3",
)

_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_IGNORE = (",", "\\$", "(?s).*#### ", "\\.$")


def strict_match(response: str) -> str:
    """gsm8k's 'strict-match' filter: the first `#### <number>`, or '[invalid]' (lm-eval's fallback)."""
    m = _STRICT.search(response)
    return m.group(1) if m else "[invalid]"


def exact_match(prediction: str, reference: str) -> bool:
    """gsm8k's exact_match settings: ignore case and the regexes `, $ (?s).*#### \\.$` on both sides."""
    for pattern in _IGNORE:
        prediction, reference = re.sub(pattern, "", prediction), re.sub(pattern, "", reference)
    return prediction.lower() == reference.lower()


def parse_config(spec: str, gen_length: int) -> tuple[str, dict[str, Any]]:
    """'name:key=value,key=value' -> (name, params) at the synth block length; `llada` defaults
    to one token per step. Values stay text here and are typed by `get_scheduler`."""
    from dllm_eval.schedulers import param_fields
    from dllm_eval.settings import parse_spec

    name, settings = parse_spec(spec)
    params: dict[str, Any] = {"gen_length": gen_length}
    if param_fields(name)["block_length"] is not None:  # schedulers without blocks (dream) take none
        params["block_length"] = BLOCK_LENGTH
    if name == "llada":
        params["steps"] = gen_length
    return name, {**params, **settings}


def decode_docs(front: Any, task: str, docs: list[dict], spec: str, batch_size: int) -> dict[str, Any]:
    """Decode every doc with one scheduler config, longest prompts first (as lm-eval's Collator);
    per-document text, tokens and NFE in document order, plus the decode wall time."""
    from dllm_eval.schedulers import get_scheduler

    module = TASKS[task]
    name, params = parse_config(spec, module.GEN_LENGTH)
    sched = get_scheduler(name, **params)
    order = sorted(range(len(docs)), key=lambda i: -len(module.doc_to_text(docs[i])))
    texts, tokens, nfe, gen_tokens = [""] * len(docs), [[]] * len(docs), [0] * len(docs), [0] * len(docs)
    wall = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        decoded = front.generate([module.doc_to_text(docs[i]) for i in idx], sched, module.UNTIL)
        wall += decoded.output.wall_s
        for row, i in enumerate(idx):
            texts[i], tokens[i] = decoded.texts[row], decoded.tokens[row]
            nfe[i] = int(decoded.output.traces[row]["nfe"])
            gen_tokens[i] = sum(1 for t in decoded.tokens[row] if t != front.eos_id)
    return {"params": sched.params, "texts": texts, "tokens": tokens, "nfe": nfe, "gen_tokens": gen_tokens,
            "wall_s": wall}


def score_docs(task: str, docs: list[dict], texts: list[str]) -> list[bool]:
    """The task's verdict per document: gsm8k's strict match for math, the sandboxed asserts for code."""
    if task == "synth_math":
        return [exact_match(strict_match(t), d["answer"]) for d, t in zip(docs, texts)]
    from dllm_eval.scoring import CodeJob, run_many

    jobs = [CodeJob(synth_code.extract_program(t), list(d["test_list"]), timeout=synth_code.EXEC_TIMEOUT)
            for d, t in zip(docs, texts)]
    return [r.passed for r in run_many(jobs)]


def evaluate(front: Any, task: str, docs: list[dict], spec: str, batch_size: int, score: bool = True) -> dict[str, Any]:
    """Decode (and score) every doc with one scheduler config; accuracy per tier, NFE and throughput.

    `score=False` keeps the responses unscored (`correct` None): a GPU box without the sandbox's
    system packages decodes, and `--rescore` scores the saved responses where the sandbox runs."""
    module = TASKS[task]
    run = decode_docs(front, task, docs, spec, batch_size)
    wall = run["wall_s"]
    result = {
        "task": task, "config": spec, "params": dataclasses.asdict(run["params"]), "n": len(docs),
        "batch_size": batch_size, "nfe": sum(run["nfe"]) / len(docs), "nfe_per_doc": run["nfe"],
        "tier_of_doc": [int(d["tier"]) for d in docs],
        "wall_s": round(wall, 2), "canvas_tokens_per_s": round(len(docs) * module.GEN_LENGTH / wall, 1),
        "non_eos_tokens_per_s": round(sum(run["gen_tokens"]) / wall, 1),
        "correct": None, "responses": run["texts"],
    }
    return add_scores(result, docs) if score else result


def add_scores(result: dict[str, Any], docs: list[dict]) -> dict[str, Any]:
    """Score a result's responses; fill `correct`, `acc` and the per-tier table."""
    ok = score_docs(result["task"], docs, result["responses"])
    nfes = result["nfe_per_doc"]
    per_tier = {}
    for t in sorted({int(d["tier"]) for d in docs}):
        rows = [i for i, d in enumerate(docs) if int(d["tier"]) == t]
        per_tier[str(t)] = {"n": len(rows), "acc": sum(ok[i] for i in rows) / len(rows),
                            "nfe": sum(nfes[i] for i in rows) / len(rows)}
    return {**result, "acc": sum(ok) / len(ok), "tiers": per_tier, "correct": [bool(x) for x in ok]}


def rescore(path: Path) -> list[dict[str, Any]]:
    """Score the unscored results of a saved JSON file in place (see `evaluate(score=False)`)."""
    data = json.loads(path.read_text())
    for i, res in enumerate(data["results"]):
        if res.get("correct") is None:
            docs = TASKS[res["task"]].test_docs()[:res["n"]]
            data["results"][i] = add_scores(res, docs)
    path.write_text(json.dumps(data, indent=1) + "\n")
    return data["results"]


def summarize(results: list[dict[str, Any]]) -> str:
    """Markdown tables (one per task) of saved results: accuracy per tier, the paired difference
    to the reference on the same documents (with its standard error), NFE and throughput. The
    reference is `llada` at the same block length when the file has it, else the file's first
    configuration. Written from the JSON files, so committed tables never hold hand-copied numbers."""
    lines: list[str] = []
    for task in dict.fromkeys(r["task"] for r in results):
        rows = [r for r in results if r["task"] == task and r.get("correct") is not None]
        if not rows:
            continue

        def reference(r: dict[str, Any], rows: list[dict[str, Any]] = rows) -> dict[str, Any]:
            llada = next((x for x in rows if x["config"].split(":")[0] == "llada" and x["n"] == r["n"]
                          and x["params"]["block_length"] == r["params"]["block_length"]), None)
            return llada or rows[0]

        ref_name = "llada" if any(x["config"].split(":")[0] == "llada" for x in rows) else f"`{rows[0]['config']}`"
        lines += [f"### {task} (n = {rows[0]['n']})", "",
                  f"| scheduler | tier 1 | tier 2 | tier 3 | tier 4 | all | Δ vs {ref_name} (paired SE) | NFE/doc "
                  "| NFE per tier | NFE ratio | non-EOS tok/s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            ref = reference(r)
            tiers = [f"{100 * r['tiers'][k]['acc']:.1f}" if k in r["tiers"] else "" for k in ("1", "2", "3", "4")]
            delta = ""
            if ref is not r:
                diff = [float(a) - float(b) for a, b in zip(r["correct"], ref["correct"])]
                mean = sum(diff) / len(diff)
                se = (sum((d - mean) ** 2 for d in diff) / (len(diff) - 1) / len(diff)) ** 0.5
                delta = f"{100 * mean:+.1f} ({100 * se:.1f})"
            per_tier = " / ".join(f"{r['tiers'][k]['nfe']:.1f}" for k in sorted(r["tiers"]))
            lines.append(f"| {r['config']} | " + " | ".join(tiers) + f" | {100 * r['acc']:.1f} | {delta} | "
                         f"{r['nfe']:.2f} | {per_tier} | {r['nfe'] / ref['nfe']:.2f} | {r['non_eos_tokens_per_s']:.0f} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv and argv[0] == "--rescore":  # python -m dllm_eval.synth.evaluate --rescore A.json [B.json ...]
        for path in argv[1:]:
            print(summarize(rescore(Path(path))))
        return 0
    if argv and argv[0] == "--summarize":  # python -m dllm_eval.synth.evaluate --summarize A.json [B.json ...]
        results = [r for path in argv[1:] for r in json.loads(Path(path).read_text())["results"]]
        print(summarize(results))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "assets" / "tiny_llada"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: bf16 on GPU, fp32 on CPU)")
    parser.add_argument("--tasks", default="synth_math,synth_code")
    parser.add_argument("--config", action="append", help="scheduler config, repeatable (default: issue 3's sweep)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default=None, help="JSON file for the results (responses included)")
    parser.add_argument("--no-score", action="store_true", help="decode only; score later with --rescore")
    args = parser.parse_args(argv)

    import torch

    from dllm_eval.frontend import load_front_end

    dtype = getattr(torch, args.dtype) if args.dtype else None
    front = load_front_end(args.model, device=args.device, dtype=dtype, chat=False)
    model = front.model
    results: list[dict[str, Any]] = []
    meta = {"model": str(args.model), "device": args.device, "dtype": str(model.dtype), "torch": torch.__version__,
            "device_name": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"}
    for task in args.tasks.split(","):
        docs = TASKS[task].test_docs()[:args.limit]
        for spec in args.config or DEFAULT_CONFIGS:
            t0 = time.perf_counter()
            res = evaluate(front, task, docs, spec, args.batch_size, score=not args.no_score)
            res["elapsed_s"] = round(time.perf_counter() - t0, 1)
            results.append(res)
            tiers = " ".join(f"t{k}={v['acc']:.3f}/{v['nfe']:.1f}" for k, v in res.get("tiers", {}).items())
            acc = "unscored" if res["correct"] is None else f"{res['acc']:.3f}"
            print(f"{task:10s} {spec:40s} acc={acc} nfe={res['nfe']:.2f} {tiers} "
                  f"({res['elapsed_s']}s, {res['canvas_tokens_per_s']} tok/s)", flush=True)
            if args.out:  # after every config, so an interrupted sweep keeps what it measured
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                Path(args.out).write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
