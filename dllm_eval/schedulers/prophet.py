"""`prophet`: Prophet, early commit-all (Li et al., arXiv 2508.19982; pixeli99/Prophet
`generate_earlyexit.py::generate`, `eval_llada.py`).

LLaDA's sampler (fixed `steps / num_blocks` forwards per block, each committing the block's
scheduled top-k by confidence), plus one check per step, made on that step's logits before its
commit: average the top-1 − top-2 *raw logit* gap over an answer window; at global step s
(1-based) of `steps`, if it is ≥ 7.5 (s/steps < 0.33), 5.0 (< 0.67) or 2.5 (later), fill every
remaining mask of the generation region, later blocks included, with the current argmax, and
stop. NFE = forward passes (the exit step, or `steps`).

Authors' LLaDA-8B-Instruct GSM8K setting (gsm8k_cot_zeroshot): gen 256, steps 256, block 32,
greedy, the tokens "The answer is" forced at generation offsets 200-202 and the 5 positions from
offset 204 watched (decoded or not).

`answer_window` (what the harness uses): no task here forces an answer span, and the answer of
synth_math (`#### <number>`), gsm8k or a code task has no fixed offset, so every task uses the
default ``next:5``: the first 5 still-masked positions (the authors' window length), where the
tokens are being decided now. Averages over ``all`` positions (or every mask, ``next:<gen>``)
are dominated by the confident EOS tail: on the embedded model (synth_math, 32 docs) they exit
after 1-2 forwards with 53% vs LLaDA's 69% at 64 NFE; ``next:5`` gets 59% at 12 NFE. The
thresholds are LLaDA-8B logit units; other models' logit scales differ, so re-tune them.
``start:len`` watches `len` fixed positions from generation offset `start`, decoded or not
(``204:5`` with the authors' forced span; forcing is not offered: it changes the scored text).

Cache: `none` (default, as the authors): the window lies beyond the current block, which a dual
cache never scores. `prefix` is permitted with ``next:k``: its window (the block and everything
after it) holds every mask; earlier, final blocks come from the block's first forward (Fast-dLLM's
approximation). The official code is batch 1; here every row checks its own window and an exited
row stops running, so a padded batch decodes as its rows alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import Tensor

from dllm_eval.errors import UserError
from dllm_eval.schedulers.base import CommonParams, DecodeState, num_transfer_tokens, select_quota
from dllm_eval.schedulers.blocks import BlockRunner
from dllm_eval.schedulers.registry import Scheduler, register


@dataclass
class ProphetParams(CommonParams):
    steps: int | None = None  # default gen_length: one token per step, as the authors
    answer_window: str = "next:5"  # next:k | all | start:len
    early_threshold: float = 7.5
    mid_threshold: float = 5.0
    late_threshold: float = 2.5
    cache: str = "none"  # none | prefix (answer_window=next:k only)
    softmax_dtype: str = "model"  # the authors' confidence softmax runs in the model's dtype

    def validate(self) -> None:
        super().validate()
        steps = self.gen_length if self.steps is None else self.steps
        if steps <= 0 or steps % self.num_blocks:
            raise UserError(f"steps={steps} must be a positive multiple of the number of blocks ({self.num_blocks})")
        w = self.answer_window
        if not re.fullmatch(r"all|next:[1-9]\d*|\d+:[1-9]\d*", w):
            raise UserError(f"answer_window must be next:k, all or start:len (e.g. 204:5), got {w!r}")
        if self.cache not in ("none", "prefix") or (self.cache == "prefix" and not w.startswith("next:")):
            raise UserError(f"cache must be none, or prefix with answer_window=next:k; got cache={self.cache!r}")


@register("prophet", "Prophet: LLaDA decoding that commits everything once the answer's top-2 logit gap is large")
class Prophet(Scheduler):
    Params = ProphetParams

    def decode(self, run: BlockRunner) -> None:
        p, state = self.params, run.state
        total = p.gen_length if p.steps is None else p.steps
        per_block = total // p.num_blocks
        running = torch.ones(state.batch, dtype=torch.bool, device=state.canvas.device)
        for block, start, end in state.blocks(p.block_length):
            quota = num_transfer_tokens(state.masked(start, end), per_block)
            lo = start if p.cache == "prefix" else state.prompt_len  # the logits this step reads
            for i in range(per_block):
                step = block * per_block + i + 1  # the global step, 1-based
                active = running & (state.incomplete(start, end) | (not p.stop_at_eos))
                if not bool(active.any()):
                    break
                logits = run.forward(active, lo, state.length, first=i == 0)
                proposal = run.propose(logits, active, lo, state.length)
                exits = active & (self.gap(state, logits, active, lo) >= self.threshold(step / total))
                transfer = state.masked(lo, state.length) & exits[:, None]  # commit all
                transfer[:, start - lo:end - lo] |= select_quota(proposal.confidence[:, start - lo:end - lo],
                                                                 quota[:, i]) & (active & ~exits)[:, None]
                run.commit(block, lo, transfer, proposal)
                for r in exits.nonzero().flatten().tolist():
                    state.trace.event(r, "prophet_exit", step=step, block=block)
                running &= ~exits

    def cache_mode(self) -> str:
        return self.params.cache

    def threshold(self, progress: float) -> float:
        p = self.params
        return p.early_threshold if progress < 0.33 else p.mid_threshold if progress < 0.67 else p.late_threshold

    def gap(self, state: DecodeState, logits: Tensor, active: Tensor, lo: int) -> Tensor:
        """[B] mean top-1 − top-2 logit gap over each active row's window (-inf: empty window)."""
        top2 = logits.topk(2, dim=-1).values
        gaps = (top2[..., 0] - top2[..., 1]).double()  # subtracted in the logits' dtype, as the authors
        window = self.params.answer_window
        if window.startswith("next:"):  # the first k still-masked positions
            inside = state.masked(lo, state.length).clone()
            inside &= inside.cumsum(dim=1) <= int(window[5:])
        else:
            inside = torch.zeros_like(gaps, dtype=torch.bool)
            first, n = (0, state.gen_length) if window == "all" else map(int, window.split(":"))
            inside[:, state.prompt_len - lo + first:state.prompt_len - lo + first + n] = True
        mean = (gaps * inside).sum(dim=1) / inside.sum(dim=1).clamp(min=1)
        return torch.where(active & inside.any(dim=1), mean, float("-inf"))
