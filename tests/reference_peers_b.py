"""Independent oracles for the WINO and Prophet plug-ins, re-written from reading the authors' code
(Feng-Hong/WINO-DLLM `LLaDA/decoding.py::decoding_wino`; pixeli99/Prophet
`generate_earlyexit.py::generate`), with none of the package's code.

- `llada_masked_forward` / `dream_masked_forward`: one row's forward with an explicit
  [T, T] attention mask and explicit RoPE positions (what the authors' WINO passes to its model),
  on a plain weight dict; Dream's logits are returned *unshifted* (row i scores i + 1);
- `wino_generate`: the official loop, shadow block appended to the input, batch 1, greedy;
- `prophet_generate`: the official LLaDA loop with the early-exit check, batch 1, greedy, with
  the answer window as a function of the canvas (the authors' fixed window is `fixed_window`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from tests.reference_dream import _rms as _dream_rms
from tests.reference_dream import _rot as _dream_rot
from tests.reference_impl import _rms, _rope, get_num_transfer_tokens, naive_forward


def _attend(q, k, v, allowed):
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), -1) @ v


def llada_masked_forward(sd, cfg, ids, pos, allowed):
    """Logits [T, V] of one row: tokens [T], RoPE positions [T], allowed[q, k] [T, T] bool."""
    pre = "model.transformer."
    h = F.embedding(ids[None], sd[pre + "wte.weight"])
    nh, hd = cfg.n_heads, cfg.d_model // cfg.n_heads
    for i in range(cfg.n_layers):
        p = f"{pre}blocks.{i}."
        xn = _rms(h, sd[p + "attn_norm.weight"], cfg.rms_norm_eps)
        t = xn.shape[1]
        q, k, v = ((xn @ sd[p + w].T).view(1, t, nh, hd).transpose(1, 2) for w in ("q_proj.weight", "k_proj.weight", "v_proj.weight"))
        att = _attend(_rope(q, pos, cfg.rope_theta), _rope(k, pos, cfg.rope_theta), v, allowed)
        h = h + att.transpose(1, 2).reshape(1, t, -1) @ sd[p + "attn_out.weight"].T
        hn = _rms(h, sd[p + "ff_norm.weight"], cfg.rms_norm_eps)
        h = h + (F.silu(hn @ sd[p + "ff_proj.weight"].T) * (hn @ sd[p + "up_proj.weight"].T)) @ sd[p + "ff_out.weight"].T
    return (_rms(h, sd[pre + "ln_f.weight"], cfg.rms_norm_eps) @ sd[pre + "ff_out.weight"].T)[0]


def dream_masked_forward(sd, cfg, ids, pos, allowed):
    """Unshifted Dream logits [T, V] of one row (row i is computed from the hidden state at i)."""
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = cfg.hidden_size // nh
    h = F.embedding(ids[None], sd["model.embed_tokens.weight"])
    t = h.shape[1]
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}.self_attn."
        xn = _dream_rms(h, sd[f"model.layers.{i}.input_layernorm.weight"], cfg.rms_norm_eps)
        q, k, v = (xn @ sd[p + f"{w}_proj.weight"].T + sd[p + f"{w}_proj.bias"] for w in "qkv")
        q = q.view(1, t, nh, hd).transpose(1, 2)
        k, v = (z.view(1, t, nkv, hd).transpose(1, 2).repeat_interleave(nh // nkv, 1) for z in (k, v))
        att = _attend(_dream_rot(q, pos, cfg.rope_theta), _dream_rot(k, pos, cfg.rope_theta), v, allowed)
        h = h + att.transpose(1, 2).reshape(1, t, -1) @ sd[p + "o_proj.weight"].T
        m = f"model.layers.{i}."
        hn = _dream_rms(h, sd[m + "post_attention_layernorm.weight"], cfg.rms_norm_eps)
        h = h + (F.silu(hn @ sd[m + "mlp.gate_proj.weight"].T) * (hn @ sd[m + "mlp.up_proj.weight"].T)) @ sd[m + "mlp.down_proj.weight"].T
    return (_dream_rms(h, sd["model.norm.weight"], cfg.rms_norm_eps) @ sd["lm_head.weight"].T)[0]


def wino_generate(sd, cfg, prompt, gen_length, block_length, mask_id, threshold=0.6, threshold_back=0.9):
    """`decoding_wino` (greedy, batch 1). Returns (canvas [1, P+G], NFE, number of re-masks)."""
    plen = prompt.shape[1]
    x = torch.full((1, plen + gen_length + block_length), mask_id, dtype=torch.long)
    x[:, :plen] = prompt
    nfe, remasks, total = 0, 0, x.shape[1]
    for b in range(gen_length // block_length):
        s, e = plen + b * block_length, plen + (b + 1) * block_length
        mask_block = x == mask_id
        mask_block[:, e:] = False
        unmask = torch.zeros_like(mask_block)
        unmask[:, -block_length:] = ~mask_block[:, s:e]
        pos = torch.cat([torch.arange(plen + gen_length), torch.arange(s, e)])
        allowed = torch.ones(total, total, dtype=torch.bool)
        allowed[:, -block_length:] = False
        allowed[-block_length:, -block_length:] = True
        allowed[-block_length:, s:e] = ~torch.eye(block_length, dtype=torch.bool)
        last_accept = 30
        while mask_block.any():
            max_accept = min(max(int(mask_block.sum() * 0.7), 5), 20)
            logits = llada_masked_forward(sd, cfg, x[0], pos, allowed)[None]
            nfe += 1
            x0 = logits.argmax(-1)
            shifted = torch.zeros_like(unmask)
            shifted[:, s:e] = unmask[:, -block_length:]
            x0[unmask] = x[shifted]
            x0_p = F.softmax(logits.double(), -1).gather(-1, x0[..., None]).squeeze(-1)
            x0 = torch.where(mask_block, x0, x)
            conf = torch.where(mask_block, x0_p, -math.inf)
            conf_back = torch.where(unmask, x0_p, math.inf)
            transfer = conf > threshold
            if transfer.sum() > max_accept:
                transfer = torch.zeros_like(transfer)
                transfer.view(-1)[torch.topk(conf, k=max_accept).indices] = True
            elif not transfer.any():
                transfer.view(-1)[torch.argmax(conf)] = True
            x[transfer] = x0[transfer]
            accepted = int(transfer.sum())
            remask = torch.zeros_like(transfer)
            if accepted > 1:
                remask = conf_back < threshold_back
                if remask.sum() >= last_accept:
                    remask = torch.zeros_like(remask)
                    remask.view(-1)[torch.topk(conf_back.view(-1), k=last_accept - 1, largest=False).indices] = True
            remask_canvas = torch.zeros_like(remask)
            remask_canvas[:, s:e] = remask[:, -block_length:]
            x[remask_canvas] = mask_id
            remasks += int(remask_canvas.sum())
            mask_block[transfer] = False
            mask_block[remask_canvas] = True
            transfer_shadow = torch.zeros_like(transfer)
            transfer_shadow[:, -block_length:] = transfer[:, s:e]
            unmask[transfer_shadow] = True
            unmask[remask] = False
            last_accept = accepted
    return x[:, :plen + gen_length], nfe, remasks


def fixed_window(start, length):
    """The authors' window: `length` positions from generation offset `start`, decoded or not."""
    return lambda x, plen: list(range(plen + start, min(x.shape[1], plen + start + length)))


