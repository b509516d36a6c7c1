"""Mechanism probes: decompose a surprising accuracy effect into the pieces that cause it.

Why: a scheduler that serves stale keys and values and *raises* accuracy by 20 points is either
a real effect or a bug, and a report must not call it "better" before we know which. Each probe
below is a ladder of configurations that differ from the baseline in one piece at a time; the
script decodes the same documents with each, scores them, and prints, against a reference
configuration, the paired accuracy difference, the discordant counts b/c, the share of
documents whose generated tokens are identical, and the NFE. Saved JSON keeps every document's
tokens, so discordant outputs can be read side by side (`--show N`).

    python -m dllm_eval.benchmarks.mechanisms --probe tiered_cache --limit 200
    python -m dllm_eval.benchmarks.mechanisms --probe tiered_cache --device cuda --out results/mechanisms/tiered_cache.json
    python -m dllm_eval.benchmarks.mechanisms --summarize results/mechanisms/tiered_cache.json --show 3
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Each probe: task, reference label, and (label, scheduler spec) rungs. Specs use the synth
# evaluator's syntax ("name:key=value,...") and its defaults (block 32, the task's gen length).
T32 = "tiered_cache:base_block_size=32"
PROBES: dict[str, dict[str, Any]] = {
    # synth_code is 96 tokens = 3 blocks of 32, so the seed's tier-2 refresh (blocks 3, 6, ...)
    # never happens at interval 3: the masked suffix keeps its first-forward KV all the way.
    "tiered_cache": {
        "task": "synth_code",
        "reference": "static",
        "rungs": [
            ("fast_dllm_dual", "fast_dllm:cache=dual,threshold=0.9"),
            ("static", "adaptive_static:base_block_size=32"),
            ("tiered", T32),
            ("tiered_interval1", f"{T32},tier2_update_interval=1"),
            ("tiered_no_tier2", f"{T32},tier2_stability_threshold=1.0"),
            # every piece made fresh again: must equal `static` token for token
            ("tiered_all_fresh", f"{T32},tier2_update_interval=1,tier2_stability_threshold=0,tier1_refresh=true"),
            # one piece stale at a time
            ("stale_prompt_only", f"{T32},tier2_update_interval=1,tier2_stability_threshold=0"),
            ("stale_suffix_only", f"{T32},tier2_update_interval=1,tier2_stability_threshold=0,"
                                  "tier1_refresh=true,suffix_refresh=never"),
        ],
    },
    "tiered_cache_math": {
        "task": "synth_math",
        "reference": "static",
        "rungs": [
            ("static", "adaptive_static:base_block_size=32"),
            ("tiered", T32),
            ("stale_suffix_only", f"{T32},tier2_update_interval=1,tier2_stability_threshold=0,"
                                  "tier1_refresh=true,suffix_refresh=never"),
        ],
    },
    # eb_sampler (paper setting: no blocks) scores 82% on synth_code at 2.3 NFE, against LLaDA's
    # 60% at 96: is it the entropy rule, or decoding the whole canvas as one block?
    "eb_sampler": {
        "task": "synth_code",
        "reference": "fast_dllm_dual",
        "rungs": [
            ("fast_dllm_dual", "fast_dllm:cache=dual,threshold=0.9"),
            ("eb_no_blocks", "eb_sampler"),
            ("eb_blocks32", "eb_sampler:semi_ar=true"),
            ("fast_dllm_no_blocks", "fast_dllm:cache=dual,threshold=0.9,block_length=96"),
            ("fast_dllm_no_blocks_nocache", "fast_dllm:cache=none,threshold=0.9,block_length=96"),
            ("llada_no_blocks", "llada:block_length=96"),
            ("llada_blocks32", "llada"),
        ],
    },
    "eb_sampler_math": {
        "task": "synth_math",
        "reference": "fast_dllm_dual",
        "rungs": [
            ("fast_dllm_dual", "fast_dllm:cache=dual,threshold=0.9"),
            ("eb_no_blocks", "eb_sampler"),
            ("eb_blocks32", "eb_sampler:semi_ar=true"),
            ("fast_dllm_no_blocks", "fast_dllm:cache=dual,threshold=0.9,block_length=64"),
            ("llada_no_blocks", "llada:block_length=64"),
        ],
    },
    # WINO (+19) and Prophet (+33, at 1 NFE) on synth_code: their own rules, or block structure?
    "peers_code": {
        "task": "synth_code",
        "reference": "fast_dllm_dual",
        "rungs": [
            ("fast_dllm_dual", "fast_dllm:cache=dual,threshold=0.9"),
            ("wino", "wino"),
            ("wino_no_narrow_out", "wino:threshold_back=0.0"),
            ("fast_dllm_nocache_t0.6", "fast_dllm:cache=none,threshold=0.6"),
            ("wino_no_blocks", "wino:block_length=96"),
            ("prophet", "prophet"),
            ("one_shot_fill", "llada:block_length=96,steps=1"),
            ("one_shot_fill_blocks32", "llada:steps=3"),
        ],
    },
    # Prophet on synth_math: -23.8 points on tiny_dream, -10.5 on tiny_llada, at 1.7x the NFE (GPU
    # report). Its exit thresholds are LLaDA-8B logit-gap units: do they fire too early on these
    # models' logit scales? (--model dllm_eval/assets/tiny_dream for Dream.)
    "prophet_math": {
        "task": "synth_math",
        "reference": "fast_dllm_dual",
        "rungs": [
            ("fast_dllm_dual", "fast_dllm:cache=dual,threshold=0.9"),
            ("prophet", "prophet"),
            # no early exit: must equal LLaDA's sampler (its base) token for token
            ("prophet_never_exits", "prophet:early_threshold=1e9,mid_threshold=1e9,late_threshold=1e9"),
            ("llada_1tok", "llada:softmax_dtype=model"),  # prophet's confidence softmax dtype
            ("prophet_thresholds_x2", "prophet:early_threshold=15,mid_threshold=10,late_threshold=5"),
            ("prophet_thresholds_x4", "prophet:early_threshold=30,mid_threshold=20,late_threshold=10"),
        ],
    },
    # hierarchy (+20 at 5.1x the NFE) and KLASS (+15 at 1.8x) on synth_code: their selection rules,
    # decoding without a cache, or just more forwards? Plain quota schedules with their budgets.
    "peers_budget_code": {
        "task": "synth_code",
        "reference": "fast_dllm_dual",
        "rungs": [
            ("fast_dllm_dual", "fast_dllm:cache=dual,threshold=0.9"),
            ("fast_dllm_nocache", "fast_dllm:cache=none,threshold=0.9"),
            ("hierarchy", "hierarchy"),
            ("quota_39_nocache", "fast_dllm:cache=none,threshold=none,steps=39"),
            ("klass", "klass"),
            ("klass_confidence_only", "klass:kl_threshold=1e9"),
            ("quota_15_nocache", "fast_dllm:cache=none,threshold=none,steps=15"),
        ],
    },
    # drs spends 3.45x the baseline's NFE; does its gain come from *where* it spends them, or
    # just from committing fewer tokens per step? Same-budget controls answer that.
    "drs": {
        "task": "synth_code",
        "reference": "fast_dllm_dual",
        "rungs": [
            ("fast_dllm_dual", "fast_dllm:cache=dual,threshold=0.9"),
            ("drs", "drs"),
            ("drs_uniform", "drs_uniform"),
            ("drs_coarse", "drs_coarse"),
            ("fast_dllm_quota_27", "fast_dllm:cache=dual,threshold=none,steps=27"),
            ("fast_dllm_quota_27_nocache", "fast_dllm:cache=none,threshold=none,steps=27"),
            ("llada_27", "llada:steps=27"),
            ("llada_96", "llada"),
        ],
    },
}


def _digest(tokens: list[int]) -> str:
    return hashlib.sha1(json.dumps(tokens).encode()).hexdigest()[:16]


def run_probe(front: Any, probe: str, limit: int | None, batch_size: int, score: bool = True) -> dict[str, Any]:
    """Decode (and score) the probe's documents with every rung; per-document tokens, NFE, verdict.
    `score=False` leaves `correct` empty for `--rescore` where the sandbox runs."""
    from dllm_eval.synth.evaluate import TASKS, decode_docs, score_docs

    spec = PROBES[probe]
    module = TASKS[spec["task"]]
    docs = module.test_docs()[:limit]
    rungs: dict[str, Any] = {}
    for label, config in spec["rungs"]:
        started = time.perf_counter()
        run = decode_docs(front, spec["task"], docs, config, batch_size)
        ok = score_docs(spec["task"], docs, run["texts"]) if score else None
        rungs[label] = {"config": config, "correct": None if ok is None else [bool(x) for x in ok], "nfe": run["nfe"],
                        "digest": [_digest(t) for t in run["tokens"]], "responses": run["texts"],
                        "wall_s": round(time.perf_counter() - started, 1)}
        acc = "unscored" if ok is None else f"{sum(ok) / len(ok):.3f}"
        print(f"  {label:28s} acc={acc} nfe={sum(run['nfe']) / len(docs):.2f} "
              f"({rungs[label]['wall_s']} s)", file=sys.stderr, flush=True)
    return {"probe": probe, "task": spec["task"], "reference": spec["reference"], "n": len(docs),
            "tiers": [int(d["tier"]) for d in docs], "prompts": [module.doc_to_text(d) for d in docs],
            "rungs": rungs}


def summarize(result: dict[str, Any], show: int = 0) -> str:
    """Markdown: each rung against the reference (paired), plus `show` discordant documents."""
    ref_label = result["reference"]
    ref = result["rungs"][ref_label]
    n = result["n"]
    lines = [f"### probe `{result['probe']}` on {result['task']} (n = {n}, reference `{ref_label}`)", "",
             "| rung | config | acc % | Δ pts vs ref | b/c | identical tokens % | NFE/doc |",
             "|---|---|---|---|---|---|---|"]
    for label, rung in result["rungs"].items():
        acc = 100 * sum(rung["correct"]) / n
        b = sum(x and not y for x, y in zip(rung["correct"], ref["correct"]))
        c = sum(y and not x for x, y in zip(rung["correct"], ref["correct"]))
        same = 100 * sum(a == r for a, r in zip(rung["digest"], ref["digest"])) / n
        lines.append(f"| `{label}` | `{rung['config']}` | {acc:.1f} | {acc - 100 * sum(ref['correct']) / n:+.1f} | "
                     f"{b}/{c} | {same:.1f} | {sum(rung['nfe']) / n:.2f} |")
    if show:
        lines.append("")
        for label, rung in result["rungs"].items():
            if label == ref_label:
                continue
            wins = [i for i in range(n) if rung["correct"][i] and not ref["correct"][i]][:show]
            for i in wins:
                lines += ["", f"**doc {i} (tier {result['tiers'][i]}): `{label}` passes, `{ref_label}` fails**",
                          "```", result["prompts"][i].rstrip(), "--- " + ref_label, ref["responses"][i].rstrip(),
                          "--- " + label, rung["responses"][i].rstrip(), "```"]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probe", choices=sorted(PROBES), action="append")
    parser.add_argument("--summarize", nargs="+", metavar="JSON")
    parser.add_argument("--rescore", nargs="+", metavar="JSON", help="score saved unscored probes in place")
    parser.add_argument("--no-score", action="store_true", help="decode only (score later with --rescore)")
    parser.add_argument("--show", type=int, default=0, help="discordant documents to print per rung")
    parser.add_argument("--model", default=str(Path(__file__).resolve().parents[1] / "assets" / "tiny_llada"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", default=None, help="JSON file (one probe) or folder (several)")
    args = parser.parse_args(argv)
    if args.rescore:
        from dllm_eval.synth.evaluate import TASKS, score_docs

        for path in args.rescore:
            result = json.loads(Path(path).read_text())
            docs = TASKS[result["task"]].test_docs()[:result["n"]]
            for rung in result["rungs"].values():
                if rung["correct"] is None:
                    rung["correct"] = [bool(x) for x in score_docs(result["task"], docs, rung["responses"])]
            Path(path).write_text(json.dumps(result) + "\n")
            print(summarize(result, args.show))
        return 0
    if args.summarize:
        for path in args.summarize:
            print(summarize(json.loads(Path(path).read_text()), args.show))
        return 0
    if not args.probe:
        parser.error("give --probe NAME (repeatable) or --summarize JSON")

    import torch

    from dllm_eval.frontend import load_front_end

    front = load_front_end(args.model, device=args.device, dtype=torch.float32, chat=False)
    for probe in args.probe:
        print(f"probe {probe}", file=sys.stderr)
        result = run_probe(front, probe, args.limit, args.batch_size, score=not args.no_score)
        if not args.no_score:
            print(summarize(result))
        if args.out:
            out = Path(args.out)
            path = out if out.suffix == ".json" else out / f"{probe}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
