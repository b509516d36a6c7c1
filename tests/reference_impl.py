"""Independent oracles: LLaDA's and Fast-dLLM's algorithms re-written the way the reference code
is structured (reference brief sections 1-3), with none of the package's code.

- `naive_forward` is the remote modeling code's math on a plain weight dict, with its
  `past_key_values` / `replace_position` conventions (cat for the prefix cache, in-place
  replacement for the dual cache; queries positioned at the end of the keys, or ending at the
  last replaced index);
- `llada_generate`, `fastdllm_generate`, `fastdllm_prefix_cache`, `fastdllm_dual_cache` follow
  the June-2025 loops, with their NFE counting.

Used only by tests, at batch 1 and greedy, where the published algorithms are defined.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _rms(x, w, eps):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * w


def _rope(t, positions, theta):
    hd = t.shape[-1]
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    freqs = torch.outer(positions.float(), inv)
    emb = torch.cat([freqs, freqs], -1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]
    t32 = t.float()
    x1, x2 = t32[..., : hd // 2], t32[..., hd // 2:]
    return (t32 * cos + torch.cat([-x2, x1], -1) * sin).to(t.dtype)


def naive_forward(sd, cfg, x, past_key_values=None, replace_position=None):
    """Returns (logits, present) like LLaDAModelLM.forward(..., use_cache=True) in Fast-dLLM."""
    pre = "model.transformer."
    h = F.embedding(x, sd[pre + "wte.weight"])
    nh, hd = cfg.n_heads, cfg.d_model // cfg.n_heads
    present = []
    for i in range(cfg.n_layers):
        p = f"{pre}blocks.{i}."
        xn = _rms(h, sd[p + "attn_norm.weight"], cfg.rms_norm_eps)
        b, t, _ = xn.shape
        q = (xn @ sd[p + "q_proj.weight"].T).view(b, t, nh, hd).transpose(1, 2)
        k = (xn @ sd[p + "k_proj.weight"].T).view(b, t, nh, hd).transpose(1, 2)
        v = (xn @ sd[p + "v_proj.weight"].T).view(b, t, nh, hd).transpose(1, 2)
        if past_key_values is not None:
            pk, pv = past_key_values[i]
            if replace_position is None:
                k, v = torch.cat([pk, k], 2), torch.cat([pv, v], 2)
            else:
                idx = replace_position[0].nonzero().flatten()
                pk, pv = pk.clone(), pv.clone()
                pk[:, :, idx] = k[:, :, : len(idx)]
                pv[:, :, idx] = v[:, :, : len(idx)]
                k, v = pk, pv
        present.append((k, v))
        key_len, q_len = k.shape[2], q.shape[2]
        if replace_position is not None:
            end = int(replace_position[0].nonzero().max()) + 1
            q_pos = torch.arange(end - q_len, end)
        else:
            q_pos = torch.arange(key_len - q_len, key_len)
        qr, kr = _rope(q, q_pos, cfg.rope_theta), _rope(k, torch.arange(key_len), cfg.rope_theta)
        att = torch.softmax((qr @ kr.transpose(-1, -2)) / math.sqrt(hd), -1) @ v
        h = h + att.transpose(1, 2).reshape(b, t, -1) @ sd[p + "attn_out.weight"].T
        hn = _rms(h, sd[p + "ff_norm.weight"], cfg.rms_norm_eps)
        h = h + (F.silu(hn @ sd[p + "ff_proj.weight"].T) * (hn @ sd[p + "up_proj.weight"].T)) @ sd[p + "ff_out.weight"].T
    h = _rms(h, sd[pre + "ln_f.weight"], cfg.rms_norm_eps)
    return h @ sd[pre + "ff_out.weight"].T, present


def get_num_transfer_tokens(mask_index, steps):
    mask_num = mask_index.sum(dim=1, keepdim=True)
    base, rem = mask_num // steps, mask_num % steps
    out = torch.zeros(mask_num.size(0), steps, dtype=torch.int64) + base
    for i in range(mask_num.size(0)):
        out[i, : rem[i]] += 1
    return out


def _confidence(logits, x0, dtype):
    p = F.softmax(logits.to(dtype), dim=-1)
    return torch.gather(p, -1, x0.unsqueeze(-1)).squeeze(-1)


def _canvas(prompt, gen_length, block_length, steps, mask_id):
    """The reference's shared setup: masked canvas after the prompt, blocks, steps per block."""
    x = torch.full((1, prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, : prompt.shape[1]] = prompt
    num_blocks = gen_length // block_length
    return x, num_blocks, steps // num_blocks


def llada_generate(sd, cfg, prompt, steps, gen_length, block_length, mask_id, softmax_dtype=None,
                   logits_eos_inf=False, confidence_eos_eot_inf=False, eos_id=None, eot_id=None):
    """LLaDA generate.py (greedy): fixed steps per block, top-k of the linear schedule."""
    x, num_blocks, steps = _canvas(prompt, gen_length, block_length, steps, mask_id)
    nfe = 0
    for b in range(num_blocks):
        s, e = prompt.shape[1] + b * block_length, prompt.shape[1] + (b + 1) * block_length
        num_transfer = get_num_transfer_tokens(x[:, s:e] == mask_id, steps)
        for i in range(steps):
            mask_index = x == mask_id
            logits, _ = naive_forward(sd, cfg, x)
            nfe += 1
            if logits_eos_inf:
                logits[:, :, eos_id] = -torch.inf
            x0 = torch.argmax(logits, dim=-1)
            if confidence_eos_eot_inf:  # as shipped: only EOT's logit reaches the softmax
                logits[:, :, eot_id] = -torch.inf
            x0_p = _confidence(logits, x0, softmax_dtype or logits.dtype)
            x0_p[:, e:] = -math.inf
            x0 = torch.where(mask_index, x0, x)
            conf = torch.where(mask_index, x0_p, -math.inf)
            transfer = torch.zeros_like(x0, dtype=torch.bool)
            for j in range(conf.shape[0]):
                _, idx = torch.topk(conf[j], k=int(num_transfer[j, i]))
                transfer[j, idx] = True
            x[transfer] = x0[transfer]
    return x, nfe


def get_transfer_index(logits, mask_index, x, num_transfer_tokens, threshold=None):
    """June-2025 Fast-dLLM selection (float64 confidence; threshold keeps rank 0 always)."""
    x0 = torch.argmax(logits, dim=-1)
    x0_p = _confidence(logits, x0, torch.float64)
    x0 = torch.where(mask_index, x0, x)
    confidence = torch.where(mask_index, x0_p, -math.inf)
    transfer = torch.zeros_like(x0, dtype=torch.bool)
    if threshold is not None:
        num_transfer_tokens = mask_index.sum(dim=1, keepdim=True)
    for j in range(confidence.shape[0]):
        _, idx = torch.topk(confidence[j], k=int(num_transfer_tokens[j]))
        transfer[j, idx] = True
        if threshold is not None:
            for k in range(1, int(num_transfer_tokens[j])):
                if confidence[j, idx[k]] < threshold:
                    transfer[j, idx[k]] = False
    return x0, transfer


def get_transfer_index_dynamic(logits, mask_index, x, factor):
    x0 = torch.argmax(logits, dim=-1)
    x0_p = _confidence(logits, x0, torch.float64)
    x0 = torch.where(mask_index, x0, x)
    confidence = torch.where(mask_index, x0_p, -math.inf)
    transfer = torch.zeros_like(x0, dtype=torch.bool)
    for j in range(confidence.shape[0]):
        ns = list(range(1, int(mask_index[j].sum()) + 1))
        if not ns:
            continue
        es = [factor / (n + 1) for n in ns]
        thresholds = [1 - e for e in es]
        thresholds[0] = -1
        sorted_conf = torch.sort(confidence[j][mask_index[j]], dim=-1, descending=True)[0]
        top_i = 0
        for top_i in range(len(thresholds)):
            if sorted_conf[top_i] < thresholds[top_i]:
                break
        if top_i == 0 or top_i == len(thresholds) - 1:
            top_i += 1
        _, idx = torch.topk(confidence[j], k=top_i)
        transfer[j, idx] = True
    return x0, transfer


def _select(logits, mask_index, x, num_transfer, i, threshold, factor):
    if factor is not None:
        return get_transfer_index_dynamic(logits, mask_index, x, factor)
    k = num_transfer[:, i] if threshold is None else None
    return get_transfer_index(logits, mask_index, x, k, threshold)


def fastdllm_generate(sd, cfg, prompt, steps, gen_length, block_length, mask_id, threshold=None, factor=None):
    x, num_blocks, steps = _canvas(prompt, gen_length, block_length, steps, mask_id)
    nfe = 0
    for b in range(num_blocks):
        e = prompt.shape[1] + (b + 1) * block_length
        num_transfer = get_num_transfer_tokens(x[:, e - block_length:e] == mask_id, steps)
        i = 0
        while True:
            nfe += 1
            mask_index = x == mask_id
            logits, _ = naive_forward(sd, cfg, x)
            mask_index[:, e:] = 0
            x0, transfer = _select(logits, mask_index, x, num_transfer, i, threshold, factor)
            x[transfer] = x0[transfer]
            i += 1
            if (x[:, e - block_length:e] == mask_id).sum() == 0:
                break
    return x, nfe


def fastdllm_prefix_cache(sd, cfg, prompt, steps, gen_length, block_length, mask_id, threshold=None, factor=None):
    x, num_blocks, steps = _canvas(prompt, gen_length, block_length, steps, mask_id)
    nfe = 0
    for b in range(num_blocks):
        s, e = prompt.shape[1] + b * block_length, prompt.shape[1] + (b + 1) * block_length
        num_transfer = get_num_transfer_tokens(x[:, s:e] == mask_id, steps)
        logits, past = naive_forward(sd, cfg, x)
        mask_index = x == mask_id
        mask_index[:, e:] = 0
        x0, transfer = _select(logits, mask_index, x, num_transfer, 0, threshold, factor)
        x[transfer] = x0[transfer]
        past = [(k[:, :, :s], v[:, :, :s]) for k, v in past]
        nfe += 1
        i = 1
        while True:
            nfe += 1
            mask_index = x[:, s:] == mask_id
            mask_index[:, block_length:] = 0
            logits, _ = naive_forward(sd, cfg, x[:, s:], past_key_values=past)
            if threshold is None and factor is None and i >= num_transfer.shape[1]:
                x0, transfer = x[:, s:], torch.zeros_like(mask_index)
            else:
                x0, transfer = _select(logits, mask_index, x[:, s:], num_transfer, i, threshold, factor)
            x[:, s:][transfer] = x0[transfer]
            i += 1
            if (x[:, s:e] == mask_id).sum() == 0:
                break
    return x, nfe


def fastdllm_dual_cache(sd, cfg, prompt, steps, gen_length, block_length, mask_id, threshold=None, factor=None):
    x, num_blocks, steps = _canvas(prompt, gen_length, block_length, steps, mask_id)
    nfe = 0
    for b in range(num_blocks):
        s, e = prompt.shape[1] + b * block_length, prompt.shape[1] + (b + 1) * block_length
        num_transfer = get_num_transfer_tokens(x[:, s:e] == mask_id, steps)
        logits, past = naive_forward(sd, cfg, x)
        mask_index = x == mask_id
        mask_index[:, e:] = 0
        x0, transfer = _select(logits, mask_index, x, num_transfer, 0, threshold, factor)
        x[transfer] = x0[transfer]
        nfe += 1
        replace_position = torch.zeros_like(x, dtype=torch.bool)
        replace_position[:, s:e] = True
        i = 1
        while True:
            nfe += 1
            mask_index = x[:, s:e] == mask_id
            logits, new_past = naive_forward(sd, cfg, x[:, s:e], past_key_values=past, replace_position=replace_position)
            past = new_past  # the reference overwrites the cached block KV in place
            if threshold is None and factor is None and i >= num_transfer.shape[1]:
                x0, transfer = x[:, s:e], torch.zeros_like(mask_index)
            else:
                x0, transfer = _select(logits, mask_index, x[:, s:e], num_transfer, i, threshold, factor)
            x[:, s:e][transfer] = x0[transfer]
            i += 1
            if (x[:, s:e] == mask_id).sum() == 0:
                break
    return x, nfe
