"""Independent oracles for Dream, re-written from reading Dream's and Fast-dLLM's published code
(Dream-org `modeling_dream.py` / `generation_utils.py`, NVlabs/Fast-dLLM `dream/model/*.py`),
with none of the package's code.

- `naive_forward`: the Qwen2 math on a plain weight dict, returning *unshifted* logits (the
  shift is the caller's job, as in the published loops) and, like Fast-dLLM's Dream modeling,
  the K/V of every layer **before RoPE**. A prefix cache is concatenated in front of the window
  (queries rotated at the last W of the key positions); a dual cache is updated in place at
  `replace_position` and queries are rotated at the W positions ending at its last index. RoPE
  is re-applied to the whole key set on every call.
- `diffusion_generate`: Dream's sampling loop (`DreamGenerationMixin._sample`) for the
  algorithms origin / maskgit_plus / topk_margin / entropy.
- `fastdllm_block_generate`: Fast-dLLM's Dream block loop (`generation_utils_block._sample`).

Used by the tests at batch 1 (and greedy where the published behaviour is defined).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# --------------------------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------------------------


def _rms(x, w, eps):
    x32 = x.float()
    return w * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def _rot(t, positions, theta):
    """Rotate t [B, H, T, hd] at integer positions [T] (Qwen2: fp32 angles cast to t's dtype)."""
    hd = t.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64, device=t.device).float() / hd))
    ang = torch.outer(positions.to(t.device).float(), inv)
    ang = torch.cat([ang, ang], -1)
    cos, sin = ang.cos().to(t.dtype), ang.sin().to(t.dtype)
    x1, x2 = t[..., : hd // 2], t[..., hd // 2:]
    return t * cos + torch.cat([-x2, x1], -1) * sin


def naive_forward(sd, cfg, x, past_key_values=None, replace_position=None, position_ids=None, key_mask=None):
    """Unshifted logits [B, W, V] and the per-layer pre-RoPE (k, v) [B, L, kv_dim] it attended to.

    `position_ids` [W] and `key_mask` [B, W] (bool, keys only) are for full forwards of padded
    rows; the cached paths take neither (Fast-dLLM's Dream code does not either).
    """
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = cfg.hidden_size // nh
    h = F.embedding(x, sd["model.embed_tokens.weight"])
    b, t, _ = h.shape
    present = []
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        xn = _rms(h, sd[p + "input_layernorm.weight"], cfg.rms_norm_eps)
        q = xn @ sd[p + "self_attn.q_proj.weight"].T + sd[p + "self_attn.q_proj.bias"]
        k = xn @ sd[p + "self_attn.k_proj.weight"].T + sd[p + "self_attn.k_proj.bias"]
        v = xn @ sd[p + "self_attn.v_proj.weight"].T + sd[p + "self_attn.v_proj.bias"]
        if past_key_values is not None:
            pk, pv = past_key_values[i]
            if replace_position is None:
                k, v = torch.cat([pk, k], 1), torch.cat([pv, v], 1)
            else:  # in place, as Fast-dLLM's dual cache does
                idx = replace_position[0].nonzero().flatten()
                pk[:, idx], pv[:, idx] = k, v
                k, v = pk, pv
        present.append((k, v))
        key_len = k.shape[1]
        if replace_position is not None:
            end = int(replace_position[0].nonzero().max()) + 1
            q_pos = torch.arange(end - t, end)
        elif position_ids is not None:
            q_pos = position_ids
        else:
            q_pos = torch.arange(key_len - t, key_len)
        k_pos = position_ids if (position_ids is not None and past_key_values is None) else torch.arange(key_len)
        qh = _rot(q.view(b, t, nh, hd).transpose(1, 2), q_pos, cfg.rope_theta)
        kh = _rot(k.view(b, key_len, nkv, hd).transpose(1, 2), k_pos, cfg.rope_theta)
        vh = v.view(b, key_len, nkv, hd).transpose(1, 2)
        kh, vh = kh.repeat_interleave(nh // nkv, 1), vh.repeat_interleave(nh // nkv, 1)
        scores = (qh @ kh.transpose(-1, -2)) / math.sqrt(hd)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], float("-inf"))
        att = torch.softmax(scores, -1) @ vh
        h = h + att.transpose(1, 2).reshape(b, t, -1) @ sd[p + "self_attn.o_proj.weight"].T
        hn = _rms(h, sd[p + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
        gate, up = hn @ sd[p + "mlp.gate_proj.weight"].T, hn @ sd[p + "mlp.up_proj.weight"].T
        h = h + (F.silu(gate) * up) @ sd[p + "mlp.down_proj.weight"].T
    h = _rms(h, sd["model.norm.weight"], cfg.rms_norm_eps)
    return h @ sd["lm_head.weight"].T, present


def shift(logits):
    """Dream's shift: position i is scored by the output at i-1 (position 0 by its own)."""
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


# --------------------------------------------------------------------------------------------
# Dream's diffusion_generate
# --------------------------------------------------------------------------------------------


def _top_p(logits, top_p):
    ordered, order = torch.sort(logits, descending=True)
    cum = torch.cumsum(F.softmax(ordered, dim=-1), dim=-1)
    drop = cum > top_p
    drop[..., 1:] = drop[..., :-1].clone()  # keep the token that crosses the threshold
    drop[..., 0] = False
    remove = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order, drop)
    return logits.masked_fill(remove, torch.finfo(logits.dtype).min)


def _top_k(logits, top_k):
    kth = torch.topk(logits, min(top_k, logits.size(-1)))[0][..., -1, None]
    return logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)


