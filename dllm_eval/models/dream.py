"""Dream (Dream-org/Dream-v0-{Base,Instruct}-7B) in plain PyTorch, with the shared explicit KV cache.

One file, read top to bottom: config -> rotary embedding -> RMSNorm -> decoder layer -> model
(with the logit shift) -> loading and saving. Dream is a Qwen2.5 network trained as a mask
predictor: module names and config fields are exactly those of the hub checkpoint
(`model.layers.N.self_attn.q_proj.weight`, `num_hidden_layers`, ...), so `load_state_dict` takes
the hub safetensors shards unchanged and no `trust_remote_code` is needed.

Numerics follow Dream's remote code (Qwen2's):
- RMSNorm in fp32, cast back to the input dtype, then scaled by the weight;
- RoPE cos/sin computed in fp32 from `rope_theta` (1e6 for Dream-7B) and cast to the model
  dtype; the rotation itself runs in the model dtype (unlike LLaDA's fp32 rotation);
- q/k/v projections have biases, o_proj and the MLP have none; grouped-query attention;
- MLP `down_proj(silu(gate_proj(x)) * up_proj(x))`; untied `lm_head`;
- attention is bidirectional.

**The logit shift.** Dream kept Qwen's next-token head: the logit that scores position i is
computed from the hidden state at i-1 (position 0 uses its own). Dream's code applies
`cat([logits[:, :1], logits[:, :-1]])` to the output; here the same shift is applied to the
hidden states inside `forward`, so that callers always get logits[:, i] scoring window slot i,
as for LLaDA. Nothing outside this file knows about the shift. For a window of the canvas
(cached decoding) there are two conventions, chosen by `align`:

- ``"exact"`` (default): every slot is scored from the hidden state of the position just
  before it. When that position is not in the window (the window's first slot, or any slot of
  a non-contiguous window), it is run as an extra *read-only query*: its token is taken from
  the cache's token record, it attends to exactly the keys the window attends to, and its own
  fresh K/V is neither attended to nor written (the cache keeps what it had at that position).
  Window logits then equal the full forward's at the same positions.
- ``"fastdllm"``: Fast-dLLM's Dream cache path (`generation_utils_block.py`) applies the shift
  *inside the window it feeds*, so the window's first slot is scored from its own hidden state
  and slot j from slot j-1. Reproduced for parity with published numbers.

For a full forward (the window is the whole canvas) both are the same.

Differences from Dream's code that are deliberate:
- a key-padding mask (pad *queries* still attend to real keys, so no row is all-masked) and
  per-row RoPE positions counting real tokens only, so a left-padded batch decodes exactly like
  its rows one by one (Fast-dLLM's Dream modeling ignores the position ids it is given);
- keys are cached *rotated* (Fast-dLLM's Dream code caches them before RoPE and rotates the
  whole cache at every call): a position's rotation is the same computation either way, so the
  values are identical and each call rotates only its window.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dllm_eval.errors import UserError
from dllm_eval.models.cache import (
    ExtraQueries,
    KVCache,
    LayerKV,
    Window,
    canvas_positions,
    host_checks,
    per_row_inputs,
    resolve_window,
    take_positions,
)
from dllm_eval.models.checkpoint_io import (
    ConfigDict,
    default_dtype,
    load_weights,
    read_config_json,
    resolve_checkpoint,
    write_shards,
)
from dllm_eval.models.fusion import fusable, fuse_linears, projections_fused

# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------

# Dream-org/Dream-v0-Instruct-7B config.json (survey A.3: the Qwen2.5-7B geometry, Dream's ids).
DREAM_7B_CONFIG: dict[str, Any] = {
    "architectures": ["DreamModel"],
    "attention_dropout": 0.0,
    "auto_map": {
        "AutoConfig": "configuration_dream.DreamConfig",
        "AutoModel": "modeling_dream.DreamModel",
    },
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "mask_token_id": 151666,
    "max_position_embeddings": 131072,
    "max_window_layers": 28,
    "model_type": "Dream",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "pad_token_id": 151643,
    "rms_norm_eps": 1e-06,
    "rope_scaling": None,
    "rope_theta": 1000000.0,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.46.2",
    "use_cache": False,
    "use_sliding_window": False,
    "vocab_size": 152064,
}

# generation_config.json as the hub ships it (survey A.1); ids are replaced by the config's.
DREAM_GENERATION_CONFIG: dict[str, Any] = {
    "alg": "origin",
    "alg_temp": None,
    "bos_token_id": 151643,
    "eos_token_id": 151643,
    "eps": 0.001,
    "mask_token_id": None,
    "pad_token_id": 151643,
    "steps": 512,
    "temperature": 0.0,
    "top_k": None,
    "top_p": None,
    "transformers_version": "4.46.2",
}

ALIGNS = ("exact", "fastdllm")


@dataclass
class DreamConfig(ConfigDict):
    """The config.json fields the forward pass reads, under the checkpoint's own names; every
    other field is kept in `extra` (so a config we save is loadable by Dream's remote code).

    The properties (`n_layers`, `effective_n_kv_heads`, `head_dim`, ...) are the names the
    schedulers and `KVCache.for_model` use for every model family.
    """

    hidden_size: int = 3584
    intermediate_size: int = 18944
    num_hidden_layers: int = 28
    num_attention_heads: int = 28
    num_key_value_heads: int | None = 4
    vocab_size: int = 152064
    max_position_embeddings: int = 131072
    rope_theta: float = 1000000.0
    rope_scaling: dict[str, Any] | None = None
    rms_norm_eps: float = 1e-6
    hidden_act: str = "silu"
    tie_word_embeddings: bool = False
    use_sliding_window: bool = False
    mask_token_id: int = 151666
    pad_token_id: int = 151643
    bos_token_id: int | None = 151643
    eos_token_id: int = 151643
    extra: dict[str, Any] = field(default_factory=dict)

    # -- the family-independent names ---------------------------------------------------------
    @property
    def max_sequence_length(self) -> int:
        return self.max_position_embeddings

    @property
    def n_layers(self) -> int:
        return self.num_hidden_layers

    @property
    def n_heads(self) -> int:
        return self.num_attention_heads

    @property
    def effective_n_kv_heads(self) -> int:
        return self.num_key_value_heads if self.num_key_value_heads is not None else self.num_attention_heads

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def d_model(self) -> int:
        return self.hidden_size

    @property
    def padded_vocab(self) -> int:
        return self.vocab_size

    def validate(self) -> None:
        """Reject checkpoints whose architecture this file does not implement, with a clear reason."""
        problems = []
        if self.hidden_act != "silu":
            problems.append(f"hidden_act={self.hidden_act!r} (only 'silu' is implemented)")
        if self.rope_scaling is not None:
            problems.append(f"rope_scaling={self.rope_scaling!r} (only plain RoPE is implemented)")
        if self.use_sliding_window:
            problems.append("use_sliding_window=true (Dream attends to the whole canvas)")
        if self.tie_word_embeddings:
            problems.append("tie_word_embeddings=true (Dream's lm_head is untied)")
        if self.hidden_size % self.num_attention_heads:
            problems.append(f"hidden_size={self.hidden_size} is not divisible by num_attention_heads={self.num_attention_heads}")
        elif self.head_dim % 2:
            problems.append(f"head dim {self.head_dim} must be even for rotary embeddings")
        if self.num_attention_heads % self.effective_n_kv_heads:
            problems.append("num_attention_heads must be a multiple of num_key_value_heads")
        if problems:
            raise UserError("unsupported Dream config: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


@fusable
def rope_cos_sin(positions: Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """cos/sin of shape [B, 1, T, head_dim] for integer positions [B, T]: computed in fp32 and
    cast to the model dtype, as Qwen2's rotary embedding returns them."""
    exponent = torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.int64).float() / head_dim
    inv_freq = 1.0 / (theta ** exponent)
    freqs = positions.to(torch.float32)[..., None] * inv_freq  # [B, T, hd/2]
    angles = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, T, hd]
    return angles.cos().to(dtype), angles.sin().to(dtype)


