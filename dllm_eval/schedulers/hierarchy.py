"""`hierarchy`: dInfer's hierarchical decoding (Ma et al., dInfer, arXiv 2510.08666;
inclusionAI/dInfer `python/dinfer/decoding/parallel_strategy.py::HierarchyDecoder`).

The rule. Each step, the masked positions of the current block fall into maximal contiguous
runs. In every run the most confident proposal (all of them when several tie at the run's
maximum) is committed if its confidence is > `low_threshold`; every proposal with confidence
> `threshold` is committed too; and the block's single most confident proposal (the first one
on a tie, as `argmax`) always is. So a fresh all-masked block (one run) commits its top-1 and
whatever clears `threshold`, and each commit splits a run, letting separated regions advance in
parallel while neighbours wait. No re-masking. NFE = forwards until the block is complete.

Defaults are the class defaults (`low_threshold` 0.4, `threshold` None: no high rule); the
authors give no LLaDA-GSM8K setting. Their benchmark presets (`benchmarks/benchmark_dataset.py`,
`parallel_decoding="hierarchy_faster"`) are registered as variants: `hierarchy_80_50`
(threshold 0.8, low 0.5: `--config 5` without a cache, `--config 6` on the dual cache with
dInfer's vicinity refresh) and `hierarchy_90_70` (0.9 / 0.7: `--config 14`, the same cache).
`evaluations/eval_guide.md` shows 0.8 / 0.5 and, for its hierarchy example, 0.92 / 0.62.

Cache modes: all three (`cache`, default "none" as the plain decoder loop). The rule reads only
the current block's confidences at one step, which every mode produces.

Deliberate differences from dInfer's runner (not from the rule): blocks start at the prompt's
end (dInfer's benchmarks align them to absolute multiples of the block length); no loop
unrolling (dInfer may run up to `maximum_unroll - 1` forwards past a block's completion to save
host syncs, committing nothing) and, with a cache, no extra cached forward after a block's
refresh step when the refresh already completed it; `stop_at_eos` is the harness's rule, not
dInfer's `early_stop`; confidences are float64 by default (`softmax_dtype="model"` is dInfer's
softmax in the logits' dtype). The authors assert batch 1; here rows are independent at any batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dllm_eval.errors import UserError
from dllm_eval.schedulers.base import NEG_INF, CommonParams, Proposal
from dllm_eval.schedulers.blocks import BlockRunner
from dllm_eval.schedulers.registry import Scheduler, register, register_variant


@dataclass
class HierarchyParams(CommonParams):
    low_threshold: float | None = 0.4  # tau_low: a run's best token must exceed it (None: always)
    threshold: float | None = None  # tau_high: any token above it is committed (None: off)
    cache: str = "none"

    def validate(self) -> None:
        super().validate()
        for name in ("low_threshold", "threshold"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise UserError(f"{name} must be in [0, 1] or None, got {value}")


def run_best(confidence: Tensor, masked: Tensor) -> Tensor:
    """[B, W] the positions holding their masked run's maximum confidence (ties: all of them)."""
    starts = masked & ~torch.nn.functional.pad(masked[:, :-1], (1, 0))
    run_id = torch.where(masked, starts.long().cumsum(dim=1), 0)  # 1, 2, ... per run; 0 off runs
    best = torch.full(confidence.shape, NEG_INF, dtype=confidence.dtype, device=confidence.device)
    best = best.scatter_reduce(1, run_id, confidence, reduce="amax", include_self=True)
    return masked & (confidence == best.gather(1, run_id))


@register("hierarchy", "dInfer hierarchical decoding: each masked run's best token above tau_low, "
                       "tokens above tau_high, always the block's top-1")
class Hierarchy(Scheduler):
    Params = HierarchyParams

    def decode(self, run: BlockRunner) -> None:
        for block, start, end in run.state.blocks(self.params.block_length):
            run.run(block, start, end, self.select)

    def select(self, proposal: Proposal, masked: Tensor, step: int) -> Tensor:
        p, conf = self.params, proposal.confidence
        keep = run_best(conf, masked)
        if p.low_threshold is not None:
            keep &= conf > p.low_threshold
        if p.threshold is not None:
            keep |= masked & (conf > p.threshold)
        top1 = torch.zeros_like(keep).scatter_(1, conf.argmax(dim=1, keepdim=True), True)
        return keep | (top1 & masked)


register_variant("hierarchy_80_50", Hierarchy, "dInfer hierarchical decoding, preset tau_high 0.8 / tau_low 0.5",
                 threshold=0.8, low_threshold=0.5)
register_variant("hierarchy_90_70", Hierarchy, "dInfer hierarchical decoding, preset tau_high 0.9 / tau_low 0.7",
                 threshold=0.9, low_threshold=0.7)