def sample_tokens(logits, temperature=0.0, top_p=None, top_k=None, margin=False, neg_entropy=False):
    """(confidence, token) per row of logits [N, V], Dream's rules (confidence after filtering)."""
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = _top_p(logits, top_p)
    if top_k is not None:
        logits = _top_k(logits, top_k)
    probs = torch.softmax(logits, dim=-1)
    if temperature > 0:
        try:
            x0 = torch.distributions.Categorical(probs=probs).sample()
            conf = torch.gather(probs, -1, x0.unsqueeze(-1)).squeeze(-1)
        except Exception:  # the published code falls back to argmax on any sampling error
            conf, x0 = probs.max(dim=-1)
    else:
        conf, x0 = probs.max(dim=-1)
    if margin:
        top2 = torch.sort(probs, dim=-1, descending=True)[0]
        conf = top2[:, 0] - top2[:, 1]
    if neg_entropy:
        conf = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return conf, x0


def diffusion_generate(logits_fn, input_ids, *, mask_id, max_new_tokens, steps, eps=1e-3, alg="origin",
                       alg_temp=None, temperature=0.0, top_p=None, top_k=None, attention_mask=None):
    """Dream's `_sample` loop. `logits_fn(x, attention_mask_or_"full", tok_idx)` -> unshifted
    logits [B, L, V]. Randomness comes from the global RNG, as in the published code.
    Returns (x, nfe)."""
    x = F.pad(input_ids, (0, max_new_tokens), value=mask_id)
    if attention_mask is not None and bool((attention_mask == 0).any()):
        am = F.pad(attention_mask, (0, max_new_tokens), value=1)
        tok_idx = am.long().cumsum(-1) - 1
        tok_idx.masked_fill_(am == 0, 1)
        am = torch.logical_and(am.unsqueeze(1).unsqueeze(-2), am.unsqueeze(1).unsqueeze(-1))
    else:
        am, tok_idx = "full", None
    timesteps = torch.linspace(1, eps, steps + 1)
    nfe = 0
    for i in range(steps):
        mask_index = x == mask_id
        logits = shift(logits_fn(x, am, tok_idx))
        nfe += 1
        mask_logits = logits[mask_index]
        t, s = timesteps[i], timesteps[i + 1]
        if alg == "origin":
            p_transfer = 1 - s / t if i < steps - 1 else 1
            x0 = torch.zeros_like(x[mask_index]) + mask_id
            chosen = torch.rand(*x0.shape) < p_transfer
            _, x0[chosen] = sample_tokens(mask_logits[chosen], temperature=temperature, top_p=top_p, top_k=top_k)
            x[mask_index] = x0.clone()
            continue
        conf, x0 = sample_tokens(mask_logits, temperature, top_p=top_p, top_k=top_k,
                                 margin=alg == "topk_margin", neg_entropy=alg == "entropy")
        if alg not in ("maskgit_plus", "topk_margin", "entropy"):
            raise RuntimeError(f"unknown alg {alg}")
        num_mask = mask_index.sum() / mask_index.shape[0]  # averaged over the batch
        k = int(num_mask * (1 - s / t)) if i < steps - 1 else int(num_mask)
        full_conf = torch.full_like(x, -torch.inf, dtype=logits.dtype)
        full_conf[mask_index] = conf
        if k > 0:
            if alg_temp is None or alg_temp == 0:
                _, idx = torch.topk(full_conf, k)
            else:
                idx = torch.multinomial(F.softmax(full_conf / alg_temp, dim=-1), num_samples=k)
            x_ = torch.zeros_like(x) + mask_id
            x_[mask_index] = x0.clone()
            rows = torch.arange(x.size(0)).unsqueeze(1).expand_as(idx)
            x[rows, idx] = x_[rows, idx]
    return x, nfe


def naive_logits_fn(model):
    """`logits_fn` for `diffusion_generate` on a `DreamModel`'s weights through `naive_forward`
    (Dream's original modeling: position ids = tok_idx, pairwise padding mask)."""
    sd, cfg = model.state_dict(), model.config

    def fn(x, am, tok_idx):
        if tok_idx is None:
            return naive_forward(sd, cfg, x)[0]
        rows = []
        for b in range(x.shape[0]):  # row by row: the naive forward takes one position vector
            key_mask = am[b, 0].diagonal()[None]
            rows.append(naive_forward(sd, cfg, x[b:b + 1], position_ids=tok_idx[b], key_mask=key_mask)[0])
        return torch.cat(rows)

    return fn