def prophet_generate(sd, cfg, prompt, steps, gen_length, block_length, mask_id, window,
                     thresholds=(7.5, 5.0, 2.5)):
    """Prophet's `generate` (greedy, batch 1, no constraints). `window(x, plen)` -> the absolute
    positions whose top-1 - top-2 logit gap is averaged. Returns (canvas, NFE, exit step or None)."""
    plen = prompt.shape[1]
    x = torch.full((1, plen + gen_length), mask_id, dtype=torch.long)
    x[:, :plen] = prompt
    per_block = steps // (gen_length // block_length)
    step = 0
    for b in range(gen_length // block_length):
        s, e = plen + b * block_length, plen + (b + 1) * block_length
        quota = get_num_transfer_tokens(x[:, s:e] == mask_id, per_block)
        for i in range(per_block):
            step += 1
            mask_index = x == mask_id
            logits, _ = naive_forward(sd, cfg, x)
            x0 = logits.argmax(-1)
            x0_p = F.softmax(logits, -1).gather(-1, x0[..., None]).squeeze(-1)
            gaps = []
            for q in window(x, plen):
                top2 = torch.topk(logits[:, q, :], k=2, dim=-1).values
                gaps.append((top2[0, 0] - top2[0, 1]).item())
            if gaps:
                gap, progress = sum(gaps) / len(gaps), step / steps
                limit = thresholds[0] if progress < 0.33 else thresholds[1] if progress < 0.67 else thresholds[2]
                if gap >= limit:
                    x[mask_index] = x0[mask_index]
                    return x, step, step
            x0_p[:, e:] = -math.inf
            x0 = torch.where(mask_index, x0, x)
            conf = torch.where(mask_index, x0_p, -math.inf)
            k = int(quota[0, i])
            if k > 0:
                x[0, torch.topk(conf[0], k=k).indices] = x0[0, torch.topk(conf[0], k=k).indices]
    return x, steps, None
