"""LLaDA in plain PyTorch, with an explicit KV cache for block-wise diffusion decoding.

One file, read top to bottom: config -> rotary embedding -> RMSNorm -> block -> model ->
KV cache -> loading and saving. Module names and config fields are exactly those of the
`GSAI-ML/LLaDA-8B-Instruct` checkpoint (`model.transformer.blocks.N.q_proj.weight`, ...), so
`load_state_dict` takes the hub safetensors shards unchanged and no `trust_remote_code` is needed.

Numerics follow LLaDA's remote code (reference sections 3.3-3.5):
- RMSNorm is computed in fp32, cast back to the input dtype, then scaled by the weight;
- RoPE rotates the full head dim in two contiguous halves, in fp32, with `rope_theta`;
- the MLP is `ff_out(silu(ff_proj(x)) * up_proj(x))` (ff_proj is the gate);
- attention is bidirectional; the head (`transformer.ff_out`) is untied; nothing has a bias.

Differences that are deliberate:
- a real key-padding mask, and per-row RoPE positions that start at each row's first real token,
  so a left-padded batch decodes exactly like its rows one by one (LLaDA's code attends to pads);
- keys are cached *rotated* (Fast-dLLM caches them un-rotated and rotates the whole cache at
  every use): a position's rotation never changes within a canvas, so the result is the same
  and each step rotates only its window.
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

LLADA_8B_CONFIG: dict[str, Any] = {
    "activation_type": "silu",
    "alibi": False,
    "alibi_bias_max": 8.0,
    "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0,
    "attention_layer_norm": False,
    "attention_layer_norm_with_affine": True,
    "auto_map": {
        "AutoConfig": "configuration_llada.LLaDAConfig",
        "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
        "AutoModel": "modeling_llada.LLaDAModelLM",
    },
    "bias_for_layer_norm": False,
    "block_group_size": 1,
    "block_type": "llama",
    "d_model": 4096,
    "embedding_dropout": 0.0,
    "embedding_size": 126464,
    "eos_token_id": 126081,
    "flash_attention": False,
    "include_bias": False,
    "include_qkv_bias": False,
    "init_cutoff_factor": None,
    "init_device": "meta",
    "init_fn": "mitchell",
    "init_std": 0.02,
    "input_emb_norm": False,
    "layer_norm_type": "rms",
    "layer_norm_with_affine": True,
    "mask_token_id": 126336,
    "max_sequence_length": 4096,
    "mlp_hidden_size": 12288,
    "mlp_ratio": 4,
    "model_type": "llada",
    "multi_query_attention": None,
    "n_heads": 32,
    "n_kv_heads": 32,
    "n_layers": 32,
    "pad_token_id": 126081,
    "precision": "amp_bf16",
    "residual_dropout": 0.0,
    "rms_norm_eps": 1e-05,
    "rope": True,
    "rope_full_precision": True,
    "rope_theta": 500000.0,
    "scale_logits": False,
    "transformers_version": "4.46.3",
    "use_cache": False,
    "vocab_size": 126464,
    "weight_tying": False,
}


@dataclass
class LLaDAConfig(ConfigDict):
    """The config.json fields the forward pass reads; every other field is kept in `extra`.

    Field names are the checkpoint's own. `extra` round-trips unknown fields so that a config
    we save is loadable by LLaDA's remote code too.
    """

    d_model: int = 4096
    n_heads: int = 32
    n_kv_heads: int | None = 32
    n_layers: int = 32
    mlp_hidden_size: int | None = 12288
    mlp_ratio: int = 4
    vocab_size: int = 126464
    embedding_size: int | None = 126464
    max_sequence_length: int = 4096
    rope_theta: float = 500000.0
    rms_norm_eps: float = 1e-5
    activation_type: str = "silu"
    block_type: str = "llama"
    layer_norm_type: str = "rms"
    weight_tying: bool = False
    include_bias: bool = False
    include_qkv_bias: bool = False
    rope: bool = True
    alibi: bool = False
    multi_query_attention: bool | None = None
    scale_logits: bool = False
    input_emb_norm: bool = False
    attention_layer_norm: bool = False
    mask_token_id: int = 126336
    eos_token_id: int = 126081
    pad_token_id: int = 126081
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def effective_n_kv_heads(self) -> int:
        if self.multi_query_attention:
            return 1
        return self.n_kv_heads if self.n_kv_heads is not None else self.n_heads

    @property
    def padded_vocab(self) -> int:
        return self.embedding_size or self.vocab_size

    @property
    def mlp_size(self) -> int:
        return self.mlp_hidden_size if self.mlp_hidden_size is not None else self.mlp_ratio * self.d_model

    def validate(self) -> None:
        """Reject checkpoints whose architecture this file does not implement, with a clear reason."""
        problems = []
        if self.block_type != "llama":
            problems.append(f"block_type={self.block_type!r} (only 'llama' is implemented)")
        if self.activation_type != "silu":
            problems.append(f"activation_type={self.activation_type!r} (only 'silu' is implemented)")
        if self.layer_norm_type != "rms":
            problems.append(f"layer_norm_type={self.layer_norm_type!r} (only 'rms')")
        if not self.rope or self.alibi:
            problems.append("rope must be true and alibi false")
        if self.weight_tying:
            problems.append("weight_tying=true (LLaDA's head is untied)")
        if self.include_bias or self.include_qkv_bias:
            problems.append("biases are not implemented")
        if self.scale_logits or self.input_emb_norm or self.attention_layer_norm:
            problems.append("scale_logits/input_emb_norm/attention_layer_norm must be false")
        if self.d_model % self.n_heads:
            problems.append(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.effective_n_kv_heads:
            problems.append("n_heads must be a multiple of n_kv_heads")
        if problems:
            raise UserError("unsupported LLaDA config: " + "; ".join(problems))


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


@fusable
def rope_cos_sin(positions: Tensor, head_dim: int, theta: float) -> tuple[Tensor, Tensor]:
    """cos/sin of shape [B, 1, T, head_dim] in fp32 for integer positions [B, T]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.to(torch.float32)[..., None] * inv_freq  # [B, T, hd/2]
    angles = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, T, hd]
    return angles.cos(), angles.sin()


