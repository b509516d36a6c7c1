"""A scripted stand-in for `LLaDAModelLM`: logits you choose, a KV cache you can watch.

The schedulers' mechanisms (allocation, block sizing, thresholds, cache tiers) are about *which*
forward calls happen and *what each one sees*. A random network makes those hard to steer, so the
tests drive the schedulers with this fake instead:

- **Scripted logits.** For every queried position the script returns ``(token, conf)`` or
  ``(token, conf, spread)``: the proposal gets probability ``conf`` and the rest of the mass is
  spread evenly over ``spread`` other tokens (default: all others). Confidence and entropy are
  therefore exactly what the test asks for. The script sees the row's prompt, the position
  (index in the generation region) and the generation region *as the model sees it*.
- **An observable cache.** The fake honours the `KVCache` API: with ``write=True`` it stores each
  window token's id as its "key" and calls ``cache.mark_written``; with ``attend="cache"`` or
  ``"prefix"`` it reads the *cached* tokens outside the window, so a stale cache shows up as a
  stale context in what the script sees (``-1`` where the KV was never written). Every call is
  logged with its window, mode and the cache stamps it read, for staleness checks. Rows left out
  of ``cache.write_rows`` write nothing. A window may also be per row (``[B, W]`` positions with
  ``window_valid``, ``logits_positions`` a ``[B, K]`` tensor of window entries, ``attend="cache"``):
  invalid entries are neither written nor seen.

Same call signature and attributes as `LLaDAModelLM` (`config`, `dtype`, `device`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from dllm_eval.models.llada import KVCache, LLaDAConfig

VOCAB = 64
MASK = VOCAB - 1
EOS = VOCAB - 2
UNSEEN = -1  # what the script sees where the cache holds no KV yet

ScriptResult = tuple[int, float] | tuple[int, float, int]
Script = Callable[[tuple[int, ...], int, tuple[int, ...]], ScriptResult]


@dataclass
class Call:
    """One forward call, as the fake saw it."""

    batch: int
    window: list[int]  # canvas positions of the window (a per-row window: row 0's valid ones)
    attend: str
    write: bool
    clock: int | None  # cache.clock at the call (None without a cache)
    stamps: Tensor | None  # cache.stamp before the call's write, [batch, L]
    served: list[int]  # canvas positions whose KV came from the cache


class ScriptedModel:
    """Deterministic fake mask predictor; see the module docstring."""

    def __init__(self, script: Script, gen_length: int, n_layers: int = 2) -> None:
        self.script = script
        self.gen_length = gen_length
        self.config = LLaDAConfig(d_model=8, n_heads=1, n_kv_heads=1, n_layers=n_layers, mlp_hidden_size=8,
                                  vocab_size=VOCAB, embedding_size=VOCAB, mask_token_id=MASK, eos_token_id=EOS,
                                  pad_token_id=EOS)
        self.dtype = torch.float64
        self.device = torch.device("cpu")
        self.calls: list[Call] = []

    def __call__(self, input_ids: Tensor, *, window: Tensor | range | None = None,
                 window_valid: Tensor | None = None, attention_mask: Tensor | None = None,
                 cache: KVCache | None = None, attend: str = "window", write: bool = False,
                 logits_positions: slice | Tensor | None = None) -> Tensor:
        if isinstance(window, range):
            window = torch.arange(window.start, window.stop)
        if window is not None and window.dim() == 2:
            return self._per_row(input_ids, window, window_valid, attention_mask, cache, attend, write,
                                 logits_positions)
        bsz, width = input_ids.shape
        length = cache.length if cache is not None else width
        if window is None:
            window = torch.arange(width)
        if cache is None and (attend != "window" or write or width != length):
            raise ValueError("without a cache the window must be the whole canvas, attend='window', write=False")
        if attend not in ("window", "prefix", "cache"):
            raise ValueError(f"bad attend {attend!r}")
        pos = window.tolist()
        seen = torch.full((bsz, length), UNSEEN, dtype=torch.long)
        served: list[int] = []
        if cache is not None and attend != "window":
            cached = torch.where(cache.stamp >= 0, cache.keys[0][:, 0, :, 0].round().long(), UNSEEN)
            served = list(range(pos[0])) if attend == "prefix" else sorted(set(range(length)) - set(pos))
            seen[:, served] = cached[:, served]
        seen[:, window] = input_ids
        self.calls.append(Call(bsz, pos, attend, write, None if cache is None else cache.clock,
                               None if cache is None else cache.stamp.clone(), served))
        if cache is not None and write:
            rows = cache.write_rows.nonzero().flatten()
            for layer in range(self.config.n_layers):
                for store in (cache.keys[layer], cache.values[layer]):
                    store[rows[:, None], 0, window[None, :], 0] = input_ids[rows].to(store.dtype)
            cache.mark_written(window)

        query = pos if logits_positions is None else pos[logits_positions]
        return self._logits(seen, [query] * bsz, attention_mask)

    def _per_row(self, input_ids: Tensor, window: Tensor, valid: Tensor, attention_mask: Tensor | None,
                 cache: KVCache, attend: str, write: bool, logits_positions: Tensor) -> Tensor:
        """A per-row window: each row sees the cache with its own valid entries fresh."""
        if cache is None or attend != "cache" or not write:
            raise ValueError("the fake takes per-row windows only with attend='cache', write=True")
        bsz, length = input_ids.shape[0], cache.length
        cached = torch.where(cache.stamp >= 0, cache.keys[0][:, 0, :, 0].round().long(), UNSEEN)
        seen = cached.clone()
        fresh = valid & cache.write_rows[:, None]
        seen.scatter_(1, window, torch.where(valid, input_ids, seen.gather(1, window)))
        own = [window[0][valid[0]].tolist()]
        self.calls.append(Call(bsz, own[0], attend, write, cache.clock, cache.stamp.clone(),
                               sorted(set(range(length)) - set(own[0]))))
        for b in range(bsz):
            for p in window[b][fresh[b]].tolist():
                for layer in range(self.config.n_layers):
                    cache.keys[layer][b, 0, p, 0] = float(seen[b, p])
                    cache.values[layer][b, 0, p, 0] = float(seen[b, p])
                cache.stamp[b, p] = cache.clock
        queries = [window[b][logits_positions[b]].tolist() for b in range(bsz)]
        return self._logits(seen, queries, attention_mask)

    def _logits(self, seen: Tensor, queries: list[list[int]], attention_mask: Tensor | None) -> Tensor:
        bsz, length = seen.shape
        prompt_len = length - self.gen_length
        real = torch.ones(bsz, length, dtype=torch.bool) if attention_mask is None else attention_mask.bool()
        logits = torch.full((bsz, len(queries[0]), VOCAB), -1e9, dtype=torch.float64)
        for b in range(bsz):
            prompt = tuple(int(t) for t, r in zip(seen[b, :prompt_len].tolist(), real[b, :prompt_len].tolist()) if r)
            gen_seen = tuple(seen[b, prompt_len:].tolist())
            for j, p in enumerate(queries[b]):
                if p < prompt_len:
                    logits[b, j] = 0.0  # prompt positions: uniform; schedulers never read them
                    continue
                logits[b, j] = scripted_logits(*self.script(prompt, p - prompt_len, gen_seen))
        return logits

    forward = __call__


def scripted_logits(token: int, conf: float, spread: int = VOCAB - 3) -> Tensor:
    """Logits whose softmax gives `token` probability `conf` and `(1 - conf) / spread` to each of
    `spread` other non-special tokens (never the mask or EOS, unless `token` is EOS)."""
    if not 0.0 < conf <= 1.0 or not 1 <= spread <= VOCAB - 3:
        raise ValueError(f"bad script output conf={conf} spread={spread}")
    out = torch.full((VOCAB,), -1e9, dtype=torch.float64)
    others = [t for t in range(VOCAB - 2) if t != token][:spread]
    if conf >= 1.0:
        out[token] = 0.0
        return out
    rest = (1.0 - conf) / spread
    if rest >= conf:
        raise ValueError(f"conf={conf} is not the argmax with spread={spread}")
    out[others] = 0.0
    out[token] = math.log(conf) - math.log(rest)
    return out


def entropy_of(conf: float, spread: int = VOCAB - 3) -> float:
    """Entropy (nats) of the distribution `scripted_logits(., conf, spread)` describes."""
    rest = (1.0 - conf) / spread
    return -conf * math.log(conf) - (spread * rest * math.log(rest) if rest > 0 else 0.0)


def table_script(tables: dict[tuple[int, ...], Sequence[tuple[int, float]]]) -> Script:
    """Context-free script: per prompt, a (token, conf) for each generation position."""

    def script(prompt: tuple[int, ...], g: int, seen: tuple[int, ...]) -> ScriptResult:
        return tables[prompt][g]

    return script


def prompt_tensor(*prompts: Sequence[int]) -> tuple[Tensor, Tensor]:
    """Left-padded batch of prompts and its attention mask."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), EOS, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(list(p))
        mask[i, width - len(p):] = 1
    return ids, mask