@fusable
def apply_rope(t: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Half-rotation RoPE in t's dtype (Qwen2's `apply_rotary_pos_emb`)."""
    half = t.shape[-1] // 2
    rotated = torch.cat((-t[..., half:], t[..., :half]), dim=-1)
    return t * cos + rotated * sin


class DreamRMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.variance_epsilon = eps

    def forward(self, x: Tensor) -> Tensor:
        return dream_rms_norm(x, self.weight, self.variance_epsilon)


@fusable
def dream_rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    """Qwen2's RMSNorm: fp32 statistics, the weight applied after the cast back."""
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)


@fusable
def silu_gate(gate: Tensor, up: Tensor) -> Tensor:
    return F.silu(gate) * up


class DreamAttention(nn.Module):
    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        d, hd = config.hidden_size, config.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.effective_n_kv_heads, hd
        self.q_proj = nn.Linear(d, self.n_heads * hd, bias=True)
        self.k_proj = nn.Linear(d, self.n_kv_heads * hd, bias=True)
        self.v_proj = nn.Linear(d, self.n_kv_heads * hd, bias=True)
        self.o_proj = nn.Linear(self.n_heads * hd, d, bias=False)
        self.qkv: tuple[Tensor, Tensor | None] | None = None  # one matmul, once fused (compile=inductor)

    def forward(self, h: Tensor, cos_sin: tuple[Tensor, Tensor], attn_mask: Tensor | None,
                kv: LayerKV | None, n_extra: int) -> Tensor:
        """`h` holds `n_extra` read-only query rows first, then the window's rows; only the
        window's keys and values are seen by the attention and by the cache."""
        bsz, t, _ = h.shape
        if self.qkv is None or not projections_fused():
            q, k, v = self.q_proj(h), self.k_proj(h), self.v_proj(h)
        else:
            kv_width = self.n_kv_heads * self.head_dim
            q, k, v = F.linear(h, *self.qkv).split((self.n_heads * self.head_dim, kv_width, kv_width), dim=-1)
        q = q.view(bsz, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(bsz, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(bsz, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q = apply_rope(q, *cos_sin)
        k = apply_rope(k, *cos_sin)  # rotated once, at its own position, before caching
        k, v = k[:, :, n_extra:], v[:, :, n_extra:]
        if kv is not None:  # the cache decides which keys this window attends to
            k, v = kv(k, v)
        if self.n_kv_heads != self.n_heads:
            rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=False)
        return self.o_proj(att.transpose(1, 2).reshape(bsz, t, -1))


class DreamMLP(nn.Module):
    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        d, f = config.hidden_size, config.intermediate_size
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)
        self.gate_up: Tensor | None = None  # one matmul, once fused (compile=inductor)

    def forward(self, x: Tensor) -> Tensor:
        if self.gate_up is None or not projections_fused():
            gate, up = self.gate_proj(x), self.up_proj(x)
        else:
            gate, up = F.linear(x, self.gate_up).chunk(2, -1)
        return self.down_proj(silu_gate(gate, up))


class DreamDecoderLayer(nn.Module):
    """One Qwen2 decoder layer. Attribute names are the checkpoint's weight names."""

    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        self.self_attn = DreamAttention(config)
        self.mlp = DreamMLP(config)
        self.input_layernorm = DreamRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = DreamRMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x: Tensor, cos_sin: tuple[Tensor, Tensor], attn_mask: Tensor | None,
                kv: LayerKV | None, n_extra: int) -> Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos_sin, attn_mask, kv, n_extra)
        return x + self.mlp(self.post_attention_layernorm(x))


