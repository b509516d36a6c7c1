"""`klass`: KL-Adaptive Stability Sampling (Kim et al., arXiv 2511.05664, NeurIPS 2025;
shkim0116/KLASS `src/model/llada_klass.py::stable_confident_decode`).

The rule. Semi-autoregressive blocks. Each step the model's distribution p_t at every scored
position is compared with the one it gave there at the previous step, KL(p_t || p_{t-1}) over
the full vocabulary (float64, with the authors' 1e-12 inside both logs). A masked token of the
current block is *ready* when its confidence is > `conf_threshold` and each of its last
`history_length` KL values is < `kl_threshold` (both strict). Every ready token is committed
(the authors' `unmask_strategy="all"`); when none is, the step falls back to LLaDA's schedule:
the `num_transfer_tokens[step]` most confident. No re-masking; a block ends when it holds no mask.
As the authors': p_{t-1} starts all-zero (so the first KL is about 27.6 - H, never stable) and is
not reset between blocks; the history holds only the current block's steps, which is what their
rolling buffer plus the "step >= history_length - 1 within the block" guard amounts to. So a
block's first KL compares with the previous block's last step, whose forward also scored this
block (each step scores the current block and the next).

Defaults (authors' LLaDA-8B-Instruct GSM8K script): conf_threshold 0.6, kl_threshold 0.015,
history_length 2, block_length 64, gen_length 256, steps 256 (one fallback token per step),
greedy. Per-row trace metric `klass_stable_steps`: the steps whose commits were ready tokens.

Cache modes: all three (`cache`, default "none": the authors run a full forward per step). KL
compares two distributions at the same position, whatever the window. "prefix" windows reach
the next block, so they equal "none" in what is compared; under "dual" the block-window steps
do not score the next block, so its first KL compares with the previous block's first (full)
forward, the last one that scored it.

Deliberate differences: the fallback never takes more tokens than the block has masks (the
authors' top-k would then overwrite committed tokens); a block still incomplete after
`steps / num_blocks` steps (possible only when steps < gen_length) takes one fallback token per
step until complete (the authors' loop would leave masks); at temperature > 0 tokens are sampled
as LLaDA does while confidence and KL use the clean distribution.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dllm_eval.errors import UserError
from dllm_eval.schedulers.base import CommonParams, num_transfer_tokens, select_quota
from dllm_eval.schedulers.blocks import BlockRunner
from dllm_eval.schedulers.registry import Scheduler, register, register_variant

EPS = 1e-12  # the authors' smoothing inside both logs of the KL


@dataclass
class KLASSParams(CommonParams):
    block_length: int = 64
    steps: int | None = None  # default gen_length: one fallback token per step
    conf_threshold: float = 0.6
    kl_threshold: float = 0.015
    history_length: int = 2
    cache: str = "none"

    def validate(self) -> None:
        super().validate()
        if self.steps is not None and (self.steps <= 0 or self.steps % self.num_blocks):
            raise UserError(f"steps={self.steps} must be a positive multiple of the number of blocks ({self.num_blocks})")
        if self.history_length < 1 or self.kl_threshold < 0 or not 0.0 <= self.conf_threshold <= 1.0:
            raise UserError("need history_length >= 1, kl_threshold >= 0 and conf_threshold in [0, 1]")


@register("klass", "KLASS: commit confident tokens whose distribution was stable (low KL) for H steps, else LLaDA top-k")
class KLASS(Scheduler):
    Params = KLASSParams

    def decode(self, run: BlockRunner) -> None:
        p, state, width = self.params, run.state, self.params.block_length
        stable_steps = torch.zeros(state.batch, dtype=torch.long, device=state.canvas.device)
        prev = None  # p_{t-1} over the current block and the next: [B, 2 * width, V]
        for block, start, end in state.blocks(width):
            quota = num_transfer_tokens(state.masked(start, end), (p.steps or p.gen_length) // p.num_blocks)
            history = torch.full((state.batch, width, p.history_length), math.inf, dtype=torch.float64,
                                 device=state.canvas.device)
            step = 0
            while bool((active := state.incomplete(start, end)).any()):
                scored = end if run.mode == "dual" and step > 0 else min(end + width, state.length)
                logits = run.forward(active, start, scored, first=step == 0)
                probs = torch.softmax(logits.double(), dim=-1)
                if step == 0:  # the next block's part becomes the current block's
                    fresh = probs.new_zeros((state.batch, width, probs.shape[-1]))
                    prev = torch.cat((fresh if prev is None else prev[:, width:], fresh), dim=1)
                n = scored - start
                kl = (probs * ((probs + EPS).log() - (prev[:, :n] + EPS).log())).sum(dim=-1)
                prev[:, :n] = torch.where(active[:, None, None], probs, prev[:, :n])  # rows that ran along keep theirs
                history = torch.where(active[:, None, None], torch.cat((history[:, :, 1:], kl[:, :width, None]), dim=-1),
                                      history)

                proposal = run.propose(logits[:, :width], active, start, end)
                stable = (history < p.kl_threshold).all(dim=-1)
                ready = stable & state.masked(start, end) & (proposal.confidence > p.conf_threshold)
                k = quota[:, step] if step < quota.shape[1] else torch.ones_like(quota[:, 0])
                use_ready = ready.any(dim=1)
                transfer = torch.where(use_ready[:, None], ready, select_quota(proposal.confidence, k))
                run.commit(block, start, transfer & active[:, None], proposal)
                stable_steps += (use_ready & active).long()
                step += 1
        for row, n in enumerate(stable_steps.tolist()):
            if n:
                state.trace.metrics[row]["klass_stable_steps"] = n


register_variant("klass_dual", KLASS, "KLASS on Fast-dLLM's dual KV cache", cache="dual")
