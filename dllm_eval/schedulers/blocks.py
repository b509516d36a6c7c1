"""The shared block loop: windows, KV-cache bookkeeping and forward accounting, written once.

Fast-dLLM-style decoding runs every block the same way: the block's first step is a full
forward over the canvas (which also refills the KV cache), later steps run a window that
attends to the cache -- the block alone ("dual" cache), the block and everything after it
("prefix"), or, without a cache, the full canvas again. `BlockRunner` owns that choice, the
cache, the per-row forward accounting (`Trace.forward`) and the cache-hit statistics; a
scheduler only says which proposals to keep at each step (`BlockRunner.run`'s `select`), or, for
a window the loop does not know (a tiered refresh), calls `BlockRunner.forward` itself.

Every forward runs the whole batch in one model call, whatever the rows need: in a batch, rows
finish blocks at different steps, and a row that does not need a step runs along with its outputs
discarded and its cache writes switched off (`KVCache.write_rows`), so its cache, stamps and
tokens stay exactly as they were. Each row thus sees exactly what it would see decoded alone, the
batch costs one call per step (no copies of cache rows, fixed shapes for CUDA graphs), and the
trace still counts only the rows that needed the step (`Trace.forward(active)`), so per-row NFE
is the NFE the row has at batch 1.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dllm_eval.models.cache import KVCache, Window
from dllm_eval.schedulers.base import DecodeState, Proposal, propose, select_quota, select_threshold

CACHE_MODES = ("none", "prefix", "dual")


def row_index(rows: Tensor) -> Tensor:
    """[B] bool -> the sorted row indices (long)."""
    return rows.nonzero().flatten()


def window_index(window: Window) -> slice | Tensor:
    """An index for a window: a slice for a contiguous `range` (a view, no copy)."""
    return slice(window.start, window.stop) if isinstance(window, range) else window


# Which rows a CPU step carries: "active" (only the rows that need it: a CPU step costs in
# proportion to its rows) or "batch" (every row, as on a GPU, where a step costs about the same
# whatever it carries and fixed shapes let it be replayed as a CUDA graph). Both give every row
# exactly its batch-of-one tokens; the tests run both.
CPU_ROWS = "active"


def window_tensor(window: Window, device: torch.device) -> Tensor:
    return torch.arange(window.start, window.stop, device=device) if isinstance(window, range) else window


def forward_batch(model, state: DecodeState, cache: KVCache | None, active: Tensor, window: Window | None,
                  attend: str, logits_slice: slice, write: bool = True, **model_kwargs) -> Tensor:
    """One forward for the whole batch; only the `active` rows ([B] bool) write the cache.

    `window=None` is a full forward over the canvas (``attend="window"``), filling the cache
    when there is one; a contiguous window is best a `range` (the model then needs no device
    read to know its layout, so the step can be captured as a CUDA graph). Logits are [B, ...]
    for every row; those of inactive rows are to be ignored. The cache clock ticks once per call, so `cache.stamp` tells which call wrote each
    position. `write_rows` is set in place (CUDA graphs capture its address) and reset to all
    rows after the call, for callers that do not set it.
    """
    ids = state.canvas if window is None else state.canvas[:, window_index(window)]
    if (ids.device.type == "cpu" and CPU_ROWS == "active" and "extra" not in model_kwargs
            and not bool(active.all())):
        return _forward_active_rows(model, state, cache, active, window, ids, attend, logits_slice, write,
                                    **model_kwargs)
    if cache is None:
        return model(ids, attention_mask=state.attention_mask, logits_positions=logits_slice, **model_kwargs)
    cache.tick()
    if write:
        cache.write_rows.copy_(active)
    try:
        return model(ids, window=window, attention_mask=state.attention_mask, cache=cache, attend=attend, write=write,
                     logits_positions=logits_slice, **model_kwargs)
    finally:
        if write:
            cache.write_rows.fill_(True)


def _forward_active_rows(model, state: DecodeState, cache: KVCache | None, active: Tensor, window: Window | None,
                         ids: Tensor, attend: str, logits_slice: slice, write: bool, **model_kwargs) -> Tensor:
    """`forward_batch` on a CPU: a step costs in proportion to the rows it carries there (a GPU
    step costs about the same whatever it carries), so only the rows that need it run, on copies
    of their cache rows written back afterwards. Idle rows get zero logits (ignored anyway)."""
    rows = active.nonzero().flatten()
    mask = None if state.attention_mask is None else state.attention_mask.index_select(0, rows)
    sub_ids = ids.index_select(0, rows)
    if cache is None:
        logits = model(sub_ids, attention_mask=mask, logits_positions=logits_slice, **model_kwargs)
    else:
        cache.tick()
        sub = cache.select_rows(rows)
        logits = model(sub_ids, window=window, attention_mask=mask, cache=sub, attend=attend, write=write,
                       logits_positions=logits_slice, **model_kwargs)
        if write:
            cache.scatter_rows(rows, sub, positions=None if window is None else window_tensor(window, ids.device))
    out = logits.new_zeros((state.batch, *logits.shape[1:]))
    out.index_copy_(0, rows, logits)
    return out


class CacheStats:
    """Per-row KV accounting for `cache_hit_rate`: over a row's forwards, the fraction of attended
    KV positions (real, non-padding canvas positions) served from the cache rather than
    recomputed; a full forward serves none, a block-window dual-cache step all but the block.
    Kept on the decode's device as tensors, so recording a step needs no host sync."""

    def __init__(self, state: DecodeState) -> None:
        mask, device = state.attention_mask, state.canvas.device
        self.mask = None if mask is None else mask.bool()
        self.real = (torch.full((state.batch,), state.length, dtype=torch.long, device=device) if mask is None
                     else mask.sum(dim=1).long())
        self.attended = torch.zeros(state.batch, dtype=torch.long, device=device)
        self.served = torch.zeros(state.batch, dtype=torch.long, device=device)

    def record(self, active: Tensor, window: Window | None, valid: Tensor | None = None) -> None:
        """A call in which the `active` rows ([B] bool) needed canvas positions `window`: 1-D
        (every row), or [B, W] per row with `valid` marking its real entries; None means a full
        forward (nothing served). Padding positions in a window are neither attended nor
        recomputed for a row."""
        used = active.long()
        self.attended += used * self.real
        if window is None:
            return
        if isinstance(window, range) or window.dim() == 1:
            fresh = (torch.full_like(self.real, len(window)) if self.mask is None
                     else self.mask[:, window_index(window)].sum(dim=1))
        else:
            real = valid if self.mask is None else valid & self.mask.gather(1, window)
            fresh = real.sum(dim=1)
        self.served += used * (self.real - fresh)

    def hit_rate(self, row: int) -> float:
        return float(self.served[row]) / max(1, int(self.attended[row]))