class DreamBaseModel(nn.Module):
    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DreamDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.norm = DreamRMSNorm(config.hidden_size, config.rms_norm_eps)


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class DreamModel(nn.Module):
    """Dream mask predictor. `forward` returns logits for a window of the canvas, aligned so that
    logits[:, i] scores the token at window slot i (the shift is applied here).

    Args of `forward`:
        input_ids: [B, W] tokens of the window.
        window: positions of the window in the canvas, a 1-D increasing LongTensor; defaults to
            ``arange(W)`` (the window is the whole canvas). Other windows need a cache. Or per
            row, [B, W] (``attend="cache"``, ``align="exact"``): each row's own positions, for
            rows whose windows diverge, with `window_valid` [B, W] marking the real entries
            (padding to a common W is run but neither seen by other queries nor written).
        attention_mask: [B, L] 1 for real tokens, 0 for left padding, over the whole canvas
            (or the window, when there is no cache). None means no padding.
        cache, attend, write: see `KVCache`. A write also records the window's tokens in
            `cache.tokens` (``align="exact"`` reads the token before the window from there).
        logits_positions: optional slice of the window for which to compute logits, or [B, K]
            window entries per row.
        align: ``"exact"`` or ``"fastdllm"``; see the module docstring.
        extra: `ExtraQueries` appended to a full forward without a cache; their logits follow
            the window's (``logits[:, -E:]``). Extra j is scored, like a canvas slot, from the
            state one position earlier: a read-only query carrying the canvas token at
            ``positions[j] - 1`` there, with extra j's mask (so its own twin stays hidden).
    """

    def __init__(self, config: DreamConfig) -> None:
        super().__init__()
        self.config = config
        self.model = DreamBaseModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

    def fuse_projections(self) -> None:
        """Let q/k/v and gate/up run as one matmul each (`fusion.fuse_linears`), inside
        `fusion.enabled()` (compile=inductor); elsewhere the separate layers run, on the same
        storage. Idempotent. (Dream's tensor-window forward reads shapes on the host, so those
        calls stay eager under graphs: no ``graph_tensor_windows``.)"""
        for layer in self.model.layers:
            attn, mlp = layer.self_attn, layer.mlp
            if attn.qkv is not None:
                continue
            attn.qkv = fuse_linears(attn.q_proj, attn.k_proj, attn.v_proj)
            mlp.gate_up, _ = fuse_linears(mlp.gate_proj, mlp.up_proj)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.embed_tokens.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.embed_tokens.weight.device

    def forward(
        self,
        input_ids: Tensor,
        *,
        window: Window | None = None,
        window_valid: Tensor | None = None,
        attention_mask: Tensor | None = None,
        cache: KVCache | None = None,
        attend: str = "window",
        write: bool = False,
        logits_positions: slice | Tensor | None = None,
        align: str = "exact",
        extra: ExtraQueries | None = None,
    ) -> Tensor:
        if isinstance(window, Tensor) and window.dim() == 2:
            if align != "exact":
                raise ValueError("a per-row window ([B, W]) is scored with align='exact' only")
            return self._forward_per_row(input_ids, window, window_valid, attention_mask, cache, attend, write,
                                      logits_positions)
        bsz, width = input_ids.shape
        device = input_ids.device
        if attend not in ("window", "prefix", "cache"):
            raise ValueError(f"attend must be 'window', 'prefix' or 'cache', got {attend!r}")
        if align not in ALIGNS:
            raise ValueError(f"align must be one of {ALIGNS}, got {align!r}")
        if cache is None and (attend != "window" or write):
            raise ValueError("attend='prefix'/'cache' and write=True need a KVCache")
        window, span = resolve_window(window, width, device)
        # the window is positions 0..W-1 (the canvas, or its start): slot 0 has no predecessor
        whole = span == range(width) if span is not None else torch.equal(window.cpu(), torch.arange(width))
        if cache is None and not whole:
            raise ValueError("a window other than the whole canvas needs a KVCache (it holds the context)")

        # Which hidden state scores each slot: slot j of the window is scored from the hidden
        # state at position window[j] - 1 (position 0: its own). Positions not in the window are
        # run as extra read-only queries ("exact"); "fastdllm" shifts within the window.
        # `source` (rows of the hidden states, extras first) is a slice where the layout allows,
        # so a contiguous window (a `range`) needs no device read and no host-to-device copy.
        source: slice | list[int]
        in_window_shift = align == "fastdllm" or whole  # slot 0 keeps its own state
        if in_window_shift:
            extra_t, source = None, [0, *range(width - 1)]
        elif span is not None:  # a contiguous window: one extra query, at its first position - 1
            extra_t, source = window[:1] - 1, slice(0, width)
        else:  # any increasing window: an extra query before every slot whose predecessor is absent
            pos_list = window.tolist()
            present = set(pos_list)
            before = sorted({p - 1 for p in pos_list if p > 0 and p - 1 not in present})
            row_of = {p: len(before) + j for j, p in enumerate(pos_list)}
            row_of.update({p: j for j, p in enumerate(before)})
            source = [row_of[p - 1] if p > 0 else row_of[p] for p in pos_list]
            extra_t = torch.tensor(before, device=device) if before else None
        n_extra = 0 if extra_t is None else extra_t.shape[0]

        ids = input_ids
        if extra_t is not None:
            extra_ids = cache.tokens[:, extra_t]
            if host_checks(device) and bool((extra_ids < 0).any()):
                raise ValueError(
                    "align='exact' needs the tokens just before the window's slots from the cache, but they were "
                    "never written: fill the cache with a full forward (write=True) first")
            ids = torch.cat((extra_ids, input_ids), dim=1)
            q_window = torch.cat((extra_t, window))
        else:
            q_window = window

        # Positions: per-row RoPE positions count real tokens only (left padding gets position 0).
        canvas_len = cache.length if cache is not None else width
        canvas_pos, key_valid, k_valid = canvas_positions(attention_mask, window, attend, canvas_len, bsz, device,
                                                          window_start=None if span is None else span.start)
        q_pos = canvas_pos[:, q_window]
        attn_mask = None if k_valid is None else k_valid[:, None, None, :]
        if extra is not None:  # rows: read-only scorers of the extras, the canvas, the extras
            if cache is not None:
                raise ValueError("extra queries run in a full forward without a KVCache")
            prev = (extra.positions - 1).clamp(min=0)  # the state one position earlier scores a slot
            ids = torch.cat((input_ids.gather(1, prev), input_ids, extra.ids), dim=1)
            q_pos = torch.cat((canvas_pos.gather(1, prev), q_pos, canvas_pos.gather(1, extra.positions)), dim=1)
            full = extra.attention(key_valid)
            attn_mask = torch.cat((full[:, :, width:], full), dim=2)  # a scorer sees what its extra sees
            n_extra = extra.ids.shape[1]
            source = [n_extra + j for j in source]  # (no cache here: source was the in-window shift list)
        cos_sin = rope_cos_sin(q_pos, self.config.head_dim, self.config.rope_theta, self.dtype)

        x = self.model.embed_tokens(ids)
        for i, layer in enumerate(self.model.layers):
            kv = cache.layer_view(i, window, attend, write, None if span is None else span.start, span) \
                if cache is not None else None
            x = layer(x, cos_sin, attn_mask, kv, n_extra)
        if cache is not None and write:
            cache.mark_written(window, input_ids)

        x_extra = x[:, :n_extra]
        if isinstance(source, slice):
            x = x[:, source]
        elif in_window_shift and extra is None:  # the in-window shift, as two slices
            x = torch.cat((x[:, :1], x[:, : width - 1]), dim=1)
        else:
            x = x[:, torch.tensor(source, device=device)]
        if logits_positions is not None:
            x = x[:, logits_positions]
        if extra is not None:
            x = torch.cat((x, x_extra), dim=1)
        return self.lm_head(self.model.norm(x))

    def _forward_per_row(self, input_ids: Tensor, window: Tensor, window_valid: Tensor | None,
                      attention_mask: Tensor | None, cache: KVCache | None, attend: str, write: bool,
                      logits_positions: slice | Tensor | None) -> Tensor:
        """`forward` for a per-row window [B, W], ``align="exact"``: as for a 1-D window, each
        valid slot is scored from the hidden state one position earlier, which is its own row's
        slot there if that position is in the row's window, else a read-only extra query carrying
        the cached token there. Rows have different numbers of extras; padding extras (at
        position 0) are run and ignored. Slot 0 scores itself (nothing precedes it)."""
        valid, canvas_pos, attn_mask = per_row_inputs(window, window_valid, attention_mask, cache, attend)
        bsz, width = window.shape
        length, device = cache.length, window.device
        prev = (window - 1).clamp(min=0)
        rows = torch.arange(bsz, device=device)[:, None]
        in_window = torch.zeros(bsz, length + 1, dtype=torch.bool, device=device)
        in_window[rows, torch.where(valid, window, length)] = True  # column `length`: a bin for padding
        need = valid & (window > 0) & ~in_window.gather(1, prev)
        n_extra = int(need.sum(dim=1).max())  # a shape: read on the host (per-row windows are not captured)
        extras = torch.where(need, prev, length).sort(dim=1).values[:, :n_extra]  # increasing; `length` pads
        extra_ok = extras < length
        extras = torch.where(extra_ok, extras, 0)
        extra_ids = cache.tokens.gather(1, extras)
        if bool((extra_ids[extra_ok] < 0).any()):
            raise ValueError("align='exact' needs the tokens just before the window's slots from the cache, but they "
                             "were never written: fill the cache with a full forward (write=True) first")
        # where each position's state is: the row's window slot there, else its extra there
        state_at = torch.zeros(bsz, length + 1, dtype=torch.long, device=device)
        state_at[rows, torch.where(extra_ok, extras, length)] = torch.arange(n_extra, device=device)
        state_at[rows, torch.where(valid, window, length)] = n_extra + torch.arange(width, device=device)
        source = torch.where(window > 0, state_at.gather(1, prev), n_extra + torch.arange(width, device=device))

        q_pos = canvas_pos.gather(1, torch.cat((extras, window), dim=1))
        cos_sin = rope_cos_sin(q_pos, self.config.head_dim, self.config.rope_theta, self.dtype)
        x = self.model.embed_tokens(torch.cat((extra_ids.clamp(min=0), input_ids), dim=1))
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos_sin, attn_mask, cache.rows_view(i, window, valid, write), n_extra)
        if write:
            cache.mark_written_rows(window, valid, input_ids)
        x = x.gather(1, source[:, :, None].expand(-1, -1, x.shape[2]))  # the shift
        return self.lm_head(self.model.norm(take_positions(x, logits_positions)))


