"""The explicit KV cache every model family shares, and the model interface schedulers rely on.

A scheduler talks to any model family only through:

- ``model(input_ids, *, window, attention_mask, cache, attend, write, logits_positions, **family_options)``
  (``window``: canvas positions as a device tensor, or a host ``range`` for a contiguous window,
  which lets the step run without reading the device and be captured as a CUDA graph) returning logits where ``logits[:, i]`` scores the token at window position ``i`` (families whose
  checkpoints predict shifted, such as Dream, realign inside their own model file);
- ``model.config.mask_token_id`` / ``eos_token_id`` / ``pad_token_id`` (read from the checkpoint),
  ``n_layers`` / ``effective_n_kv_heads`` / ``head_dim`` (the cache layout), ``model.dtype``,
  ``model.device``;
- `KVCache`, below, which the scheduler owns and the model reads and writes when told to;
- ``extra=ExtraQueries(...)`` (full forward without a cache only): tokens appended after the
  canvas as queries with their own attention mask (a verification copy: WINO's leave-one-out
  shadow block, draft-and-verify checks). The canvas never attends to them and no cache stores
  them, so the canvas logits are those of the plain forward; the extras' logits are appended
  after the canvas's (``logits[:, -E:]``), aligned like the canvas: extra j is scored as canvas
  position ``positions[j]`` would be under extra j's mask (see `ExtraQueries`).

A third family is one model file implementing that forward plus one line in `models.registry`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

LayerKV = Any  # a callable (k_window, v_window) -> (k_all, v_all); see KVCache.layer_view


@dataclass
class ExtraQueries:
    """E extra query tokens per row, run in the same full forward as the canvas (length L).

    - `ids` [B, E]: their tokens;
    - `positions` [B, E]: the canvas position each one stands in for: it takes that position's
      RoPE id (per-row, padding-aware, as the canvas's own), and its logits score that position;
    - `sees` [B, E, L + E] bool: which canvas keys (first L) and which extra keys (last E) each
      extra query attends to. Padding keys are never seen, whatever `sees` says.

    Nothing attends to an extra but other extras (as `sees` allows), and no cache stores them.
    Families with a shifted head (Dream scores position p from the hidden state at p - 1) score
    extra j from a read-only query carrying the canvas token at ``positions[j] - 1``, at that
    position, with extra j's mask; extra j's own token then enters only as a key for other
    extras, just as the canvas never embeds the token its logits predict. Either way an extra that
    copies canvas position p and sees exactly the canvas gets p's canvas logits.
    """

    ids: Tensor
    positions: Tensor
    sees: Tensor

    def attention(self, key_valid: Tensor | None) -> Tensor:
        """[B, 1, L + E, L + E] bool mask for rows (canvas, then extras) over keys (canvas, then
        extras): canvas rows see the real canvas keys only, extra rows what `sees` allows."""
        batch, n, total = self.sees.shape
        length = total - n
        valid = torch.ones(batch, total, dtype=torch.bool, device=self.sees.device)
        if key_valid is not None:
            valid[:, :length] = key_valid
        canvas = torch.zeros(batch, length, total, dtype=torch.bool, device=self.sees.device)
        canvas[:, :, :length] = True
        return (torch.cat((canvas, self.sees.bool()), dim=1) & valid[:, None, :])[:, None]


class KVCache:
    """Keys (already RoPE-rotated at their canvas positions) and values of every layer for a whole canvas of length L.

    The cache is a plain object the scheduler owns; the model never mutates it on its own.
    Each forward call says, through `attend`, which keys the window's queries see:

    - ``"window"``: only the window itself (a plain full forward when the window is the canvas);
    - ``"prefix"``: cached positions ``[0, window_start)`` followed by the window
      (Fast-dLLM's prefix cache: the window is the active block plus everything after it);
    - ``"cache"``: the whole cached canvas with the window's positions replaced by fresh KV
      (Fast-dLLM's dual cache).

    and, through `write`, whether the window's fresh KV is stored back. Storing the KV of an
    arbitrary set of positions is how partial ("tiered") refreshes are done: run those
    positions as a window with ``attend="cache", write=True``.

    `stamp[b, p]` records the step counter at which position p's KV was last written, so a
    scheduler (and its tests) can state exactly how stale any cached entry is.

    `tokens[b, p]` is the token whose KV was last written at p (-1 before any write), for
    models that must re-run a position they are not given (Dream's exactly aligned window
    forward needs the token just before the window; see `dllm_eval.models.dream`). Models that
    do not need it may leave it unwritten.
    """

    def __init__(self, n_layers: int, batch: int, n_kv_heads: int, length: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (batch, n_kv_heads, length, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.stamp = torch.full((batch, length), -1, dtype=torch.long, device=device)
        self.tokens = torch.full((batch, length), -1, dtype=torch.long, device=device)
        # Rows whose writes take effect (in place: a captured CUDA graph holds this buffer's
        # address). A row left False keeps its keys, values, stamps and tokens exactly as they
        # were, so a whole batch can run one call while only some rows need the step.
        self.write_rows = torch.ones(batch, dtype=torch.bool, device=device)
        self.clock = 0
        self.clock_now = torch.zeros((), dtype=torch.long, device=device)  # `clock` on the device
        self.length = length
        self.static = False  # True for a pooled cache whose buffers outlive one decode (graphs.py)

    @classmethod
    def for_model(cls, model: Any, batch: int, length: int) -> KVCache:
        """A cache for `model`; a model that keeps a static pool (`models.graphs`) hands out a
        reset pooled cache, so captured graphs see the same buffers from one decode to the next."""
        pool = getattr(model, "static_cache", None)
        if pool is not None:
            return pool(batch, length)
        c = model.config
        return cls(c.n_layers, batch, c.effective_n_kv_heads, length, c.head_dim, model.dtype, model.device)

    def reset(self) -> None:
        """Back to the state of a new cache, in place (buffers keep their addresses)."""
        for t in self.keys + self.values:
            t.zero_()
        self.stamp.fill_(-1)
        self.tokens.fill_(-1)
        self.write_rows.fill_(True)
        self.clock = 0
        self.clock_now.zero_()

    def _store(self, full: Tensor, positions: Tensor, fresh: Tensor, span: range | None = None) -> None:
        """full[:, :, positions] = fresh for the rows in `write_rows` (others keep theirs).

        A contiguous window (`span`) is written through a slice, in one pass that reads the old
        entries only to keep the rows that do not write. The index kernels (select, then copy)
        take three passes and are slow on the transposed fresh KV: on an H200 they cost a
        full-canvas refresh of LLaDA-8B at batch 32 122 ms of its 962 (bench --profile)."""
        rows = self.write_rows[:, None, None, None]
        if span is not None:
            part = full[:, :, span.start: span.stop]
            torch.where(rows, fresh, part, out=part)
            return
        kept = full.index_select(2, positions)
        full.index_copy_(2, positions, torch.where(rows, fresh, kept))

    def layer_view(self, layer: int, positions: Tensor, attend: str, write: bool,
                   window_start: int | None = None, span: range | None = None) -> LayerKV:
        """How layer `layer`'s window KV meets the cache (see the class docstring). `positions`
        is the window's canvas positions on the device, `span` the same as a host range when the
        window is contiguous (stores then go through a slice); ``attend="prefix"`` also needs
        the window's first position on the host (`window_start`), since the prefix's length sets
        the attention's shape. Nothing here reads the device, so the step can be captured."""
        keys, values = self.keys[layer], self.values[layer]
        if attend == "prefix" and window_start is None:
            window_start = span.start if span is not None else int(positions[0])

        def merge(k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
            if write:
                self._store(keys, positions, k, span)
                self._store(values, positions, v, span)
            if attend == "window":
                return k, v
            if attend == "prefix":
                return (torch.cat((keys[:, :, :window_start], k), dim=2),
                        torch.cat((values[:, :, :window_start], v), dim=2))
            if write:  # the cache already holds the fresh window (rows left out of `write_rows`
                return keys, values  # see their old one: a row is left out when its output is unused)
            return keys.index_copy(2, positions, k), values.index_copy(2, positions, v)

        return merge

    def rows_view(self, layer: int, window: Tensor, valid: Tensor, write: bool) -> LayerKV:
        """`layer_view` for a per-row window (``attend="cache"``): row b's queries are at canvas
        positions window[b] ([B, W], distinct per row) and see the whole cached canvas with its
        `valid` entries replaced by their fresh KV; invalid entries (padding to a common W) are
        neither seen nor written. With `write`, the valid entries of the rows in `write_rows` are
        stored (others keep theirs, and then see their old KV)."""
        keys, values = self.keys[layer], self.values[layer]
        store = (valid & self.write_rows[:, None]) if write else valid

        def merge(k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
            index = window[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
            out = []
            for full, fresh in ((keys, k), (values, v)):
                target = full if write else full.clone()
                kept = target.gather(2, index)
                target.scatter_(2, index, torch.where(store[:, None, :, None], fresh, kept))
                out.append(target)
            return out[0], out[1]

        return merge

    def mark_written_rows(self, window: Tensor, valid: Tensor, tokens: Tensor | None = None) -> None:
        """`mark_written` for a per-row window [B, W]: only valid entries of rows in `write_rows`."""
        store = valid & self.write_rows[:, None]
        self.stamp.scatter_(1, window, torch.where(store, self.clock_now, self.stamp.gather(1, window)))
        if tokens is not None:
            self.tokens.scatter_(1, window, torch.where(store, tokens, self.tokens.gather(1, window)))

    def select_rows(self, rows: Tensor) -> KVCache:
        """A copy holding only `rows`: on a CPU, where a step costs in proportion to the rows it
        carries, a batch steps just the rows that need it (`schedulers.blocks.forward_batch`)."""
        sub = object.__new__(KVCache)
        sub.keys = [k.index_select(0, rows) for k in self.keys]
        sub.values = [v.index_select(0, rows) for v in self.values]
        sub.stamp = self.stamp.index_select(0, rows)
        sub.tokens = self.tokens.index_select(0, rows)
        sub.write_rows = self.write_rows.index_select(0, rows)
        sub.clock, sub.clock_now, sub.length, sub.static = self.clock, self.clock_now.clone(), self.length, False
        return sub

    def scatter_rows(self, rows: Tensor, sub: KVCache, positions: Tensor | None = None) -> None:
        """Write back a `select_rows` copy after it was stepped; `positions`: only those canvas
        positions were written (e.g. a dual-cache block step), so only they are copied back."""
        if positions is None:
            for full, part in zip(self.keys + self.values, sub.keys + sub.values):
                full.index_copy_(0, rows, part)
            self.stamp.index_copy_(0, rows, sub.stamp)
            self.tokens.index_copy_(0, rows, sub.tokens)
            return
        for full, part in zip(self.keys + self.values, sub.keys + sub.values):
            full[rows[:, None], :, positions[None, :]] = part[:, :, positions].transpose(1, 2)
        self.stamp[rows[:, None], positions[None, :]] = sub.stamp[:, positions]
        self.tokens[rows[:, None], positions[None, :]] = sub.tokens[:, positions]

    def mark_written(self, positions: Tensor, tokens: Tensor | None = None) -> None:
        """Stamp `positions` with the current clock for the rows in `write_rows`; `tokens`
        [B, len(positions)]: what was written. Device-side only (capturable)."""
        rows = self.write_rows[:, None]
        stamp = self.clock_now.expand(self.stamp.shape[0], positions.shape[0])
        self.stamp.index_copy_(1, positions, torch.where(rows, stamp, self.stamp.index_select(1, positions)))
        if tokens is not None:
            self.tokens.index_copy_(1, positions, torch.where(rows, tokens, self.tokens.index_select(1, positions)))

    def tick(self) -> int:
        self.clock += 1
        self.clock_now.fill_(self.clock)
        return self.clock


__all__ = ["ExtraQueries", "KVCache", "LayerKV", "Window", "canvas_positions", "host_checks", "per_row_inputs",
           "resolve_window", "take_positions"]

def host_checks(device: torch.device) -> bool:
    """Whether sanity checks that read tensor values on the host run: on a CPU, where a read costs
    nothing and the tests run; not on a GPU, where a read stalls every step and cannot be captured
    in a CUDA graph."""
    return device.type == "cpu"


Window = Tensor | range  # canvas positions of a window: a device tensor, or a host `range` when contiguous


def resolve_window(window: Window | None, width: int, device: torch.device) -> tuple[Tensor, range | None]:
    """(the window's positions on the device, the same as a host `range` when known contiguous).

    Schedulers pass contiguous windows as `range`, so the model knows their layout without
    reading the device (a host read would stall the GPU and cannot be captured in a graph)."""
    if window is None:
        window = range(width)
    if isinstance(window, range):
        if window.step != 1 or len(window) != width:
            raise ValueError(f"window {window} does not match the {width} input tokens")
        return torch.arange(window.start, window.stop, device=device), window
    return window, None


def canvas_positions(attention_mask: Tensor | None, window: Tensor, attend: str, canvas_len: int, batch: int,
                     device: torch.device, window_start: int | None = None) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """What every family's forward needs from the padding mask, computed once:
    (canvas_pos [B, L]: per-row RoPE positions counting real tokens only, left padding at 0;
    key_valid [B, L] or None: real tokens; visible [B, K] or None: the keys a window of canvas
    positions `window` attends to under `attend` -- itself, the cached prefix and itself, or the
    whole cached canvas, as `KVCache.layer_view` assembles them)."""
    if attention_mask is None:
        return torch.arange(canvas_len, device=device).expand(batch, canvas_len), None, None
    key_valid = attention_mask.to(torch.bool)
    canvas_pos = (key_valid.long().cumsum(-1) - 1).clamp(min=0)
    if attend == "window":
        visible = key_valid[:, window]
    elif attend == "prefix":
        start = int(window[0]) if window_start is None else window_start
        visible = torch.cat((key_valid[:, :start], key_valid[:, window]), dim=1)
    else:
        visible = key_valid
    return canvas_pos, key_valid, visible


def per_row_inputs(window: Tensor, window_valid: Tensor | None, attention_mask: Tensor | None, cache: KVCache | None,
                   attend: str) -> tuple[Tensor, Tensor, Tensor | None]:
    """What a family's forward needs for a per-row window ([B, W] canvas positions, distinct and
    increasing per row, `window_valid` [B, W] marking the real entries; padding entries are run
    but neither seen nor written): (valid, canvas_pos [B, L], attention mask or None). Per-row
    windows attend to the whole cached canvas (``attend="cache"``), so rows whose windows
    diverge (some a full forward, some a block, some a tiered refresh) share one call."""
    if cache is None or attend != "cache":
        raise ValueError("a per-row window ([B, W]) needs a KVCache and attend='cache'")
    valid = torch.ones_like(window, dtype=torch.bool) if window_valid is None else window_valid.bool()
    batch = window.shape[0]
    canvas_pos, _, visible = canvas_positions(attention_mask, window[0], "cache", cache.length, batch, window.device)
    return valid, canvas_pos, None if visible is None else visible[:, None, None, :]


def take_positions(x: Tensor, logits_positions: slice | Tensor | None) -> Tensor:
    """The window entries [B, W, ...] whose logits are wanted: a slice (every row alike), or a
    [B, K] tensor of entries per row (per-row windows), or all (None)."""
    if logits_positions is None:
        return x
    if isinstance(logits_positions, slice):
        return x[:, logits_positions]
    return x.gather(1, logits_positions[:, :, None].expand(-1, -1, x.shape[2]))