@fusable
def apply_rope(t: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Half-rotation RoPE (GPT-NeoX style) computed in fp32, cast back to t's dtype."""
    t32 = t.float()
    half = t32.shape[-1] // 2
    rotated = torch.cat((-t32[..., half:], t32[..., :half]), dim=-1)
    return (t32 * cos + rotated * sin).to(t.dtype)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return rms_norm(x, self.weight, self.eps)


@fusable
def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
    # fp32 statistics, cast back *before* the weight multiply, as LLaDA's RMSLayerNorm does.
    x32 = x.float()
    normed = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return normed.to(x.dtype) * weight


@fusable
def silu_gate(gate: Tensor, up: Tensor) -> Tensor:
    return F.silu(gate) * up


class LLaDABlock(nn.Module):
    """One llama-type block. Attribute names are the checkpoint's weight names."""

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        d, kv = config.d_model, config.effective_n_kv_heads * config.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.effective_n_kv_heads, config.head_dim
        self.attn_norm = RMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, kv, bias=False)
        self.v_proj = nn.Linear(d, kv, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_norm = RMSNorm(d, config.rms_norm_eps)
        self.ff_proj = nn.Linear(d, config.mlp_size, bias=False)
        self.up_proj = nn.Linear(d, config.mlp_size, bias=False)
        self.ff_out = nn.Linear(config.mlp_size, d, bias=False)
        # q/k/v and gate/up as one matmul each, once `fuse_projections` ran (compile=inductor)
        self.qkv: Tensor | None = None
        self.gate_up: Tensor | None = None

    def fuse_projections(self) -> None:
        if self.qkv is None:
            self.qkv, _ = fuse_linears(self.q_proj, self.k_proj, self.v_proj)
            self.gate_up, _ = fuse_linears(self.ff_proj, self.up_proj)

    def forward(
        self,
        x: Tensor,
        cos_sin: tuple[Tensor, Tensor],
        attn_mask: Tensor | None,
        kv: LayerKV | None,
    ) -> Tensor:
        bsz, t, _ = x.shape
        h = self.attn_norm(x)
        if self.qkv is None or not projections_fused():
            q, k, v = self.q_proj(h), self.k_proj(h), self.v_proj(h)
        else:
            kv_width = self.n_kv_heads * self.head_dim
            q, k, v = F.linear(h, self.qkv).split((self.n_heads * self.head_dim, kv_width, kv_width), dim=-1)
        q = q.view(bsz, t, self.n_heads, self.head_dim).transpose(1, 2)
        k = k.view(bsz, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(bsz, t, self.n_kv_heads, self.head_dim).transpose(1, 2)
        # Keys are rotated at their own positions *before* caching, so cached keys are never
        # rotated again (a position's rotation never changes within a canvas).
        q = apply_rope(q, *cos_sin)
        k = apply_rope(k, *cos_sin)
        if kv is not None:  # the cache decides which keys this window attends to
            k, v = kv(k, v)
        if self.n_kv_heads != self.n_heads:
            rep = self.n_heads // self.n_kv_heads
            k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=False)
        x = x + self.attn_out(att.transpose(1, 2).reshape(bsz, t, -1))
        h = self.ff_norm(x)
        if self.gate_up is None or not projections_fused():
            gate, up = self.ff_proj(h), self.up_proj(h)
        else:
            gate, up = F.linear(h, self.gate_up).chunk(2, -1)
        return x + self.ff_out(silu_gate(gate, up))


class _Transformer(nn.Module):
    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.padded_vocab, config.d_model),
                "blocks": nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers)),
                "ln_f": RMSNorm(config.d_model, config.rms_norm_eps),
                "ff_out": nn.Linear(config.d_model, config.padded_vocab, bias=False),
            }
        )


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class LLaDAModelLM(nn.Module):
    """LLaDA mask predictor. `forward` returns logits for a window of the canvas.

    Args of `forward`:
        input_ids: [B, W] tokens of the window.
        window: positions of the window in the canvas: a 1-D LongTensor (contiguous or not,
            increasing) or, for a contiguous window, a `range` (known on the host: no device
            read, so the step can be captured as a CUDA graph); defaults to the whole canvas. Or
            per row, [B, W] (``attend="cache"`` only): each row's own positions, for rows whose
            windows diverge, with `window_valid` [B, W] marking the real entries (padding to a
            common W is run but neither seen by other queries nor written).
        attention_mask: [B, L] 1 for real tokens, 0 for left padding, over the whole canvas
            (or the window, when there is no cache). None means no padding.
        cache, attend, write: see `KVCache`.
        logits_positions: optional slice of the window for which to compute logits
            (the LM head over a 126k vocabulary is the largest matmul; skip what is not used),
            or [B, K] window entries per row.
        extra: `ExtraQueries` appended to a full forward without a cache; their logits follow
            the window's (``logits[:, -E:]``).
    """

    # `forward` with a tensor window never reads the device, so `models.graphs` may capture it
    graph_tensor_windows = True

    def __init__(self, config: LLaDAConfig) -> None:
        super().__init__()
        self.config = config
        self.model = _Transformer(config)

    def fuse_projections(self) -> None:
        """Let q/k/v and gate/up run as one matmul each (`fusion.fuse_linears`), inside
        `fusion.enabled()` (compile=inductor); elsewhere the separate layers run, on the same
        storage. Idempotent."""
        for block in self.model.transformer.blocks:
            block.fuse_projections()

    @property
    def dtype(self) -> torch.dtype:
        return self.model.transformer.wte.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.transformer.wte.weight.device

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
        extra: ExtraQueries | None = None,
    ) -> Tensor:
        if isinstance(window, Tensor) and window.dim() == 2:
            return self._forward_per_row(input_ids, window, window_valid, attention_mask, cache, attend, write,
                                      logits_positions)
        bsz, width = input_ids.shape
        device = input_ids.device
        window, span = resolve_window(window, width, device)
        start = None if span is None else span.start
        if attend not in ("window", "prefix", "cache"):
            raise ValueError(f"attend must be 'window', 'prefix' or 'cache', got {attend!r}")
        if cache is None and (attend != "window" or write):
            raise ValueError("attend='prefix'/'cache' and write=True need a KVCache")

        # Positions: per-row RoPE positions count real tokens only (left padding gets position 0).
        canvas_len = cache.length if cache is not None else width
        canvas_pos, key_valid, k_valid = canvas_positions(attention_mask, window, attend, canvas_len, bsz, device,
                                                          window_start=start)
        q_pos = canvas_pos[:, window]
        attn_mask = None if k_valid is None else k_valid[:, None, None, :]
        ids = input_ids
        if extra is not None:  # appended queries with their own mask (see ExtraQueries)
            if cache is not None:
                raise ValueError("extra queries run in a full forward without a KVCache")
            ids = torch.cat((input_ids, extra.ids), dim=1)
            q_pos = torch.cat((q_pos, canvas_pos.gather(1, extra.positions)), dim=1)
            attn_mask = extra.attention(key_valid)
        cos_sin = rope_cos_sin(q_pos, self.config.head_dim, self.config.rope_theta)

        tr = self.model.transformer
        x = tr.wte(ids)
        for i, block in enumerate(tr.blocks):
            kv = cache.layer_view(i, window, attend, write, start, span) if cache is not None else None
            x = block(x, cos_sin, attn_mask, kv)
        if cache is not None and write:
            cache.mark_written(window)
        x, x_extra = x[:, :width], x[:, width:]
        if logits_positions is not None:
            x = x[:, logits_positions]
        if extra is not None:
            x = torch.cat((x, x_extra), dim=1)
        return tr.ff_out(tr.ln_f(x))

    def _forward_per_row(self, input_ids: Tensor, window: Tensor, window_valid: Tensor | None,
                      attention_mask: Tensor | None, cache: KVCache | None, attend: str, write: bool,
                      logits_positions: slice | Tensor | None) -> Tensor:
        """`forward` for a per-row window [B, W] (see the class docstring)."""
        valid, canvas_pos, attn_mask = per_row_inputs(window, window_valid, attention_mask, cache, attend)
        cos_sin = rope_cos_sin(canvas_pos.gather(1, window), self.config.head_dim, self.config.rope_theta)
        tr = self.model.transformer
        x = tr.wte(input_ids)
        for i, block in enumerate(tr.blocks):
            x = block(x, cos_sin, attn_mask, cache.rows_view(i, window, valid, write))
        if write:
            cache.mark_written_rows(window, valid)
        return tr.ff_out(tr.ln_f(take_positions(x, logits_positions)))