# --------------------------------------------------------------------------------------------
# Loading and saving in Dream's on-disk format
# --------------------------------------------------------------------------------------------



def load_config(path: str | os.PathLike) -> DreamConfig:
    raw = read_config_json(path)
    if raw.get("model_type") != "Dream":
        raise UserError(f"{Path(path) / 'config.json'}: model_type={raw.get('model_type')!r}; "
                        "this loader reads Dream checkpoints")
    return DreamConfig.from_dict(raw)


def load_dream(
    pretrained: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> DreamModel:
    """Load a Dream checkpoint (local dir or hub id) into `DreamModel`, strictly by weight name,
    without running the checkpoint's remote code."""
    path = resolve_checkpoint(pretrained)
    config = load_config(path)
    with torch.device("meta"):
        model = DreamModel(config)
    load_weights(model, path, "Dream", device, dtype or default_dtype(device))
    return model.eval().requires_grad_(False)


def weight_shapes(config: DreamConfig) -> dict[str, tuple[int, ...]]:
    """Every checkpoint tensor name and shape: embedding, layers, final norm, head."""
    d, v, f = config.hidden_size, config.vocab_size, config.intermediate_size
    q, kv = config.n_heads * config.head_dim, config.effective_n_kv_heads * config.head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (v, d)}
    for i in range(config.num_hidden_layers):
        b = f"model.layers.{i}."
        shapes.update({
            b + "input_layernorm.weight": (d,),
            b + "self_attn.q_proj.weight": (q, d), b + "self_attn.q_proj.bias": (q,),
            b + "self_attn.k_proj.weight": (kv, d), b + "self_attn.k_proj.bias": (kv,),
            b + "self_attn.v_proj.weight": (kv, d), b + "self_attn.v_proj.bias": (kv,),
            b + "self_attn.o_proj.weight": (d, q),
            b + "post_attention_layernorm.weight": (d,),
            b + "mlp.gate_proj.weight": (f, d), b + "mlp.up_proj.weight": (f, d), b + "mlp.down_proj.weight": (d, f),
        })
    shapes["model.norm.weight"] = (d,)
    shapes["lm_head.weight"] = (v, d)
    return shapes