# --------------------------------------------------------------------------------------------
# Fast-dLLM's Dream block / threshold / cache loop
# --------------------------------------------------------------------------------------------


def fastdllm_block_generate(model, input_ids, *, mask_id, gen_length, block_length, steps, threshold=0.9,
                            alg="confidence_threshold", dual_cache=False, eps=1e-3, alg_temp=None,
                            temperature=0.0, top_p=None, top_k=None):
    """Fast-dLLM's `generation_utils_block._sample` at batch 1 without padding, on `naive_forward`.
    Returns (x, nfe).

    Traps kept on purpose (they are in the published code):
    - every block starts with a full forward (which refills the cache) that commits the block's
      first slot unconditionally, from the correctly shifted full-canvas logits;
    - keys are cached before RoPE; RoPE is re-applied to every key on every call;
    - the shift is applied *inside the window* fed to the cached call, so the window's first
      slot is scored by its own output (harmless only because that slot was committed by the
      block's full forward);
    - any `alg` other than ``confidence_threshold`` runs the entropy rule with
      `steps / num_blocks` steps per block (timesteps from index 1; the block's full forward
      stands for step 0);
    - threshold mode: the most confident masked slot of the block is always committed, then
      every other one whose confidence is >= threshold; prefix mode scores the block plus
      everything after it and ignores what lies beyond the block;
    - the dual cache is updated in place with each block call's fresh K/V.
    """
    sd, cfg = model.state_dict(), model.config
    x = F.pad(input_ids, (0, gen_length), value=mask_id)
    prompt_len = input_ids.shape[1]
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    timesteps = torch.linspace(1, eps, steps_per_block + 1)
    nfe = 0
    for nb in range(num_blocks):
        start = prompt_len + nb * block_length
        end = start + block_length
        logits, past = naive_forward(sd, cfg, x)
        nfe += 1
        _, x0 = sample_tokens(shift(logits), temperature=temperature, top_p=top_p, top_k=top_k)
        x[:, start] = x0[:, start]
        if dual_cache:
            past = [(k.clone(), v.clone()) for k, v in past]
            replace = torch.zeros_like(x, dtype=torch.bool)
            replace[:, start:end] = True
        else:
            past = [(k[:, :start], v[:, :start]) for k, v in past]
        i = 1
        while True:
            lo_hi = (start, end) if dual_cache else (start, x.shape[1])
            window = x[:, lo_hi[0]:lo_hi[1]]
            mask_index = window == mask_id
            if dual_cache:
                logits, _ = naive_forward(sd, cfg, window, past_key_values=past, replace_position=replace)
            else:
                logits, _ = naive_forward(sd, cfg, window, past_key_values=past)
            nfe += 1
            logits = shift(logits)  # within the window
            if alg == "confidence_threshold":
                conf, x0 = sample_tokens(logits[mask_index], temperature=temperature, top_p=top_p, top_k=top_k)
                x_ = torch.zeros_like(window) + mask_id
                full_conf = torch.full_like(window, -torch.inf, dtype=logits.dtype)
                x_[mask_index] = x0.clone()
                full_conf[mask_index] = conf
                full_conf[:, block_length:] = -torch.inf
                n = int((x[:, start:end] == mask_id).sum())
                values, index = torch.topk(full_conf, n)
                transfer = torch.zeros_like(x_, dtype=torch.bool)
                transfer[0, index[0]] = True
                for k in range(1, n):
                    if values[0, k] < threshold:
                        transfer[0, index[0, k]] = False
                window[transfer] = x_[transfer]
            else:
                if i == steps_per_block:
                    break
                t, s = timesteps[i], timesteps[i + 1]
                mask_index[:, block_length:] = False
                conf, x0 = sample_tokens(logits[mask_index], temperature, top_p=top_p, top_k=top_k, neg_entropy=True)
                num_mask = mask_index.sum() / mask_index.shape[0]
                k = int(num_mask * (1 - s / t)) if i < steps_per_block - 1 else int(num_mask)
                full_conf = torch.full_like(window, -torch.inf, dtype=logits.dtype)
                full_conf[mask_index] = conf
                full_conf[:, block_length:] = -torch.inf
                if k > 0:
                    if alg_temp is None or alg_temp == 0:
                        _, idx = torch.topk(full_conf, k)
                    else:
                        idx = torch.multinomial(F.softmax(full_conf / alg_temp, dim=-1), num_samples=k)
                    x_ = torch.zeros_like(window) + mask_id
                    x_[mask_index] = x0.clone()
                    rows = torch.arange(x.size(0)).unsqueeze(1).expand_as(idx)
                    window[rows, idx] = x_[rows, idx]
                i += 1
            if int((x[:, start:end] == mask_id).sum()) == 0:
                break
    return x, nfe
