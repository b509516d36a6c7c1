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

from dllm_eval.errors import UserError
from dllm_eval.schedulers.base import CommonParams, DecodeState, num_transfer_tokens
from dllm_eval.schedulers.blocks import BlockRunner, Pick, RowProgram, RowRequest, block_step
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
        state = runner.state
        results: list[dict] = [{} for _ in range(state.batch)]
        runner.run_rows([self._row(runner, r, results[r]) for r in range(state.batch)])
        for r, res in enumerate(results):
            state.trace.metrics[r].update(
                t_used=res["used"], t_refine=sum(res["alloc"]), t_refine_spent=res["spent"],
                ambiguity=[x / self.params.block_length for x in res["counts"]], allocation=res["alloc"],
                avg_block_size=float(self.params.block_length), cache_hit_rate=runner.stats.hit_rate(r),
                adaptations=sum(1 for a in res["alloc"] if a > 0), nfe=int(state.trace.row_nfe[r]))

    def _row(self, runner: BlockRunner, r: int, res: dict) -> RowProgram:
        """Row r's whole decode, as it runs alone: the coarse pass, its allocation, its refinements."""
        p, state = self.params, runner.state
        blocks = list(state.blocks(p.block_length))

        # Phase 1: coarse pass, t_base quota steps per block over the dual cache.
        for block, start, end in blocks:
            left = int(state.masked(start, end)[r].sum())
            if p.stop_at_eos and not left:
                continue
            quota = num_transfer_tokens(state.masked(start, end)[r:r + 1], p.t_base)[0].tolist()
            step = 0
            while left:
                left = yield RowRequest(block_step(step, start, end), block, Pick(quota=quota[step]))
                step += 1
        used = int(state.trace.row_nfe[r])

        # Ambiguity and allocation.
        counts = [int(state.ambiguous(s, e, p.tau)[r].sum()) for _, s, e in blocks]
        weights = counts if p.allocation == "proportional" else [int(x > 0) for x in counts]
        budget = p.budget(used)
        alloc = largest_remainder(budget, weights)
        state.trace.event(r, "allocation", rule=p.allocation, budget=budget, t_used=used,
                          ambiguity=[x / p.block_length for x in counts], ambiguous_tokens=counts, steps=alloc)

        # Phase 2: refine each block with its allocated steps.
        spent = 0
        for block, start, end in blocks:
            spent += yield from self._refine_block(state, r, block, start, end, alloc[block])
        res.update(used=used, counts=counts, alloc=alloc, spent=spent)

    def _refine_block(self, state: DecodeState, r: int, block: int, start: int, end: int, steps: int) -> RowProgram:
        """Remask and re-predict the block's ambiguous tokens in `steps` steps; returns the steps spent.

        With `n` steps left and `m` masks a step commits the ``ceil(m / min(n, m))`` most confident
        masks; a finished round with steps left remasks what is still ambiguous (a new round)."""
        tau = self.params.tau
        if steps <= 0:
            return 0
        before = state.canvas[r, start:end].clone()
        first_amb = state.ambiguous(start, end, tau) & (torch.arange(state.batch, device=before.device) == r)[:, None]
        state.remask_window(start, first_amb)
        left, spent, rounds, step = steps, 0, 1, 0
        masks = int(state.masked(start, end)[r].sum())
        while True:
            if step and not masks and left > 0:  # a finished round with steps left: remask the ambiguous
                again = state.ambiguous(start, end, tau) & (torch.arange(state.batch, device=before.device) == r)[:, None]
                if bool(again.any()):
                    state.remask_window(start, again)
                    rounds += 1
                    masks = int(again.sum())
            if not masks or left <= 0:
                break
            per_step = -(-masks // min(left, masks))
            masks = yield RowRequest(block_step(step, start, end), block, Pick(quota=per_step))
            left, spent, step = left - 1, spent + 1, step + 1
        changed = int((state.canvas[r, start:end] != before).sum())
        state.trace.event(r, "refine", block=block, steps=steps, spent=spent, rounds=rounds,
                          remasked=int(first_amb.sum()), changed=changed)
        return spent


register_variant("drs_uniform", DRS, "DRS control: refinement budget split equally among ambiguous blocks",
                 allocation="uniform")
register_variant("drs_coarse", DRS, "DRS ablation: the coarse pass alone (t_base quota steps per block, no refinement)",
                 refine_budget=0)
