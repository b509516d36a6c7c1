"""`drs`, `drs_uniform`, `drs_v2`: Dynamic Refinement Scheduling (seed 000).

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
from dllm_eval.models.llada import KVCache, LLaDAModelLM
from dllm_eval.schedulers.base import (
    CommonParams,
    DecodeState,
    Proposal,
    Scheduler,
    forward_rows,
    num_transfer_tokens,
    propose,
    register,
    register_variant,
    row_index,
    select_quota,
    select_threshold,
)

ALLOCATIONS = ("proportional", "uniform")


# --------------------------------------------------------------------------------------------
# helpers shared with `adaptive`: whole-step allocation, row-group forwards, cache statistics
# --------------------------------------------------------------------------------------------


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


class CacheStats:
    """Per-row KV accounting for `cache_hit_rate` (see the module docstring for the definition)."""

    def __init__(self, state: DecodeState) -> None:
        mask = state.attention_mask
        self.real = (torch.full((state.batch,), state.length, dtype=torch.long) if mask is None
                     else mask.sum(dim=1).long().cpu())
        self.attended = torch.zeros(state.batch, dtype=torch.long)
        self.served = torch.zeros(state.batch, dtype=torch.long)

    def record(self, rows: Sequence[int] | Tensor, window_size: int | None) -> None:
        """A call for `rows`; `window_size=None` means a full forward (nothing served)."""
        for r in (rows.tolist() if isinstance(rows, Tensor) else rows):
            self.attended[r] += self.real[r]
            if window_size is not None:
                self.served[r] += self.real[r] - window_size

    def hit_rate(self, row: int) -> float:
        return float(self.served[row]) / max(1, int(self.attended[row]))


def widen(state: DecodeState, rows: Tensor, proposal: Proposal) -> Proposal:
    """A proposal computed for `rows` only, as a batch-wide one (other rows: nothing proposed)."""
    shape = (state.batch, proposal.tokens.shape[1])
    tokens = torch.full(shape, state.mask_id, dtype=torch.long, device=proposal.tokens.device)
    conf = torch.full(shape, float("-inf"), dtype=proposal.confidence.dtype, device=proposal.tokens.device)
    tokens[rows] = proposal.tokens
    conf[rows] = proposal.confidence
    return Proposal(tokens, conf)


def fill_eos(state: DecodeState) -> None:
    filled = state.fill_after_eos()
    for row in filled.nonzero().flatten().tolist():
        state.trace.event(row, "eos_fill", positions=int(filled[row]))


# --------------------------------------------------------------------------------------------
# drs / drs_uniform
# --------------------------------------------------------------------------------------------


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


def ambiguous(state: DecodeState, start: int, end: int, tau: float) -> Tensor:
    """[B, end - start] committed tokens whose commit confidence is below tau (NaN: not ambiguous)."""
    lo, hi = start - state.prompt_len, end - state.prompt_len
    return state.commit_conf[:, lo:hi] < tau


def remask_window(state: DecodeState, start: int, positions: Tensor) -> None:
    full = torch.zeros((state.batch, state.gen_length), dtype=torch.bool, device=positions.device)
    lo = start - state.prompt_len
    full[:, lo:lo + positions.shape[1]] = positions
    state.remask(full)


@register("drs", "Dynamic Refinement Scheduling: T_base-step coarse pass, then ambiguity-proportional refinement")
class DRS(Scheduler):
    Params = DRSParams
    params: DRSParams

    def decode(self, model: LLaDAModelLM, state: DecodeState, generator: torch.Generator | None) -> None:
        p = self.params
        cache = KVCache.for_model(model, state.batch, state.length)
        stats = CacheStats(state)
        blocks = list(state.blocks(p.block_length))

        # Phase 1: coarse pass, t_base quota steps per block over the dual cache.
        for block, start, end in blocks:
            if p.stop_at_eos and not bool(state.incomplete(start, end).any()):
                continue
            quota = num_transfer_tokens(state.masked(start, end), p.t_base)
            i = 0
            while bool((active := state.incomplete(start, end)).any()):
                proposal = self._step(model, state, cache, stats, start, end, first=i == 0, active=active,
                                      generator=generator)
                state.commit(start, select_quota(proposal.confidence, quota[:, i]), proposal, block)
                if p.stop_at_eos:
                    fill_eos(state)
                i += 1
        used = state.trace.row_nfe.clone()

        # Ambiguity and allocation, per row.
        counts = torch.stack([ambiguous(state, s, e, p.tau).sum(dim=1) for _, s, e in blocks], dim=1).cpu()
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
            spent_total += self._refine_block(model, state, cache, stats, block, start, end,
                                              alloc[:, block].to(state.canvas.device), generator)
        for r in range(state.batch):
            state.trace.metrics[r].update(
                t_used=int(used[r]), t_refine=int(alloc[r].sum()), t_refine_spent=int(spent_total[r]),
                ambiguity=[x / p.block_length for x in counts[r].tolist()], allocation=alloc[r].tolist(),
                avg_block_size=float(p.block_length), cache_hit_rate=stats.hit_rate(r),
                adaptations=int((alloc[r] > 0).sum()), nfe=int(state.trace.row_nfe[r]))

    def _step(self, model, state: DecodeState, cache: KVCache, stats: CacheStats, start: int, end: int,
              first: bool, active: Tensor, generator) -> Proposal:
        """One block step for the `active` rows: a full forward (`first`) or a dual-cache block step."""
        rows = row_index(active)
        if first:
            logits = forward_rows(model, state, cache, rows, None, "window", slice(start, end))
        else:
            window = torch.arange(start, end, device=state.canvas.device)
            logits = forward_rows(model, state, cache, rows, window, "cache", slice(0, end - start))
        state.trace.forward(active)
        stats.record(rows.cpu(), None if first else end - start)
        return propose(logits, state.masked(start, end), generator=generator, rows=rows,
                       mask_id=state.mask_id, **self.params.propose_kwargs())

    def _refine_block(self, model, state: DecodeState, cache: KVCache, stats: CacheStats, block: int,
                      start: int, end: int, steps: Tensor, generator) -> Tensor:
        """Remask and re-predict the block's ambiguous tokens in each row's `steps`; returns steps spent."""
        p = self.params
        left = steps.clone()
        spent = torch.zeros_like(left)
        if not bool((left > 0).any()):
            return spent.cpu()
        before = state.canvas[:, start:end].clone()
        first_amb = ambiguous(state, start, end, p.tau) & (left > 0)[:, None]
        remask_window(state, start, first_amb)
        rounds = (left > 0).long()
        first = True
        while True:
            masked = state.masked(start, end)
            if not first:  # a finished round with steps left: remask what is still ambiguous
                again = ambiguous(state, start, end, p.tau) & ((~masked.any(dim=1)) & (left > 0))[:, None]
                if bool(again.any()):
                    remask_window(state, start, again)
                    rounds += again.any(dim=1).long()
                    masked = state.masked(start, end)
            active = masked.any(dim=1) & (left > 0)
            if not bool(active.any()):
                break
            proposal = self._step(model, state, cache, stats, start, end, first=first, active=active,
                                  generator=generator)
            first = False
            n_masked = masked.sum(dim=1)
            per_step = torch.where(active, -(-n_masked // torch.minimum(left, n_masked).clamp(min=1)), 0)
            state.commit(start, select_quota(proposal.confidence, per_step), proposal, block)
            left -= active.long()
            spent += active.long()
        changed = (state.canvas[:, start:end] != before).sum(dim=1)
        for r in row_index(steps > 0).tolist():
            state.trace.event(r, "refine", block=block, steps=int(steps[r]), spent=int(spent[r]),
                              rounds=int(rounds[r]), remasked=int(first_amb[r].sum()), changed=int(changed[r]))
        return spent.cpu()


register_variant("drs_uniform", DRS, "DRS control: refinement budget split equally among ambiguous blocks",
                 allocation="uniform")


# --------------------------------------------------------------------------------------------
# drs_v2
# --------------------------------------------------------------------------------------------


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
    params: DRSv2Params

    def decode(self, model: LLaDAModelLM, state: DecodeState, generator: torch.Generator | None) -> None:
        p = self.params
        device = state.canvas.device
        cache = KVCache.for_model(model, state.batch, state.length)
        stats = CacheStats(state)
        blocks = list(state.blocks(p.block_length))

        # Phase 1: Fast-dLLM threshold decoding on the dual cache (optionally capped at t_base).
        for block, start, end in blocks:
            if p.stop_at_eos and not bool(state.incomplete(start, end).any()):
                continue
            i = 0
            while bool((active := state.incomplete(start, end)).any()) and (p.t_base is None or i < p.t_base):
                window = None if i == 0 else torch.arange(start, end, device=device)
                rows = row_index(active)
                logits = forward_rows(model, state, cache, rows, window, "window" if i == 0 else "cache",
                                      slice(start, end) if i == 0 else slice(0, end - start))
                state.trace.forward(active)
                stats.record(rows.cpu(), None if i == 0 else end - start)
                masked = state.masked(start, end)
                proposal = propose(logits, masked, generator=generator, rows=rows,
                                   mask_id=state.mask_id, **p.propose_kwargs())
                state.commit(start, select_threshold(proposal.confidence, masked, p.threshold), proposal, block)
                if p.stop_at_eos:
                    fill_eos(state)
                i += 1
        used = state.trace.row_nfe.clone()

        # Plan: per row, incomplete blocks (most masks first), then ambiguous ones (most ambiguous first).
        counts = torch.stack([ambiguous(state, s, e, p.tau).sum(dim=1) for _, s, e in blocks], dim=1).cpu()
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
        left = [p.budget] * state.batch
        spent = [0] * state.batch
        for rank in range(max((len(o) for o in order), default=0)):
            target: dict[int, int] = {}
            for r in range(state.batch):
                if rank < len(order[r]) and (left[r] > 0 or masks[r, order[r][rank]] > 0):
                    target[r] = order[r][rank]
            if not target:
                break
            before = {r: state.canvas[r, blocks[b][1]:blocks[b][2]].clone() for r, b in target.items()}
            remasked = {}
            for r, b in target.items():
                _, s, e = blocks[b]
                row_mask = torch.zeros((state.batch, e - s), dtype=torch.bool, device=device)
                if left[r] > 0:
                    row_mask[r] = ambiguous(state, s, e, p.tau)[r]
                amb = row_mask[r]
                remask_window(state, s, row_mask)
                remasked[r] = int(amb.sum())
            steps_here = dict.fromkeys(target, 0)
            first = True
            while True:
                live = {r: b for r, b in target.items() if bool(state.incomplete(blocks[b][1], blocks[b][2])[r])}
                if not live:
                    break
                self._refine_step(model, state, cache, stats, blocks, live, first, left, generator)
                for r in live:
                    steps_here[r] += 1
                    spent[r] += 1
                    if left[r] <= 0:
                        state.trace.event(r, "budget_overrun", block=live[r])
                    left[r] -= 1
                first = False
            for r, b in target.items():
                _, s, e = blocks[b]
                changed = int((state.canvas[r, s:e] != before[r]).sum())
                state.trace.event(r, "refine", block=b, rank=rank, spent=steps_here[r], remasked=remasked[r],
                                  was_incomplete=int(masks[r, b]), changed=changed, budget_left=max(0, left[r]))
        for r in range(state.batch):
            state.trace.metrics[r].update(
                t_used=int(used[r]), t_refine=p.budget, t_refine_spent=spent[r], refine_order=order[r],
                ambiguity=[x / p.block_length for x in counts[r].tolist()], avg_block_size=float(p.block_length),
                cache_hit_rate=stats.hit_rate(r), nfe=int(state.trace.row_nfe[r]),
                adaptations=sum(1 for e in state.trace.events[r] if e["type"] == "refine"))

    def _refine_step(self, model, state: DecodeState, cache: KVCache, stats: CacheStats,
                     blocks: list[tuple[int, int, int]], live: dict[int, int], first: bool, left: list[int],
                     generator) -> None:
        """One forward for every live row on its own target block, then the threshold commit.

        The first step of a refinement is one full forward for all live rows (logits over the span
        of their blocks); later steps group rows by block and run a dual-cache block window each.
        """
        p = self.params
        device = state.canvas.device
        by_block: dict[int, list[int]] = {}
        for r, b in live.items():
            by_block.setdefault(b, []).append(r)
        if first:
            rows = torch.tensor(sorted(live), device=device)
            lo = min(blocks[b][1] for b in by_block)
            hi = max(blocks[b][2] for b in by_block)
            logits_all = forward_rows(model, state, cache, rows, None, "window", slice(lo, hi))
            state.trace.forward(self._mask(state, rows))
            stats.record(rows.cpu(), None)
            pick = {r: i for i, r in enumerate(sorted(live))}
        for b, members in sorted(by_block.items()):
            _, s, e = blocks[b]
            rows = torch.tensor(members, device=device)
            if first:
                logits = logits_all[[pick[r] for r in members], s - lo:e - lo]
            else:
                window = torch.arange(s, e, device=device)
                logits = forward_rows(model, state, cache, rows, window, "cache", slice(0, e - s))
                state.trace.forward(self._mask(state, rows))
                stats.record(rows.cpu(), e - s)
            masked = state.masked(s, e)[rows]
            proposal = propose(logits, masked, generator=generator,
                               mask_id=state.mask_id, **p.propose_kwargs())
            keep = select_threshold(proposal.confidence, masked, p.threshold)
            for i, r in enumerate(members):
                if left[r] <= 1:  # the pool's last forward (or an overrun): finish the block now
                    keep[i] = masked[i]
            wide = widen(state, rows, proposal)
            transfer = torch.zeros((state.batch, e - s), dtype=torch.bool, device=device)
            transfer[rows] = keep
            state.commit(s, transfer, wide, b)
            if p.stop_at_eos:
                fill_eos(state)

    @staticmethod
    def _mask(state: DecodeState, rows: Tensor) -> Tensor:
        active = torch.zeros(state.batch, dtype=torch.bool, device=state.canvas.device)
        active[rows] = True
        return active
