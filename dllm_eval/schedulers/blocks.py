"""The shared block loop: windows, KV-cache bookkeeping and forward accounting, written once.

Fast-dLLM-style decoding runs every block the same way: the block's first step is a full
forward over the canvas (which also refills the KV cache), later steps run a window that
attends to the cache -- the block alone ("dual" cache), the block and everything after it
("prefix"), or, without a cache, the full canvas again. `BlockRunner` owns that choice, the
cache, the per-row forward accounting (`Trace.forward`) and the cache-hit statistics; a
scheduler only says which proposals to keep at each step (`BlockRunner.run`'s `select`), or, for
a window the loop does not know (a tiered refresh), calls `BlockRunner.forward` itself.

Every forward runs only the rows that need it (`forward_rows`): in a batch, rows finish blocks
at different steps, and running just the rows that still need a forward makes the batch cost
the sum of its rows' work, with each row seeing exactly what it would see decoded alone.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from dllm_eval.models.cache import KVCache, Window
from dllm_eval.schedulers.base import DecodeState, Proposal, propose

CACHE_MODES = ("none", "prefix", "dual")


def row_index(rows: Tensor) -> Tensor:
    """[B] bool -> the sorted row indices (long)."""
    return rows.nonzero().flatten()


def window_index(window: Window) -> slice | Tensor:
    """An index for a window: a slice for a contiguous `range` (a view, no copy)."""
    return slice(window.start, window.stop) if isinstance(window, range) else window


def window_tensor(window: Window, device: torch.device) -> Tensor:
    return torch.arange(window.start, window.stop, device=device) if isinstance(window, range) else window


def forward_rows(model, state: DecodeState, cache: KVCache | None, rows: Tensor, window: Tensor | None,
                 attend: str, logits_slice: slice, write: bool = True, **model_kwargs) -> Tensor:
    """One forward for a subset of rows (indices `rows`); logits [len(rows), ...].

    `window=None` is a full forward over the canvas (``attend="window"``), filling the cache
    when there is one. When `rows` is not the whole batch, the rows' canvas, padding mask and
    cache slices are gathered, the call runs on them alone, and their cache (and stamps) are
    scattered back, so the other rows' caches are untouched. The cache clock ticks once per
    call, so `cache.stamp` tells which call wrote each position.
    """
    everyone = rows.numel() == state.batch
    canvas = state.canvas if everyone else state.canvas.index_select(0, rows)
    mask = state.attention_mask
    if mask is not None and not everyone:
        mask = mask.index_select(0, rows)
    ids = canvas if window is None else canvas[:, window_index(window)]
    if cache is None:
        return model(ids, attention_mask=mask, logits_positions=logits_slice, **model_kwargs)
    cache.tick()
    sub = cache if everyone else cache.select_rows(rows)
    logits = model(ids, window=window, attention_mask=mask, cache=sub, attend=attend, write=write,
                   logits_positions=logits_slice, **model_kwargs)
    if write and not everyone:
        cache.scatter_rows(rows, sub, positions=None if window is None else window_tensor(window, canvas.device))
    return logits


class CacheStats:
    """Per-row KV accounting for `cache_hit_rate`: over a row's forwards, the fraction of attended
    KV positions (real, non-padding canvas positions) served from the cache rather than
    recomputed; a full forward serves none, a block-window dual-cache step all but the block."""

    def __init__(self, state: DecodeState) -> None:
        mask = state.attention_mask
        self.mask = None if mask is None else mask.bool().cpu()
        self.real = (torch.full((state.batch,), state.length, dtype=torch.long) if mask is None
                     else mask.sum(dim=1).long().cpu())
        self.attended = torch.zeros(state.batch, dtype=torch.long)
        self.served = torch.zeros(state.batch, dtype=torch.long)

    def record(self, rows: Sequence[int] | Tensor, window: Window | None) -> None:
        """A call for `rows` over canvas positions `window`; None means a full forward (nothing
        served). Padding positions in a window are neither attended nor recomputed for a row."""
        for r in (rows.tolist() if isinstance(rows, Tensor) else rows):
            self.attended[r] += self.real[r]
            if window is not None:
                fresh = len(window) if self.mask is None else int(self.mask[r, window_index(window) if isinstance(window, range) else window.cpu()].sum())
                self.served[r] += self.real[r] - fresh

    def hit_rate(self, row: int) -> float:
        return float(self.served[row]) / max(1, int(self.attended[row]))


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
        # (row indices, logits) of the last forward, for rules that read the whole distribution
        # (entropy, KL), not just the proposal a `select` gets
        self.last: tuple[Tensor, Tensor] | None = None

    @property
    def family(self) -> str | None:
        """The model family's name ("llada", "dream"), or None for a model of no registered family."""
        from dllm_eval.models.registry import family_of

        try:
            return family_of(self.model).name
        except ValueError:
            return None

    def forward(self, active: Tensor, start: int, end: int, first: bool, window: Tensor | None = None) -> Tensor:
        """Logits of [start, end) for the `active` rows ([B] bool), counted in the trace.

        `first`: a full forward (refills the cache). Otherwise the cache mode's window, or
        `window` (canvas positions, containing [start, end)) with ``attend="cache", write=True``.
        """
        state, rows = self.state, row_index(active)
        if first or self.cache is None:
            logits = forward_rows(self.model, state, self.cache, rows, None, "window", slice(start, end),
                                  **self.model_kwargs)
        elif window is not None:
            lo = int((window == start).nonzero()[0])
            logits = forward_rows(self.model, state, self.cache, rows, window, "cache", slice(lo, lo + end - start),
                                  **self.model_kwargs)
        elif self.mode == "prefix":
            window = range(start, state.length)
            logits = forward_rows(self.model, state, self.cache, rows, window, "prefix", slice(0, end - start),
                                  write=False, **self.model_kwargs)
        else:
            window = range(start, end)
            logits = forward_rows(self.model, state, self.cache, rows, window, "cache", slice(0, end - start),
                                  **self.model_kwargs)
        state.trace.forward(active)
        self.stats.record(rows.cpu(), None if first or self.cache is None else window)
        self.last = (rows, logits)
        return logits

    def propose(self, logits: Tensor, active: Tensor, start: int, end: int) -> Proposal:
        """Proposals for the block, batch-wide (rows that did not run propose nothing)."""
        return propose(logits, self.state.masked(start, end), generator=self.generator, rows=row_index(active),
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
