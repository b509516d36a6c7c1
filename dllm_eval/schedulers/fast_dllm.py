"""`fast_dllm`: Fast-dLLM v1 for LLaDA (NVlabs/Fast-dLLM `llada/generate.py`), reference section 2.

Per block, left to right:

- `cache="none"`: every step is a full-canvas forward (`generate`);
- `cache="prefix"`: step 0 uses a full forward that also fills the KV cache; later steps run the
  block plus everything after it, attending to the cached prefix (`generate_with_prefix_cache`);
- `cache="dual"`: as prefix, but later steps run only the block and attend to the whole cached
  canvas, refreshing the block's KV in place (`generate_with_dual_cache`). The prefix and the
  masked suffix stay as that block's first full forward computed them.

Which proposals are committed each step:

- quota (`threshold=None, factor=None`): LLaDA's linear schedule over `steps / num_blocks`;
- `threshold=tau`: every masked token with confidence >= tau, plus the most confident one;
- `factor=f`: the largest n with c(n) >= 1 - f/(n+1), with the reference's off-by-one quirk
  (see `select_factor`); `factor` overrides `threshold`, as in the reference.

Every block iterates until it is complete (the June-2025 semantics; the later dual-cache loop
that stops after `steps_per_block` forwards and can leave masks is deliberately not copied).

NFE convention (`block_check`):
- "june" (default, for parity with the pinned June-2025 code): in the cached modes, the
  "block complete?" check sits at the bottom of the loop, so when the full forward's step 0
  already completes a block, one more forward runs (and commits nothing);
- "top": the check sits at the top (Fast-dLLM from commit cb3a757): same tokens, up to one
  forward fewer per block.
The confidence softmax is float64 by default, as in Fast-dLLM.

On Dream (`rules="auto"` picks by model family; `rules="dream"|"llada"` forces one), Fast-dLLM's
Dream path (`dream/model/generation_utils_block.py`) differs in three ways, kept for parity:
each block's full forward commits the block's *first slot* (its argmax) whatever its
confidence; confidences are softmaxed in the model's dtype; and the cached calls apply Dream's
one-position shift inside the window they feed (`align="fastdllm"`), so the window's first slot
scores itself -- harmless there, because that slot was committed by the full forward.
`align="exact"` feeds truly aligned logits instead. That path has threshold decoding only
(its other `alg`s become an entropy sampler: use the `dream` scheduler for those).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch

from dllm_eval.errors import UserError
from dllm_eval.schedulers.base import (
    CommonParams,
    Proposal,
    num_transfer_tokens,
    select_factor,
    select_quota,
    select_threshold,
)
from dllm_eval.schedulers.blocks import BlockRunner
from dllm_eval.schedulers.registry import Scheduler, register, register_variant


@dataclass
class FastDLLMParams(CommonParams):
    steps: int | None = None  # default gen_length; only sets the quota schedule (and must divide into blocks)
    cache: str = "dual"
    threshold: float | None = 0.9
    factor: float | None = None
    block_check: str = "june"
    rules: str = "auto"  # auto | llada | dream (Fast-dLLM's LLaDA or Dream code path)
    align: str = "auto"  # Dream only: fastdllm (Fast-dLLM's in-window shift) | exact | auto (fastdllm on the Dream path)

    def validate(self) -> None:
        super().validate()
        if self.rules not in ("auto", "llada", "dream"):
            raise UserError(f"rules must be auto, llada or dream, got {self.rules!r}")
        if self.align not in ("auto", "fastdllm", "exact"):
            raise UserError(f"align must be auto, fastdllm or exact, got {self.align!r}")
        steps = self.total_steps
        if steps <= 0 or steps % self.num_blocks:
            raise UserError(f"steps={steps} must be a positive multiple of the number of blocks ({self.num_blocks})")
        if self.threshold is not None and not 0.0 <= self.threshold <= 1.0:
            raise UserError(f"threshold must be in [0, 1] (or None for the quota schedule), got {self.threshold}")
        if self.factor is not None and self.factor <= 0:
            raise UserError(f"factor must be > 0, got {self.factor}")
        if self.block_check not in ("june", "top"):
            raise UserError(f"block_check must be 'june' or 'top', got {self.block_check!r}")

    @property
    def total_steps(self) -> int:
        return self.gen_length if self.steps is None else self.steps

    @property
    def rule(self) -> str:
        return "factor" if self.factor is not None else "threshold" if self.threshold is not None else "quota"


@register("fast_dllm", "Fast-dLLM v1: block KV cache (none/prefix/dual) + threshold/factor parallel decoding")
class FastDLLM(Scheduler):
    Params = FastDLLMParams

    def decode(self, runner: BlockRunner) -> None:
        p, state = self.params, runner.state
        dream = (runner.family == "dream") if p.rules == "auto" else p.rules == "dream"
        if dream:
            if p.rule != "threshold":
                raise UserError("Fast-dLLM's Dream path decodes by threshold only; set threshold=, or use "
                                "scheduler=dream for Dream's own samplers")
            runner.propose_kwargs["softmax_dtype"] = "model"
        if runner.family == "dream":  # auto: Fast-dLLM's in-window shift on its own path only
            runner.model_kwargs["align"] = "fastdllm" if p.align == "fastdllm" or (dream and p.align == "auto") else "exact"
        steps_per_block = p.total_steps // p.num_blocks
        for block, start, end in state.blocks(p.block_length):
            if p.stop_at_eos and not bool(state.incomplete(start, end).any()):
                continue  # already all EOS: nothing to decode
            quota = num_transfer_tokens(state.masked(start, end), steps_per_block)
            runner.run(block, start, end, partial(self.select, quota=quota, first_slot=dream),
                       extra_step=p.block_check == "june")

    def select(self, proposal: Proposal, masked: torch.Tensor, step: int, quota: torch.Tensor,
               first_slot: bool) -> torch.Tensor:
        """Which proposals to commit: the factor rule, the threshold rule, or the quota schedule
        (on Fast-dLLM's Dream path, the full forward commits just the block's first slot)."""
        p = self.params
        if first_slot and step == 0:
            transfer = torch.zeros_like(masked)
            transfer[:, 0] = masked[:, 0]
            return transfer
        if p.rule == "factor":
            return select_factor(proposal.confidence, masked, p.factor)
        if p.rule == "threshold":
            return select_threshold(proposal.confidence, masked, p.threshold)
        # past the schedule (June's extra forward) nothing more is owed
        k = quota[:, step] if step < quota.shape[1] else torch.zeros_like(quota[:, 0])
        return select_quota(proposal.confidence, k)


register_variant("fast_dllm_prefix", FastDLLM, "Fast-dLLM with the prefix cache", cache="prefix")
register_variant("fast_dllm_nocache", FastDLLM, "Fast-dLLM parallel decoding without a cache", cache="none")
