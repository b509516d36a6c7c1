"""`drs_v2`: Dynamic Refinement Scheduling revised by the seed's lessons (seed 000).

**`drs_v2`** follows the seed's lessons:

- *Finish early.* The coarse pass is Fast-dLLM's threshold decoding on the dual cache
  (`threshold`, default 0.9, "block complete?" checked before each step), so it equals
  ``fast_dllm(block_check="top")`` token for token and easy blocks cost one forward. `t_base`,
  if given, caps the forwards per block; a block still incomplete at the cap is left for phase 2.
- *Refine where needed, hardest first.* Candidates are still-incomplete blocks (most masks first),
  then blocks with ambiguity > 0 (most ambiguous first, ties to the earlier block); blocks with no
  ambiguity are never touched. Each candidate gets one refinement: its ambiguous tokens are
  remasked and re-decoded with the same threshold rule (a full forward, then block-window steps)
  from a per-row pool of `refine_budget` forwards (default ``4 * num_blocks``, the budget `drs`
  gets at its defaults); the step that spends the pool's last forward commits every mask left.
  What a row does not need it does not spend.
- *NFE bound.* Without `t_base`, NFE <= NFE(fast_dllm, same threshold) + `refine_budget`. With a
  cap, finishing an incomplete block after the pool is empty costs one forward beyond the budget
  (a ``budget_overrun`` event); this is the only way v2 exceeds its budget.

Batching: rows adapt independently. Where rows need different windows (v2's per-row order) the
call is split into row groups (`base.forward_rows`), each with its own slice of the cache, so every
row sees exactly what it would see decoded alone; per-row NFE counts only the calls a row was in.

"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dllm_eval.errors import UserError
from dllm_eval.schedulers.base import (
    CommonParams,
    Proposal,
    select_threshold,
)
from dllm_eval.schedulers.blocks import BlockRunner
from dllm_eval.schedulers.registry import Scheduler, register


@dataclass
class DRSv2Params(CommonParams):
    threshold: float = 0.9
    tau: float = 0.9
    refine_budget: int | None = None
    t_base: int | None = None

    def validate(self) -> None:
        super().validate()
        if not 0.0 < self.threshold <= 1.0:
            raise UserError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0.0 < self.tau <= 1.0:
            raise UserError(f"tau must be in (0, 1], got {self.tau}")
        if self.refine_budget is not None and self.refine_budget < 0:
            raise UserError(f"refine_budget must be >= 0, got {self.refine_budget}")
        if self.t_base is not None and self.t_base < 1:
            raise UserError(f"t_base (the per-block cap of the coarse pass) must be >= 1, got {self.t_base}")

    @property
    def budget(self) -> int:
        return 4 * self.num_blocks if self.refine_budget is None else self.refine_budget


@register("drs_v2", "DRS v2: threshold coarse pass (finishes early), hardest/incomplete blocks refined first")
class DRSv2(Scheduler):
    Params = DRSv2Params

    def decode(self, runner: BlockRunner) -> None:
        p, state = self.params, runner.state

        def threshold(proposal: Proposal, masked: Tensor, _step: int) -> Tensor:
            return select_threshold(proposal.confidence, masked, p.threshold)

        blocks = list(state.blocks(p.block_length))

        # Phase 1: Fast-dLLM threshold decoding on the dual cache (optionally capped at t_base).
        for block, start, end in blocks:
            if p.stop_at_eos and not bool(state.incomplete(start, end).any()):
                continue
            runner.run(block, start, end, threshold, max_steps=p.t_base)
        used = state.trace.row_nfe.clone()

        # Plan: per row, incomplete blocks (most masks first), then ambiguous ones (most ambiguous first).
        counts = torch.stack([state.ambiguous(s, e, p.tau).sum(dim=1) for _, s, e in blocks], dim=1).cpu()
        masks = torch.stack([state.masked(s, e).sum(dim=1) for _, s, e in blocks], dim=1).cpu()
        order: list[list[int]] = []
        for r in range(state.batch):
            cands = [b for b in range(len(blocks)) if masks[r, b] > 0 or counts[r, b] > 0]
            cands.sort(key=lambda b: (masks[r, b] == 0, -masks[r, b], -counts[r, b], b))
            order.append(cands)
            state.trace.event(r, "refine_plan", budget=p.budget, t_used=int(used[r]), order=cands,
                              ambiguity=[x / p.block_length for x in counts[r].tolist()],
                              ambiguous_tokens=counts[r].tolist(), incomplete=masks[r].tolist())

        # Phase 2: one refinement per candidate, in each row's order, from its pool of forwards.
        left = torch.full((state.batch,), p.budget, dtype=torch.long)
        spent = torch.zeros(state.batch, dtype=torch.long)
        for rank in range(max((len(o) for o in order), default=0)):
            target = {r: order[r][rank] for r in range(state.batch)
                      if rank < len(order[r]) and (left[r] > 0 or masks[r, order[r][rank]] > 0)}
            for b in sorted(set(target.values())):
                self._refine(runner, b, blocks[b][1], blocks[b][2], [r for r, t in target.items() if t == b],
                             rank, left, spent, masks[:, b])
        for r in range(state.batch):
            state.trace.metrics[r].update(
                t_used=int(used[r]), t_refine=p.budget, t_refine_spent=int(spent[r]), refine_order=order[r],
                ambiguity=[x / p.block_length for x in counts[r].tolist()], avg_block_size=float(p.block_length),
                cache_hit_rate=runner.stats.hit_rate(r), nfe=int(state.trace.row_nfe[r]),
                adaptations=sum(1 for e in state.trace.events[r] if e["type"] == "refine"))

    def _refine(self, runner: BlockRunner, block: int, start: int, end: int, members: list[int], rank: int,
                left: Tensor, spent: Tensor, was_incomplete: Tensor) -> None:
        """Refine one block for the rows that target it at this rank: remask their ambiguous tokens
        (rows with budget left), then threshold decoding until complete; the step that spends a
        row's last forward (or overruns it) commits every mask it has left."""
        state, p = runner.state, self.params
        device = state.canvas.device
        rows = torch.zeros(state.batch, dtype=torch.bool, device=device)
        rows[members] = True
        before = state.canvas[:, start:end].clone()
        amb = state.ambiguous(start, end, p.tau) & (rows & (left > 0).to(device))[:, None]
        state.remask_window(start, amb)
        steps_here = torch.zeros(state.batch, dtype=torch.long)

        def select(proposal: Proposal, masked: Tensor, _step: int) -> Tensor:
            keep = select_threshold(proposal.confidence, masked, p.threshold)
            last = (left <= 1).to(device)[:, None]
            return torch.where(last, masked, keep)

        def after_step(active: Tensor) -> None:
            for r in active.nonzero().flatten().tolist():
                steps_here[r] += 1
                spent[r] += 1
                if left[r] <= 0:
                    state.trace.event(r, "budget_overrun", block=block)
                left[r] -= 1

        runner.run(block, start, end, select, eligible=lambda _step: rows, after_step=after_step)
        for r in members:
            state.trace.event(r, "refine", block=block, rank=rank, spent=int(steps_here[r]),
                              remasked=int(amb[r].sum()), was_incomplete=int(was_incomplete[r]),
                              changed=int((state.canvas[r, start:end] != before[r]).sum()),
                              budget_left=max(0, int(left[r])))
