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

Batching: rows adapt independently. Each row runs its own program (`BlockRunner.run_rows`): its
coarse pass, plan and refinements, as alone; every step is one model call for all rows still
running, with per-row windows where they differ, so every row sees exactly what it would see
decoded alone, its NFE counts only its own steps, and the batch takes as many calls as its
slowest row.

"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dllm_eval.errors import UserError
from dllm_eval.schedulers.base import CommonParams, DecodeState
from dllm_eval.schedulers.blocks import BlockRunner, Pick, RowProgram, RowRequest, block_step
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
        state = runner.state
        results: list[dict] = [{} for _ in range(state.batch)]
        runner.run_rows([self._row(runner, r, results[r]) for r in range(state.batch)])
        for r, res in enumerate(results):
            state.trace.metrics[r].update(
                t_used=res["used"], t_refine=self.params.budget, t_refine_spent=res["spent"], refine_order=res["order"],
                ambiguity=[x / self.params.block_length for x in res["counts"]],
                avg_block_size=float(self.params.block_length), cache_hit_rate=runner.stats.hit_rate(r),
                nfe=int(state.trace.row_nfe[r]),
                adaptations=sum(1 for e in state.trace.events[r] if e["type"] == "refine"))

    def _row(self, runner: BlockRunner, r: int, res: dict) -> RowProgram:
        """Row r's whole decode, as it runs alone: the coarse pass, its plan, its refinements."""
        p, state = self.params, runner.state
        blocks = list(state.blocks(p.block_length))

        # Phase 1: Fast-dLLM threshold decoding on the dual cache (optionally capped at t_base).
        for block, start, end in blocks:
            left = int(state.masked(start, end)[r].sum())
            if p.stop_at_eos and not left:
                continue
            step = 0
            while left and (p.t_base is None or step < p.t_base):
                left = yield RowRequest(block_step(step, start, end), block, Pick(threshold=p.threshold))
                step += 1
        used = int(state.trace.row_nfe[r])

        # Plan: incomplete blocks (most masks first), then ambiguous ones (most ambiguous first).
        counts = [int(state.ambiguous(s, e, p.tau)[r].sum()) for _, s, e in blocks]
        masks = [int(state.masked(s, e)[r].sum()) for _, s, e in blocks]
        order = [b for b in range(len(blocks)) if masks[b] > 0 or counts[b] > 0]
        order.sort(key=lambda b: (masks[b] == 0, -masks[b], -counts[b], b))
        state.trace.event(r, "refine_plan", budget=p.budget, t_used=used, order=order,
                          ambiguity=[x / p.block_length for x in counts], ambiguous_tokens=counts, incomplete=masks)

        # Phase 2: one refinement per candidate, in order, from the row's pool of forwards.
        budget = {"left": p.budget, "spent": 0}
        for rank, b in enumerate(order):
            if budget["left"] > 0 or masks[b] > 0:
                yield from self._refine(state, r, b, blocks[b][1], blocks[b][2], rank, budget, masks[b])
        res.update(used=used, counts=counts, order=order, spent=budget["spent"])

    def _refine(self, state: DecodeState, r: int, block: int, start: int, end: int, rank: int, budget: dict,
                was_incomplete: int) -> RowProgram:
        """Refine one block: remask its ambiguous tokens (with budget left), then threshold
        decoding until complete; the step that spends the row's last forward (or overruns it)
        commits every mask it has left."""
        p = self.params
        before = state.canvas[r, start:end].clone()
        row = (torch.arange(state.batch, device=before.device) == r)[:, None]
        amb = state.ambiguous(start, end, p.tau) & row & (budget["left"] > 0)
        state.remask_window(start, amb)
        left, step = int(state.masked(start, end)[r].sum()), 0
        while left:
            last = budget["left"] <= 1
            left = yield RowRequest(block_step(step, start, end), block, Pick(threshold=p.threshold, everything=last))
            step += 1
            budget["spent"] += 1
            if budget["left"] <= 0:
                state.trace.event(r, "budget_overrun", block=block)
            budget["left"] -= 1
        state.trace.event(r, "refine", block=block, rank=rank, spent=step, remasked=int(amb.sum()),
                          was_incomplete=was_incomplete, changed=int((state.canvas[r, start:end] != before).sum()),
                          budget_left=max(0, budget["left"]))