def parameter_count(config: DreamConfig) -> int:
    return sum(math.prod(s) for s in weight_shapes(config).values())


def write_checkpoint(
    config: DreamConfig,
    tensors: Iterable[tuple[str, Tensor]],
    out_dir: str | os.PathLike,
    dtype: torch.dtype = torch.bfloat16,
    max_shard_bytes: int = 5 * 1024**3,
    extra_config: dict[str, Any] | None = None,
) -> list[Path]:
    """Write config.json (every field of the hub's, `auto_map` included), generation_config.json
    and safetensors shards with an index."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = write_shards(tensors, out, dtype, max_shard_bytes)
    cfg = {**DREAM_7B_CONFIG, **config.to_dict(), **(extra_config or {})}
    cfg["torch_dtype"] = str(dtype).removeprefix("torch.")
    (out / "config.json").write_text(json.dumps(dict(sorted(cfg.items())), indent=2) + "\n")
    gen_cfg = {**DREAM_GENERATION_CONFIG, "bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"],
               "pad_token_id": cfg["pad_token_id"], "mask_token_id": cfg["mask_token_id"]}
    (out / "generation_config.json").write_text(json.dumps(gen_cfg, indent=2) + "\n")
    return files


def save_dream(model: DreamModel, out_dir: str | os.PathLike, **kwargs: Any) -> list[Path]:
    """Save a model in Dream's on-disk format (see `write_checkpoint` for the options)."""
    state = model.state_dict()
    order = [n for n in weight_shapes(model.config) if n in state]
    return write_checkpoint(model.config, ((n, state[n]) for n in order), out_dir, **kwargs)


