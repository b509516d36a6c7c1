"""`drs`, `drs_uniform`: Dynamic Refinement Scheduling (seed 000), as proposed. (`drs_v2`, the
seed's own revision, is its own file.)

**`drs`** is the seed's method as proposed:

1. *Coarse pass.* Each block (fixed `block_length`, left to right) is decoded in exactly `t_base`
   steps (LLaDA's linear quota, `num_transfer_tokens(masks, t_base)`) over Fast-dLLM's dual cache:
   step 0 is a full forward that refills the cache, later steps run only the block with
   ``attend="cache", write=True``. `DecodeState.commit_conf` records each token's confidence.
   `T_used` = the forwards a row took here (``num_blocks * t_base`` unless blocks are shorter
   than `t_base` or skipped by `stop_at_eos`).
2. *Ambiguity.* ambiguity(block) = (tokens committed with confidence < `tau`) / `block_length`.
3. *Refinement.* `T_refine` = `t_total - T_used` (or `refine_budget`, given directly) forwards are
   split among the blocks: ``allocation="proportional"`` in proportion to ambiguity,
   ``"uniform"`` (the control, variant `drs_uniform`) equally among blocks with ambiguity > 0.
   Shares are whole steps by the largest-remainder rule (`largest_remainder`): floors first,
   leftover steps to the largest remainders, ties to the earlier block, so shares always sum to
   the budget and a block with zero weight never gets a step.

Choices the seed leaves open, and why:

- *How a block is refined.* Its ambiguous tokens are remasked and re-predicted with the same
  block-cache decoding as the coarse pass: the block's first refinement step is a full forward
  (refreshing the whole cache from the finished draft, so re-prediction sees every later block,
  which the coarse pass could not), later steps are block-window dual-cache steps. With `n` steps
  left and `m` masks, a step commits the ``ceil(m / min(n, m))`` most confident masks, so the
  remasked tokens are re-predicted one per step when the budget allows, and a block is always
  complete when its steps run out. If steps remain after every remasked token is back, a new
  *round* remasks the tokens still below `tau` (they were re-predicted from new context, so this
  is not a no-op) until the block's steps are spent or nothing is ambiguous; steps a block does
  not use are not moved to another block (the allocation is the experiment's variable).
- *T_total default.* Neither `t_total` nor `refine_budget` given: the budget is half the coarse
  pass (``t_base * num_blocks // 2``), e.g. 32 refinement forwards for 8 blocks at `t_base=8`.
- *tau default 0.9*: Fast-dLLM's commit threshold, i.e. "ambiguous" means "Fast-dLLM would not
  have committed it on confidence alone".
- *NFE:* every forward counts, refinement's full forwards included (`T_total` bounds the row's NFE).
- *[MASK] is never proposed* (``propose(mask_id=...)``, as `fast_dllm`): committing a predicted
  mask is no progress, and a threshold loop whose forced token is [MASK] would never end.

Why proportional and uniform can give identical outputs (the seed's puzzle): they allocate
differently only when ambiguities differ *and* the extra steps change a re-prediction. The trace
makes this checkable: an ``allocation`` event per row (ambiguity, ambiguous counts, budget, steps
per block) and a ``refine`` event per refined block (steps allocated and spent, rounds, tokens
remasked, tokens whose value changed).

Cache hit rate (`cache_hit_rate` in each row's metrics): over the row's forwards, the fraction
of attended KV positions (real, non-padding canvas positions) served from the cache rather than
recomputed; a full forward serves none, a block-window dual-cache step serves all but the block.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dllm_eval.errors import UserError
from dllm_eval.schedulers.base import (
    CommonParams,
    Proposal,
    num_transfer_tokens,
    select_quota,
)
from dllm_eval.schedulers.blocks import BlockRunner, row_index
from dllm_eval.schedulers.registry import Scheduler, register, register_variant

ALLOCATIONS = ("proportional", "uniform")


def largest_remainder(budget: int, weights: Sequence[int]) -> list[int]:
    """Split `budget` whole steps in proportion to integer `weights` (Hamilton's method).

    Exact integer arithmetic; the shares sum to `budget` (0 if every weight is 0), zero-weight
    entries get nothing, and equal remainders go to the earlier entry.
    """
    if any(w < 0 for w in weights):
        raise ValueError("weights must be >= 0")
    total = sum(weights)
    if budget <= 0 or total == 0:
        return [0] * len(weights)
    shares = [budget * w // total for w in weights]
    remainders = [budget * w % total for w in weights]
    leftover = budget - sum(shares)
    for i in sorted(range(len(weights)), key=lambda i: (-remainders[i], i))[:leftover]:
        shares[i] += 1
    return shares


@dataclass
class DRSParams(CommonParams):
    t_base: int = 8
    t_total: int | None = None
    refine_budget: int | None = None
    tau: float = 0.9
    allocation: str = "proportional"

    def validate(self) -> None:
        super().validate()
        if self.t_base < 1:
            raise UserError(f"t_base must be >= 1, got {self.t_base}")
        if self.t_total is not None and self.refine_budget is not None:
            raise UserError("give t_total or refine_budget, not both (refine_budget = t_total - T_used)")
        if self.t_total is not None and self.t_total < self.t_base * self.num_blocks:
            raise UserError(f"t_total={self.t_total} is below the coarse pass's t_base * num_blocks = "
                            f"{self.t_base * self.num_blocks}")
        if self.refine_budget is not None and self.refine_budget < 0:
            raise UserError(f"refine_budget must be >= 0, got {self.refine_budget}")
        if not 0.0 < self.tau <= 1.0:
            raise UserError(f"tau must be in (0, 1], got {self.tau}")
        if self.allocation not in ALLOCATIONS:
            raise UserError(f"allocation must be one of {', '.join(ALLOCATIONS)}, got {self.allocation!r}")

    def budget(self, used: int) -> int:
        """T_refine for a row whose coarse pass took `used` forwards."""
        if self.refine_budget is not None:
            return self.refine_budget
        if self.t_total is not None:
            return max(0, self.t_total - used)
        return self.t_base * self.num_blocks // 2


@register("drs", "Dynamic Refinement Scheduling: T_base-step coarse pass, then ambiguity-proportional refinement")
class DRS(Scheduler):
    Params = DRSParams

    def decode(self, runner: BlockRunner) -> None:
        p, state = self.params, runner.state
        blocks = list(state.blocks(p.block_length))

        # Phase 1: coarse pass, t_base quota steps per block over the dual cache.
        for block, start, end in blocks:
            if p.stop_at_eos and not bool(state.incomplete(start, end).any()):
                continue
            quota = num_transfer_tokens(state.masked(start, end), p.t_base)
            runner.run(block, start, end, lambda proposal, _masked, step, q=quota: select_quota(proposal.confidence,
                                                                                              q[:, step]))
        used = state.trace.row_nfe.clone()

        # Ambiguity and allocation, per row.
        counts = torch.stack([state.ambiguous(s, e, p.tau).sum(dim=1) for _, s, e in blocks], dim=1).cpu()
        alloc = torch.zeros_like(counts)
        for r in range(state.batch):
            c = counts[r].tolist()
            weights = c if p.allocation == "proportional" else [int(x > 0) for x in c]
            budget = p.budget(int(used[r]))
            alloc[r] = torch.tensor(largest_remainder(budget, weights))
            state.trace.event(r, "allocation", rule=p.allocation, budget=budget, t_used=int(used[r]),
                              ambiguity=[x / p.block_length for x in c], ambiguous_tokens=c,
                              steps=alloc[r].tolist())

        # Phase 2: refine each block with its rows' allocated steps.
        spent_total = torch.zeros(state.batch, dtype=torch.long)
        for block, start, end in blocks:
            spent_total += self._refine_block(runner, block, start, end, alloc[:, block].to(state.canvas.device))
        for r in range(state.batch):
            state.trace.metrics[r].update(
                t_used=int(used[r]), t_refine=int(alloc[r].sum()), t_refine_spent=int(spent_total[r]),
                ambiguity=[x / p.block_length for x in counts[r].tolist()], allocation=alloc[r].tolist(),
                avg_block_size=float(p.block_length), cache_hit_rate=runner.stats.hit_rate(r),
                adaptations=int((alloc[r] > 0).sum()), nfe=int(state.trace.row_nfe[r]))

    def _refine_block(self, runner: BlockRunner, block: int, start: int, end: int, steps: Tensor) -> Tensor:
        """Remask and re-predict the block's ambiguous tokens in each row's `steps`; returns steps spent.

        With `n` steps left and `m` masks a step commits the ``ceil(m / min(n, m))`` most confident
        masks; a finished round with steps left remasks what is still ambiguous (a new round)."""
        state, tau = runner.state, self.params.tau
        left = steps.clone()
        spent = torch.zeros_like(left)
        if not bool((left > 0).any()):
            return spent.cpu()
        before = state.canvas[:, start:end].clone()
        first_amb = state.ambiguous(start, end, tau) & (left > 0)[:, None]
        state.remask_window(start, first_amb)
        rounds = (left > 0).long()

        def eligible(step: int) -> Tensor:
            if step:  # a finished round with steps left: remask what is still ambiguous
                done = ~state.masked(start, end).any(dim=1)
                again = state.ambiguous(start, end, tau) & (done & (left > 0))[:, None]
                if bool(again.any()):
                    state.remask_window(start, again)
                    rounds.add_(again.any(dim=1).long())
            return left > 0

        def select(proposal: Proposal, masked: Tensor, _step: int) -> Tensor:
            n_masked = masked.sum(dim=1)
            active = masked.any(dim=1) & (left > 0)
            per_step = torch.where(active, -(-n_masked // torch.minimum(left, n_masked).clamp(min=1)), 0)
            return select_quota(proposal.confidence, per_step)

        def after_step(active: Tensor) -> None:
            left.sub_(active.long())
            spent.add_(active.long())

        runner.run(block, start, end, select, eligible=eligible, after_step=after_step)
        changed = (state.canvas[:, start:end] != before).sum(dim=1)
        for r in row_index(steps > 0).tolist():
            state.trace.event(r, "refine", block=block, steps=int(steps[r]), spent=int(spent[r]),
                              rounds=int(rounds[r]), remasked=int(first_amb[r].sum()), changed=int(changed[r]))
        return spent.cpu()


register_variant("drs_uniform", DRS, "DRS control: refinement budget split equally among ambiguous blocks",
                 allocation="uniform")
register_variant("drs_coarse", DRS, "DRS ablation: the coarse pass alone (t_base quota steps per block, no refinement)",
                 refine_budget=0)