@dataclass(frozen=True)
class RowStep:
    """What one row needs from a step: `window=None` a full forward (refilling its cache), else
    the canvas positions it recomputes (sorted, containing its block; ``attend="cache",
    write=True``); and the logits of its block [start, end)."""

    window: tuple[int, ...] | None
    start: int
    end: int


@dataclass
class Spans:
    """Per-row blocks of one step, in a common frame of `width` columns: row b's column j is
    canvas position ``starts[b] + j``, inside its block where `inside` (and the row is active)."""

    active: Tensor  # [B] bool
    starts: Tensor  # [B] long
    inside: Tensor  # [B, width] bool
    width: int

    @property
    def widths(self) -> Tensor:
        """[B] each row's block length (0 for a row that idles)."""
        return self.inside.sum(dim=1)

    @property
    def positions(self) -> Tensor:
        return self.starts[:, None] + torch.arange(self.width, device=self.starts.device)[None, :]


@dataclass(frozen=True)
class Pick:
    """How a row picks its commits in a step: the `quota` most confident masks (LLaDA's rule),
    or, with `quota` None, every mask with confidence >= `threshold` plus the most confident one
    (Fast-dLLM's rule); `everything`: every mask left."""

    quota: int | None = None
    threshold: float = 1.0
    everything: bool = False