def random_tensors(config: DreamConfig, seed: int, std: float = 0.02) -> Iterator[tuple[str, Tensor]]:
    """Random weights by name: N(0, std) (biases included), residual output projections scaled
    by 1/sqrt(2*n_layers), norms at one. Generated one tensor at a time."""
    gen = torch.Generator().manual_seed(seed)
    residual_std = std / math.sqrt(2 * config.num_hidden_layers)
    for name, shape in weight_shapes(config).items():
        if name.endswith("norm.weight"):
            yield name, torch.ones(shape)
        elif name.endswith(("o_proj.weight", "down_proj.weight")):
            yield name, torch.randn(shape, generator=gen) * residual_std
        else:
            yield name, torch.randn(shape, generator=gen) * std


def build_model(config: DreamConfig, seed: int = 0, device: str = "cpu", dtype: torch.dtype = torch.float32,
                std: float = 0.02) -> DreamModel:
    """A randomly initialised model in memory (tests and training start from this)."""
    with torch.device("meta"):
        model = DreamModel(config)
    model.load_state_dict(dict(random_tensors(config, seed, std)), assign=True, strict=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


__all__: Sequence[str] = [
    "ALIGNS",
    "DREAM_7B_CONFIG",
    "DREAM_GENERATION_CONFIG",
    "DreamConfig",
    "DreamModel",
    "KVCache",
    "build_model",
    "load_config",
    "load_dream",
    "parameter_count",
    "random_tensors",
    "save_dream",
    "weight_shapes",
    "write_checkpoint",
]
