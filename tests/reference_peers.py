"""Independent oracles for the peer schedulers: the authors' decode loops re-written from reading
their code (batch 1, greedy), on `reference_impl.naive_forward`, with none of the package's code.

- `dinfer_hierarchy`: inclusionAI/dInfer `BlockWiseDiffusionLLM` without a KV cache, with
  `HierarchyDecoder` as the decoder (blocks from the prompt's end, no loop unrolling, no early
  stop): per block, while it holds a mask, one full forward and one decoder call.
- `klass_decode`: shkim0116/KLASS `llada_klass.stable_confident_decode` with alg "klass" and
  unmask strategy "all": a full forward per step, KL against the previous step's distribution
  (starting from an all-zero one, never reset), a rolling history of the last H values, the
  "step >= H - 1 within the block" guard, and the scheduled top-k fallback.

`forward(x) -> logits [1, L, V]` is any full-canvas forward, so the same loops also drive a
scripted model (`scripted_forward`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from tests.reference_impl import get_num_transfer_tokens, naive_forward

Forward = Callable[[torch.Tensor], torch.Tensor]


def naive(model) -> Forward:
    sd, cfg = model.state_dict(), model.config
    return lambda x: naive_forward(sd, cfg, x)[0]


def scripted_forward(model) -> Forward:
    """A `ScriptedModel` called the plain way (full canvas, no cache)."""
    return lambda x: model(x)


def _canvas(prompt, gen_length, mask_id):
    x = torch.full((1, prompt.shape[1] + gen_length), mask_id, dtype=torch.long)
    x[:, : prompt.shape[1]] = prompt
    return x


# --------------------------------------------------------------------------------------------
# dInfer HierarchyDecoder
# --------------------------------------------------------------------------------------------


def hierarchy_transfer(logits, mask_index, threshold, low_threshold):
    """HierarchyDecoder.get_transfer_index at temperature 0 (B == 1)."""
    batch, length = mask_index.shape
    x0 = torch.argmax(logits, dim=-1)
    x0_p = F.log_softmax(logits, dim=-1).gather(-1, x0.unsqueeze(-1)).squeeze(-1).exp()
    lowest = torch.finfo(x0_p.dtype).min
    confidence = torch.where(mask_index, x0_p, torch.tensor(lowest, dtype=x0_p.dtype))
    prev = torch.cat([mask_index.new_zeros((batch, 1)), mask_index[:, :-1]], dim=1)
    starts = mask_index & ~prev
    seg_id = torch.where(mask_index, torch.cumsum(starts.long(), dim=-1) - 1, 0)
    seg_max = torch.full((batch, length), lowest, dtype=confidence.dtype)
    seg_max = torch.scatter_reduce(seg_max, 1, seg_id, confidence, reduce="amax", include_self=True)
    transfer = confidence == seg_max.gather(1, seg_id)
    if low_threshold is not None:
        transfer = transfer & (confidence > low_threshold)
    if threshold is not None:
        transfer = transfer | (confidence > threshold)
    top1 = F.one_hot(torch.argmax(confidence, dim=-1), num_classes=length).bool()
    return x0, transfer | top1


def dinfer_hierarchy(forward: Forward, prompt, gen_length, block_length, mask_id, threshold=None, low_threshold=0.4):
    """Returns (canvas, num_forwards); also the per-step commit counts, to see the rule fire."""
    x = _canvas(prompt, gen_length, mask_id)
    nfe, commits = 0, []
    for start in range(prompt.shape[1], x.shape[1], block_length):
        end = start + block_length
        while (x[:, start:end] == mask_id).sum() > 0:
            logits = forward(x)[:, start:end]
            nfe += 1
            mask_index = x[:, start:end] == mask_id
            x0, transfer = hierarchy_transfer(logits, mask_index, threshold, low_threshold)
            transfer = transfer & mask_index
            x[:, start:end][transfer] = x0[transfer]
            commits.append(int(transfer.sum()))
    return x, nfe, commits


# --------------------------------------------------------------------------------------------
# KLASS stable_confident_decode
# --------------------------------------------------------------------------------------------


def klass_decode(forward: Forward, prompt, gen_length, steps, block_length, mask_id,
                 conf_threshold=0.6, kl_threshold=0.015, kl_history_length=2):
    """Returns (canvas, used_steps, per-step list of (ready count, committed count))."""
    x = _canvas(prompt, gen_length, mask_id)
    num_blocks = gen_length // block_length
    steps_per_block = steps // num_blocks
    used_steps, log = 0, []
    kl_history, p_prev = None, None
    for b in range(num_blocks):
        block_start = prompt.shape[1] + b * block_length
        block_end = block_start + block_length
        num_transfer = get_num_transfer_tokens(x[:, block_start:block_end] == mask_id, steps_per_block)
        for step in range(steps_per_block):
            mask_index = x == mask_id
            in_block = torch.zeros_like(mask_index)
            in_block[:, block_start:block_end] = True
            mask_index = mask_index & in_block
            if not mask_index[:, block_start:block_end].any():
                break
            p_curr = F.softmax(forward(x).to(torch.float64), dim=-1)
            if p_prev is None:  # the authors allocate both buffers up front, zero-filled
                p_prev = torch.zeros_like(p_curr)
                kl_history = torch.zeros((1, x.shape[1], kl_history_length), dtype=torch.float64)
            x0 = torch.argmax(p_curr, dim=-1)
            conf = p_curr.gather(-1, x0.unsqueeze(-1)).squeeze(-1)
            eps = 1e-12
            kl = (p_curr * (torch.log(p_curr + eps) - torch.log(p_prev + eps))).sum(dim=-1)
            kl_history = torch.roll(kl_history, shifts=-1, dims=-1)
            kl_history[..., -1] = kl
            p_prev = p_curr.clone()
            if step >= kl_history_length - 1:
                stable = torch.all(kl_history < kl_threshold, dim=-1)
            else:
                stable = torch.zeros_like(conf, dtype=torch.bool)
            ready = stable & (conf > conf_threshold) & mask_index
            transfer = torch.zeros_like(x0, dtype=torch.bool)
            if ready[0].any():
                transfer[0, ready[0].nonzero().flatten()] = True
            else:
                confidence = torch.where(mask_index, conf, -math.inf)
                _, idx = torch.topk(confidence[0], k=int(num_transfer[0, step]))
                transfer[0, idx] = True
            x[transfer] = x0[transfer]
            log.append((int(ready.sum()), int(transfer.sum())))
            used_steps += 1
    return x, used_steps, log