# --------------------------------------------------------------------------------------------
# Loading and saving in LLaDA's on-disk format
# --------------------------------------------------------------------------------------------

def load_config(path: str | os.PathLike) -> LLaDAConfig:
    raw = read_config_json(path)
    model_type = raw.get("model_type")
    if model_type not in (None, "llada"):
        raise UserError(f"{Path(path) / 'config.json'}: model_type={model_type!r}; this loader reads LLaDA checkpoints")
    return LLaDAConfig.from_dict(raw)


def load_llada(
    pretrained: str | os.PathLike,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> LLaDAModelLM:
    """Load a LLaDA checkpoint (local dir or hub id) into `LLaDAModelLM`, strictly by weight name."""
    path = resolve_checkpoint(pretrained)
    config = load_config(path)
    with torch.device("meta"):
        model = LLaDAModelLM(config)
    load_weights(model, path, "LLaDA", device, dtype or default_dtype(device))
    return model.eval().requires_grad_(False)


def weight_shapes(config: LLaDAConfig) -> dict[str, tuple[int, ...]]:
    """Every checkpoint tensor name and shape, in the hub's shard order (embedding, blocks, head)."""
    d, v, f = config.d_model, config.padded_vocab, config.mlp_size
    kv = config.effective_n_kv_heads * config.head_dim
    shapes: dict[str, tuple[int, ...]] = {"model.transformer.wte.weight": (v, d)}
    for i in range(config.n_layers):
        b = f"model.transformer.blocks.{i}."
        shapes.update({
            b + "attn_norm.weight": (d,), b + "q_proj.weight": (d, d), b + "k_proj.weight": (kv, d),
            b + "v_proj.weight": (kv, d), b + "attn_out.weight": (d, d), b + "ff_norm.weight": (d,),
            b + "ff_proj.weight": (f, d), b + "up_proj.weight": (f, d), b + "ff_out.weight": (d, f),
        })
    shapes["model.transformer.ln_f.weight"] = (d,)
    shapes["model.transformer.ff_out.weight"] = (v, d)
    return shapes


def write_checkpoint(
    config: LLaDAConfig,
    tensors: Iterable[tuple[str, Tensor]],
    out_dir: str | os.PathLike,
    dtype: torch.dtype = torch.bfloat16,
    max_shard_bytes: int = 5 * 1024**3,
    extra_config: dict[str, Any] | None = None,
) -> list[Path]:
    """Write config.json, generation_config.json and safetensors shards with an index
    (`tensors` is consumed lazily; see `checkpoint_io.write_shards`)."""
    out = Path(out_dir)
    files = write_shards(tensors, out, dtype, max_shard_bytes)
    cfg = {**LLADA_8B_CONFIG, **config.to_dict(), **(extra_config or {})}
    cfg["torch_dtype"] = str(dtype).removeprefix("torch.")
    (out / "config.json").write_text(json.dumps(dict(sorted(cfg.items())), indent=2) + "\n")
    gen_cfg = {"bos_token_id": cfg.get("bos_token_id", 126080), "eos_token_id": cfg["eos_token_id"]}
    (out / "generation_config.json").write_text(json.dumps(gen_cfg, indent=2) + "\n")
    return files


def save_llada(model: LLaDAModelLM, out_dir: str | os.PathLike, **kwargs: Any) -> list[Path]:
    """Save a model in LLaDA's on-disk format (see `write_checkpoint` for the options)."""
    state = model.state_dict()
    order = [n for n in weight_shapes(model.config) if n in state]
    return write_checkpoint(model.config, ((n, state[n]) for n in order), out_dir, **kwargs)


def random_tensors(config: LLaDAConfig, seed: int, std: float = 0.02) -> Iterator[tuple[str, Tensor]]:
    """Random weights by name: N(0, std), residual output projections scaled by 1/sqrt(2*n_layers),
    norms at one. Generated one tensor at a time so any shape fits in memory."""
    gen = torch.Generator().manual_seed(seed)
    residual_std = std / math.sqrt(2 * config.n_layers)
    for name, shape in weight_shapes(config).items():
        if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
            yield name, torch.ones(shape)
        elif ".blocks." in name and name.endswith(("attn_out.weight", "ff_out.weight")):
            yield name, torch.randn(shape, generator=gen) * residual_std
        else:
            yield name, torch.randn(shape, generator=gen) * std


def parameter_count(config: LLaDAConfig) -> int:
    return sum(math.prod(s) for s in weight_shapes(config).values())


def build_model(config: LLaDAConfig, seed: int = 0, device: str = "cpu", dtype: torch.dtype = torch.float32,
                std: float = 0.02) -> LLaDAModelLM:
    """A randomly initialised model in memory (tests and training start from this)."""
    with torch.device("meta"):
        model = LLaDAModelLM(config)
    model.load_state_dict(dict(random_tensors(config, seed, std)), assign=True, strict=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


__all__: Sequence[str] = [
    "LLADA_8B_CONFIG",
    "KVCache",
    "LLaDAConfig",
    "LLaDAModelLM",
    "build_model",
    "default_dtype",
    "load_config",
    "load_llada",
    "parameter_count",
    "random_tensors",
    "resolve_checkpoint",
    "save_llada",
    "weight_shapes",
    "write_checkpoint",
]