@dataclass(frozen=True)
class RowRequest:
    """One step a row's program asks for: its window and block, the block's index, its rule."""

    step: RowStep
    block: int
    pick: Pick


def block_step(step: int, start: int, end: int) -> RowStep:
    """Step `step` of a dual-cache block decode: a full forward first, then the block alone."""
    return RowStep(None if step == 0 else tuple(range(start, end)), start, end)


# A row's program: yields the step it needs next and is sent back the masks its block has left
# after that step; returns when the row is done.
RowProgram = Generator[RowRequest, int, None]


def per_row_window(steps: Sequence[RowStep | None], length: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """([B, W] per-row canvas positions, [B, W] valid) for rows that need different windows.

    W is the longest window (a full forward's is the whole canvas). A shorter window is padded
    with the row's first positions outside it, so every row's positions are distinct and
    increasing; the padding is computed but neither written nor read by the real queries."""
    needed = torch.zeros(len(steps), length, dtype=torch.bool)
    for r, step in enumerate(steps):
        if step is not None:
            needed[r, list(range(length)) if step.window is None else list(step.window)] = True
    width = int(needed.sum(dim=1).max())
    spare = (~needed).long().cumsum(dim=1) <= width - needed.sum(dim=1, keepdim=True)
    chosen = needed | (~needed & spare)
    window = torch.arange(length).expand(len(steps), length)[chosen].view(len(steps), width)
    return window.to(device), needed.gather(1, window).to(device)


# select(proposal, masked, step) -> transfer: which proposals of the block to commit this step.
Select = Callable[[Proposal, Tensor, int], Tensor]


class BlockRunner:
    """Decodes blocks over one KV cache (`cache`: none / prefix / dual) for one `DecodeState`."""

    def __init__(self, model, state: DecodeState, cache: str = "dual", *, generator: torch.Generator | None = None,
                 propose_kwargs: dict | None = None, stop_at_eos: bool = False, model_kwargs: dict | None = None) -> None:
        if cache not in CACHE_MODES:
            raise ValueError(f"cache must be one of {CACHE_MODES}, got {cache!r}")
        self.model, self.state, self.mode = model, state, cache
        self.cache = None if cache == "none" else KVCache.for_model(model, state.batch, state.length)
        self.stats = CacheStats(state)
        self.generator = generator
        self.propose_kwargs = dict(propose_kwargs or {})
        self.stop_at_eos = stop_at_eos
        self.model_kwargs = dict(model_kwargs or {})
        # (active rows [B] bool, logits [B, ...]) of the last forward, for rules that read the whole
        # distribution (entropy, KL), not just the proposal a `select` gets
        self.last: tuple[Tensor, Tensor] | None = None

    @property
    def family(self) -> str | None:
        """The model family's name ("llada", "dream"), or None for a model of no registered family."""
        from dllm_eval.models.registry import family_of

        try:
            return family_of(self.model).name
        except ValueError:
            return None

    def forward(self, active: Tensor, start: int, end: int, first: bool, window: Window | None = None,
                window_start: int | None = None) -> Tensor:
        """Logits [B, end - start, V] of [start, end), counted in the trace for the `active` rows
        ([B] bool); every row runs, the others' logits are to be ignored.

        `first`: a full forward (refills the cache). Otherwise the cache mode's window, or
        `window` (canvas positions, containing [start, end), which starts at its entry
        `window_start`, read from the device when not given) with ``attend="cache", write=True``.
        """
        state = self.state
        if first or self.cache is None:
            logits = forward_batch(self.model, state, self.cache, active, None, "window", slice(start, end),
                                   **self.model_kwargs)
        elif window is not None:
            if window_start is not None:
                lo = window_start
            elif isinstance(window, range):
                lo = start - window.start
            else:
                lo = int((window == start).nonzero()[0])
            logits = forward_batch(self.model, state, self.cache, active, window, "cache", slice(lo, lo + end - start),
                                   **self.model_kwargs)
        elif self.mode == "prefix":
            window = range(start, state.length)
            logits = forward_batch(self.model, state, self.cache, active, window, "prefix", slice(0, end - start),
                                   write=False, **self.model_kwargs)
        else:
            window = range(start, end)
            logits = forward_batch(self.model, state, self.cache, active, window, "cache", slice(0, end - start),
                                   **self.model_kwargs)
        state.trace.forward(active)
        self.stats.record(active, None if first or self.cache is None else window)
        self.last = (active, logits)
        return logits

    def forward_each(self, steps: Sequence[RowStep | None]) -> tuple[Tensor, Spans]:
        """One model call in which each row takes its own `RowStep` (None: the row idles, its
        outputs discarded and its cache untouched). Returns logits [B, width, V] of each row's
        block in the `Spans` frame, counted in the trace for the rows that stepped.

        Rows that all need the same step (no divergence) use the plain shared window; rows
        that diverge pass per-row windows ([B, W] positions, see `per_row_window`) to the model.
        """
        state, device = self.state, self.state.canvas.device
        wanted = [s for s in steps if s is not None]
        active = torch.tensor([s is not None for s in steps], device=device)
        starts = torch.tensor([s.start if s is not None else state.prompt_len for s in steps], device=device)
        width = max(s.end - s.start for s in wanted)
        ends = torch.tensor([s.end if s is not None else state.prompt_len for s in steps], device=device)
        inside = (torch.arange(width, device=device)[None, :] < (ends - starts)[:, None]) & active[:, None]
        spans = Spans(active, starts, inside, width)
        if all(s == wanted[0] for s in wanted):
            one = wanted[0]
            window: Window | None = None
            if one.window is not None:
                contiguous = one.window == tuple(range(one.window[0], one.window[-1] + 1))
                window = range(one.window[0], one.window[-1] + 1) if contiguous else torch.tensor(one.window, device=device)
            logits = self.forward(active, one.start, one.end, first=one.window is None, window=window,
                                  window_start=None if one.window is None else one.window.index(one.start))
            return logits, spans
        if self.cache is None:
            raise ValueError("per-row windows need a KV cache")
        window, valid = per_row_window(steps, state.length, device)
        column = (window < starts[:, None]).sum(dim=1)  # where each row's block starts in its window
        at = (column[:, None] + torch.arange(width, device=device)[None, :]).clamp(max=window.shape[1] - 1)
        self.cache.tick()
        self.cache.write_rows.copy_(active)
        try:
            logits = self.model(state.canvas.gather(1, window), window=window, window_valid=valid,
                                attention_mask=state.attention_mask, cache=self.cache, attend="cache", write=True,
                                logits_positions=at, **self.model_kwargs)
        finally:
            self.cache.write_rows.fill_(True)
        state.trace.forward(active)
        self.stats.record(active, window, valid)
        self.last = (active, logits)
        return logits, spans

    def run_rows(self, programs: Sequence[RowProgram]) -> None:
        """Run one program per row, every step one model call for all rows still running.

        Each row decides its own next step (its block, window, rule) from its own state, as it
        would alone at batch 1, so rows need not wait for each other between blocks or phases:
        the batch takes as many calls as its slowest row. After each step every row that ran is
        sent the masks its block has left (one host read for the whole batch)."""
        state, device = self.state, self.state.canvas.device
        pending: dict[int, RowRequest] = {}
        for row, program in enumerate(programs):
            request = next(program, None)
            if request is not None:
                pending[row] = request
        while pending:
            requests = [pending.get(r) for r in range(state.batch)]
            logits, spans = self.forward_each([q.step if q is not None else None for q in requests])
            proposal = self.propose_each(logits, spans)
            masked = state.masked_at(spans.positions, spans.inside)
            picks = [q.pick if q is not None else Pick(quota=0) for q in requests]
            quota = torch.tensor([p.quota or 0 for p in picks], device=device)
            tau = torch.tensor([[p.threshold] for p in picks], dtype=torch.float64, device=device)
            by_quota = torch.tensor([p.quota is not None for p in picks], device=device)[:, None]
            everything = torch.tensor([p.everything for p in picks], device=device)[:, None]
            keep = torch.where(by_quota, select_quota(proposal.confidence, quota, spans.widths),
                               select_threshold(proposal.confidence, masked, tau, spans.widths))
            keep = torch.where(everything, masked, keep) & spans.active[:, None]
            blocks = torch.tensor([q.block if q is not None else -1 for q in requests], device=device)
            self.commit_each(blocks, spans, keep, proposal)
            left = state.masked_at(spans.positions, spans.inside).sum(dim=1).tolist()
            for row in list(pending):
                try:
                    pending[row] = programs[row].send(left[row])
                except StopIteration:
                    del pending[row]

    def propose_each(self, logits: Tensor, spans: Spans) -> Proposal:
        """`propose` for the per-row blocks of `forward_each` (rows that idled propose nothing)."""
        masked = self.state.masked_at(spans.positions, spans.inside)
        return propose(logits, masked, generator=self.generator, active=spans.active, mask_id=self.state.mask_id,
                       **self.propose_kwargs)

    def commit_each(self, blocks: Tensor, spans: Spans, transfer: Tensor, proposal: Proposal) -> None:
        """`commit` for the per-row blocks of `forward_each` (`blocks` [B]: each row's index)."""
        self.state.commit_at(spans.positions, transfer & spans.inside, proposal, blocks)
        if self.stop_at_eos:
            self.state.fill_eos()

    def propose(self, logits: Tensor, active: Tensor, start: int, end: int) -> Proposal:
        """Proposals for the block, batch-wide (rows that are not `active` propose nothing)."""
        return propose(logits, self.state.masked(start, end), generator=self.generator, active=active,
                       mask_id=self.state.mask_id, **self.propose_kwargs)

    def commit(self, block: int, start: int, transfer: Tensor, proposal: Proposal) -> None:
        """Commit, then (with `stop_at_eos`) fill every mask after a committed EOS."""
        self.state.commit(start, transfer, proposal, block)
        if self.stop_at_eos:
            self.state.fill_eos()

    def run(self, block: int, start: int, end: int, select: Select, *, extra_step: bool = False,
            max_steps: int | None = None, eligible: Callable[[int], Tensor] | None = None,
            after_step: Callable[[Tensor], None] | None = None) -> int:
        """Decode [start, end) until every row's block is complete; returns the steps taken.

        - `extra_step`: June-2025 Fast-dLLM semantics: the "block complete?" check sits at the
          bottom of the loop, so rows that ran step 0 always run step 1, even when step 0
          completed the block (only meaningful with a cache);
        - `max_steps`: stop after this many steps even if masks are left (a per-block cap);
        - `eligible(step)`: [B] rows allowed to step (a per-row budget), ANDed with "incomplete";
        - `after_step(active)`: called with the rows that stepped (budget bookkeeping).
        """
        step = 0
        first_rows = None
        while max_steps is None or step < max_steps:
            allowed = None if eligible is None else eligible(step)  # may remask: ask before looking
            active = self.state.incomplete(start, end)
            if allowed is not None:
                active = active & allowed
            if step == 1 and extra_step and self.cache is not None:
                active = active | first_rows
            if not bool(active.any()):
                break
            logits = self.forward(active, start, end, first=step == 0)
            proposal = self.propose(logits, active, start, end)
            transfer = select(proposal, self.state.masked(start, end), step) & active[:, None]
            self.commit(block, start, transfer, proposal)
            if after_step is not None:
                after_step(active)
            if step == 0:
                first_rows = active
            step += 1
        return step
