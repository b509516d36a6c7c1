"""`wino`: WINO, wide-in narrow-out (Hong et al., arXiv 2507.18578; Feng-Hong/WINO-DLLM
`LLaDA/decoding.py::decoding_wino`).

Semi-autoregressive blocks, each decoded until it holds no mask; earlier blocks are final. Every
step is one full forward that also scores a *shadow block*: the current block's width of mask
tokens at the block's own positions, appended to the canvas (`ExtraQueries`). Shadow slot p sees
the whole canvas except its twin p, and every shadow slot; nothing attends to the shadow. So the
shadow's probability of the token committed at p is a leave-one-out check of that token.

- **Wide in**: commit every masked token of the block with confidence > `threshold` (τ₁),
  at most min(max(⌊0.7·#masked⌋, 5), 20) of them (the most confident); if none clears τ₁,
  commit the single most confident.
- **Narrow out** (same forward, only when this step committed > 1 token): re-mask tokens the
  block committed in *earlier* steps whose shadow confidence is < `threshold_back` (τ₂); when
  that set is at least last step's accept count, only the (count − 1) lowest. The count starts
  at 30 per block. Re-masked tokens are drafted again.

NFE = forward passes. Authors' LLaDA-8B-Instruct GSM8K setting: gen 256, block 128, τ₁ 0.6,
τ₂ 0.9, greedy (τ₁ 0.5/0.7/0.8 on other tasks, τ₂ always 0.9). The block defaults to the
harness's 32 (the synth tasks generate 64/96 tokens). The official code is batch 1; here each
row's forwards, caps and accept counts are its own, so a padded batch decodes as its rows alone.

Cache: none, as the authors (every step is a full forward). A prefix or dual cache would be the
usual Fast-dLLM approximation (re-masked positions lie in the current block, which both modes
recompute), but the shadow needs extra queries on the cached path, which the model interface
offers only for full forwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from dllm_eval.errors import UserError
from dllm_eval.models.cache import ExtraQueries
from dllm_eval.schedulers.base import CommonParams, DecodeState
from dllm_eval.schedulers.blocks import BlockRunner, forward_batch, row_index
from dllm_eval.schedulers.registry import Scheduler, register

FIRST_LAST_ACCEPT = 30  # the official code's initial "last accept count" of every block


@dataclass
class WinoParams(CommonParams):
    threshold: float = 0.6  # τ₁, wide in
    threshold_back: float = 0.9  # τ₂, narrow out

    def validate(self) -> None:
        super().validate()
        if not (0.0 <= self.threshold <= 1.0 and 0.0 <= self.threshold_back <= 1.0):
            raise UserError(f"threshold and threshold_back must be in [0, 1], got {self.threshold}, {self.threshold_back}")


@register("wino", "WINO: threshold drafting plus leave-one-out re-masking from a shadow block (arXiv 2507.18578)")
class Wino(Scheduler):
    Params = WinoParams

    def cache_mode(self) -> str:
        return "none"

    def decode(self, run: BlockRunner) -> None:
        p, state = self.params, run.state
        for block, start, end in state.blocks(p.block_length):
            earlier, width = ~state.masked(start, end), end - start  # earlier: committed in earlier steps
            last_accept = torch.full((state.batch,), FIRST_LAST_ACCEPT, device=state.canvas.device)
            while bool((active := state.incomplete(start, end)).any()):
                rows = row_index(active)
                logits = forward_batch(run.model, state, None, active, None, "window", slice(start, end),
                                       extra=shadow_block(state, state.batch, start, end), **run.model_kwargs)
                state.trace.forward(active)
                run.stats.record(active, None)
                proposal = run.propose(logits[:, :width], active, start, end)
                transfer = self.wide_in(proposal.confidence, state.masked(start, end), rows)
                probs = torch.softmax(logits[:, width:].double(), dim=-1)
                check = probs.gather(-1, state.canvas[:, start:end, None]).squeeze(-1)
                check = torch.where(active[:, None], check, float("inf"))
                accepted = transfer.sum(dim=1)
                remask = self.narrow_out(torch.where(earlier, check, float("inf")), accepted, last_accept, rows)
                run.commit(block, start, transfer, proposal)
                state.remask_window(start, remask)
                earlier = (earlier | transfer) & ~remask
                last_accept = torch.where(active, accepted, last_accept)
                for r in remask.any(dim=1).nonzero().flatten().tolist():
                    state.trace.event(r, "wino_remask", block=block, positions=int(remask[r].sum()))

    def wide_in(self, confidence: Tensor, masked: Tensor, rows: Tensor) -> Tensor:
        """Confidence > τ₁, capped at min(max(⌊0.7·#masked⌋, 5), 20) (the top ones), else the top-1."""
        transfer = confidence > self.params.threshold
        cap = (masked.sum(dim=1) * 7 // 10).clamp(min=5, max=20)
        for r in rows.tolist():
            if int(transfer[r].sum()) > int(cap[r]):
                transfer[r] = False
                transfer[r, torch.topk(confidence[r], int(cap[r])).indices] = True
            elif not bool(transfer[r].any()):
                transfer[r, torch.argmax(confidence[r])] = True
        return transfer

    def narrow_out(self, check: Tensor, accepted: Tensor, last_accept: Tensor, rows: Tensor) -> Tensor:
        """Earlier commits whose leave-one-out confidence < τ₂, at most (last accept − 1), lowest
        first; only in rows that accepted more than one token this step."""
        remask = torch.zeros(check.shape, dtype=torch.bool, device=check.device)
        for r in rows.tolist():
            if int(accepted[r]) <= 1:
                continue
            remask[r] = check[r] < self.params.threshold_back
            if int(remask[r].sum()) >= int(last_accept[r]):
                remask[r] = False
                remask[r, torch.topk(check[r], int(last_accept[r]) - 1, largest=False).indices] = True
        return remask


def shadow_block(state: DecodeState, n_rows: int, start: int, end: int) -> ExtraQueries:
    """Masks at the block's positions; slot p sees the canvas except p, and the whole shadow."""
    width, device = end - start, state.canvas.device
    sees = torch.ones(n_rows, width, state.length + width, dtype=torch.bool, device=device)
    sees[:, :, start:end] = ~torch.eye(width, dtype=torch.bool, device=device)
    return ExtraQueries(torch.full((n_rows, width), state.mask_id, device=device),
                        torch.arange(start, end, device=device).expand(n_rows, width), sees)
