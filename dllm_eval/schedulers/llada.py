"""`llada`: LLaDA's original sampler (ML-GSAI/LLaDA `generate.py`), reference section 1.

Semi-autoregressive blocks, left to right. Each block gets exactly `steps / num_blocks`
full-canvas forwards; step i commits the `num_transfer_tokens[i]` most confident masked tokens
of the block (LLaDA's linear schedule). There is no early exit: NFE = `steps` per document.

Options kept from the reference: temperature (float64 Gumbel-max), remasking
`low_confidence|random`, classifier-free guidance `cfg_scale` (one forward on a 2B batch, still
one NFE), `logits_eos_inf`, `confidence_eos_eot_inf` as shipped (bug included) or fixed, and the
precision of the confidence softmax (`softmax_dtype="model"` is LLaDA's bf16-on-GPU behaviour;
"float64" is Fast-dLLM's).

Deliberate differences: padded rows get a real attention mask (the reference attends to pads);
logits are computed for the active block only (the reference computes the whole canvas and then
sets the confidence outside the block to -inf: same tokens, less work); `stop_at_eos` (off by
default) skips blocks that hold only EOS once an EOS has been committed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dllm_eval.errors import UserError
from dllm_eval.schedulers.base import (
    CommonParams,
    DecodeState,
    DiffusionModel,
    num_transfer_tokens,
    propose,
    select_quota,
)
from dllm_eval.schedulers.blocks import BlockRunner
from dllm_eval.schedulers.registry import Scheduler, register

CONFIDENCE_EOS_EOT_MODES = ("off", "shipped", "fixed")


@dataclass
class LLaDAParams(CommonParams):
    steps: int | None = None  # default: gen_length (one token per step)
    cfg_scale: float = 0.0
    logits_eos_inf: bool = False
    confidence_eos_eot_inf: str = "off"
    softmax_dtype: str = "model"

    def validate(self) -> None:
        super().validate()
        steps = self.total_steps
        if steps <= 0 or steps % self.num_blocks:
            raise UserError(f"steps={steps} must be a positive multiple of the number of blocks ({self.num_blocks})")
        if self.cfg_scale < 0:
            raise UserError(f"cfg_scale must be >= 0, got {self.cfg_scale}")
        if self.confidence_eos_eot_inf not in CONFIDENCE_EOS_EOT_MODES:
            raise UserError(f"confidence_eos_eot_inf must be one of {CONFIDENCE_EOS_EOT_MODES}")

    @property
    def total_steps(self) -> int:
        return self.gen_length if self.steps is None else self.steps


@register("llada", "LLaDA's original semi-autoregressive low-confidence remasking sampler")
class LLaDASampler(Scheduler):
    Params = LLaDAParams

    def cache_mode(self) -> str:
        return "none"  # every step is a full-canvas forward

    def decode(self, run: BlockRunner) -> None:
        p, model, state, generator = self.params, run.model, run.state, run.generator
        steps_per_block = p.total_steps // p.num_blocks
        eot_id = _eot_id(model)
        for block, start, end in state.blocks(p.block_length):
            quota = num_transfer_tokens(state.masked(start, end), steps_per_block)
            for i in range(steps_per_block):
                active = state.incomplete(start, end)
                if p.stop_at_eos and not bool(active.any()):
                    break  # every row's block is EOS-filled: nothing left to decode here
                logits = self._logits(model, state, start, end)
                state.trace.forward(active if p.stop_at_eos else None)
                proposal = propose(logits, state.masked(start, end), generator=generator, eos_id=state.eos_id,
                                   eot_id=eot_id, logits_eos_inf=p.logits_eos_inf,
                                   confidence_eos_eot_inf=p.confidence_eos_eot_inf, mask_id=state.mask_id,
                                   **p.propose_kwargs())
                state.commit(start, select_quota(proposal.confidence, quota[:, i]), proposal, block)
                if p.stop_at_eos:
                    state.fill_eos()

    def _logits(self, model: DiffusionModel, state: DecodeState, start: int, end: int) -> torch.Tensor:
        if self.params.cfg_scale == 0:
            return state.logits_full(model, start, end)
        # Classifier-free guidance: the unconditional copy masks the prompt (and its padding).
        uncond = state.canvas.clone()
        uncond[:, : state.prompt_len] = state.mask_id
        both = torch.cat((state.canvas, uncond))
        mask = None if state.attention_mask is None else torch.cat((state.attention_mask, state.attention_mask))
        logits = model(both, attention_mask=mask, logits_positions=slice(start, end))
        cond, un = logits.chunk(2)
        return un + (self.params.cfg_scale + 1) * (cond - un)


def _eot_id(model: DiffusionModel) -> int | None:
    """EOT's id: from config (`eot_token_id`, our checkpoints) or LLaDA-8B's 126348."""
    eot = getattr(model.config, "extra", {}).get("eot_token_id")
    if eot is not None:
        return int(eot)
    return 126348 if getattr(model.config, "padded_vocab", 0) > 126348 else None
