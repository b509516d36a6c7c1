"""`dream`: Dream's own sampler (`DreamGenerationMixin.diffusion_generate`), survey Part A.1.

No blocks, no cache: every step is one full-canvas forward. With timesteps
`t = linspace(1, eps, steps + 1)` (float32, on the canvas' device), step i goes from t[i] to
s = t[i+1]:

- ``alg="origin"``: each masked position is revealed independently with probability
  `1 - s/t` (1 on the last step), its token sampled with temperature / top_p / top_k;
- ``alg="maskgit_plus" | "topk_margin" | "entropy"``: every masked position gets a token and a
  confidence (max probability; top-1 minus top-2 probability; negative entropy), and the
  `int(masks * (1 - s/t))` most confident are committed (all the rest on the last step), by
  top-k, or, when `alg_temp > 0`, by sampling positions from `softmax(confidence / alg_temp)`.

Kept exactly as the published code does it (each was checked by reading it):
- the commit count is computed in float32 tensors and truncated by `int()`, so with
  steps = gen_length the first step commits nothing and the last step commits two;
- the count uses the mask count *averaged over the batch* (`count="batch_mean"`, the default,
  for parity). `count="per_row"` uses each row's own count, so a row decodes the same in any
  batch. (Rows of one canvas start with equal counts and each step commits the same number in
  each, so the two agree unless rows' counts differ; where they do, the published code would
  also overwrite non-masked positions with the mask token, which this one never does);
- top_p keeps the token that crosses the threshold, filtered logits get the most negative
  finite float (not -inf), and the confidence is read *after* filtering and temperature;
- temperature > 0 samples through `torch.distributions.Categorical`, whose argument check
  fails on probabilities that do not sum to 1 within 1e-6 (typical in bf16), and the published
  code then silently falls back to the argmax: reproduced, not fixed;
- confidences live in the logits' dtype (bf16 on GPU), and the top-k runs over the whole
  canvas row with -inf at non-masked positions, so ties break as in the published code.

Randomness (origin's reveal draws, sampling, alg_temp) comes from `generator`, in the same order
as the published code draws from the global RNG, so a CPU run with
`torch.Generator().manual_seed(s)` equals the published code after `torch.manual_seed(s)`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from dllm_eval.errors import UserError
from dllm_eval.schedulers.base import CommonParams, DecodeState, Proposal
from dllm_eval.schedulers.blocks import BlockRunner
from dllm_eval.schedulers.registry import Scheduler, register

ALGS = ("origin", "maskgit_plus", "topk_margin", "entropy")
COUNTS = ("batch_mean", "per_row")


@dataclass
class DreamParams(CommonParams):
    steps: int | None = None  # default: gen_length (one token per step on average)
    eps: float = 1e-3
    alg: str = "entropy"  # Dream's lm-eval default (diffusion_generate's own default is "origin")
    alg_temp: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    count: str = "batch_mean"  # "batch_mean" as published, or "per_row"
    block_length: int | None = None  # Dream's sampler has no blocks; accepted only as gen_length or None

    def validate(self) -> None:
        if self.block_length is None:
            self.block_length = self.gen_length
        if self.block_length != self.gen_length:
            raise UserError(f"the dream sampler has no blocks: block_length must be gen_length ({self.gen_length}) "
                            f"or unset, got {self.block_length}")
        super().validate()
        if self.total_steps <= 0:
            raise UserError(f"steps must be positive, got {self.total_steps}")
        if not 0 < self.eps < 1:
            raise UserError(f"eps must be in (0, 1), got {self.eps}")
        if self.alg not in ALGS:
            raise UserError(f"alg must be one of {', '.join(ALGS)}, got {self.alg!r}")
        if self.count not in COUNTS:
            raise UserError(f"count must be one of {', '.join(COUNTS)}, got {self.count!r}")
        if self.top_k is not None and self.top_k <= 0:
            raise UserError(f"top_k must be positive, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise UserError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.alg_temp is not None and self.alg_temp < 0:
            raise UserError(f"alg_temp must be >= 0, got {self.alg_temp}")
        if self.stop_at_eos:
            raise UserError("stop_at_eos is not part of Dream's sampler; leave it off")

    @property
    def total_steps(self) -> int:
        return self.gen_length if self.steps is None else self.steps


# --------------------------------------------------------------------------------------------
# Dream's token sampling rules
# --------------------------------------------------------------------------------------------


def filter_top_p(logits: Tensor, top_p: float) -> Tensor:
    """Keep the smallest set of most likely tokens whose mass exceeds top_p, *including* the
    token that crosses it; the rest get the dtype's most negative finite value."""
    ordered, order = torch.sort(logits, descending=True)
    mass = torch.cumsum(F.softmax(ordered, dim=-1), dim=-1)
    drop_sorted = torch.zeros_like(mass, dtype=torch.bool)
    drop_sorted[..., 1:] = mass[..., :-1] > top_p  # drop a token only if the mass before it already exceeds top_p
    drop = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, order, drop_sorted)
    return logits.masked_fill(drop, torch.finfo(logits.dtype).min)


def filter_top_k(logits: Tensor, top_k: int) -> Tensor:
    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[..., -1:]
    return logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)


def sample_tokens(logits: Tensor, *, temperature: float, top_p: float | None, top_k: int | None,
                  alg: str, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """(confidence, token) for each row of logits [N, V] by Dream's rules (see module docstring)."""
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = filter_top_p(logits, top_p)
    if top_k is not None:
        logits = filter_top_k(logits, top_k)
    probs = torch.softmax(logits, dim=-1)
    if temperature > 0:
        try:
            # Categorical(probs) checks and normalises its argument (the published code's failure
            # mode); its .sample() is multinomial on the normalised rows, drawn here from `generator`.
            dist = torch.distributions.Categorical(probs=probs)
            flat = dist.probs.reshape(-1, dist.probs.shape[-1])
            tokens = torch.multinomial(flat, 1, True, generator=generator).T.reshape(probs.shape[:-1])
            confidence = torch.gather(probs, -1, tokens[..., None]).squeeze(-1)
        except (ValueError, RuntimeError):
            confidence, tokens = probs.max(dim=-1)
    else:
        confidence, tokens = probs.max(dim=-1)
    if alg == "topk_margin":
        top2 = torch.sort(probs, dim=-1, descending=True).values
        confidence = top2[..., 0] - top2[..., 1]
    elif alg == "entropy":
        confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return confidence, tokens


# --------------------------------------------------------------------------------------------
# the sampler
# --------------------------------------------------------------------------------------------


@register("dream", "Dream's diffusion_generate: origin / maskgit_plus / topk_margin / entropy, no blocks, no cache")
class DreamSampler(Scheduler):
    Params = DreamParams
    row_streams = False  # draws flat over the batch's masks (as published): no per-row split

    def cache_mode(self) -> str:
        return "none"  # every step is a full-canvas forward

    def decode(self, runner: BlockRunner) -> None:
        p, model, state, generator = self.params, runner.model, runner.state, runner.generator
        steps = p.total_steps
        device = state.canvas.device
        timesteps = torch.linspace(1, p.eps, steps + 1, device=device)
        lo, hi = state.prompt_len, state.length
        for i in range(steps):
            t, s = timesteps[i], timesteps[i + 1]
            last = i == steps - 1
            masked = state.masked(lo, hi)  # [B, G]; the prompt never holds the mask token
            logits = state.logits_full(model, lo, hi)  # aligned: logits[:, j] scores position lo + j
            state.trace.forward()
            mask_logits = logits[masked]
            if p.alg == "origin":
                transfer, proposal = self._origin(state, masked, mask_logits, t, s, last, generator)
            else:
                transfer, proposal = self._ranked(state, masked, mask_logits, logits.dtype, t, s, last, generator)
            state.commit(lo, transfer, proposal)

    def _origin(self, state: DecodeState, masked: Tensor, mask_logits: Tensor, t: Tensor, s: Tensor,
                last: bool, generator: torch.Generator | None) -> tuple[Tensor, Proposal]:
        p = self.params
        p_transfer = 1 if last else 1 - s / t
        reveal = torch.rand(int(masked.sum()), generator=generator, device=masked.device) < p_transfer
        confidence, tokens = sample_tokens(mask_logits[reveal], temperature=p.temperature, top_p=p.top_p,
                                           top_k=p.top_k, alg="origin", generator=generator)
        transfer = torch.zeros_like(masked)
        transfer[masked] = reveal
        proposal = _scatter(masked, transfer, tokens, confidence)
        return transfer, proposal

    def _ranked(self, state: DecodeState, masked: Tensor, mask_logits: Tensor, dtype: torch.dtype, t: Tensor,
                s: Tensor, last: bool, generator: torch.Generator | None) -> tuple[Tensor, Proposal]:
        p = self.params
        confidence, tokens = sample_tokens(mask_logits, temperature=p.temperature, top_p=p.top_p, top_k=p.top_k,
                                           alg=p.alg, generator=generator)
        batch, lo = masked.shape[0], state.prompt_len
        # float32 tensors, as the published `mask_index.sum() / batch` (0-d) times `1 - s / t`
        means = [masked.sum() / batch] * batch if p.count == "batch_mean" else list(masked.sum(dim=1) / 1)
        counts = [int(m) if last else int(m * (1 - s / t)) for m in means]

        # Confidence over the whole canvas row (-inf off the masks), in the logits' dtype.
        full = torch.full(state.canvas.shape, float("-inf"), dtype=dtype, device=masked.device)
        full[:, lo:][masked] = confidence.to(dtype)
        transfer_full = torch.zeros(state.canvas.shape, dtype=torch.bool, device=masked.device)
        if len(set(counts)) == 1 and counts[0] > 0:
            transfer_full.scatter_(1, self._pick(full, counts[0], generator), True)
        elif len(set(counts)) > 1:
            for row, k in enumerate(counts):
                if k > 0:
                    transfer_full[row, self._pick(full[row:row + 1], k, generator)[0]] = True
        transfer = transfer_full[:, lo:] & masked  # never a non-masked position (see module docstring)
        proposal = _scatter(masked, masked, tokens, confidence)
        return transfer, proposal

    def _pick(self, full: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
        """Indices [rows, k] of the positions to commit: top-k, or sampled with alg_temp."""
        alg_temp = self.params.alg_temp
        if alg_temp is None or alg_temp == 0:
            return torch.topk(full, k).indices
        return torch.multinomial(F.softmax(full / alg_temp, dim=-1), num_samples=k, generator=generator)


def _scatter(masked: Tensor, where: Tensor, tokens: Tensor, confidence: Tensor) -> Proposal:
    """A [B, G] proposal from values listed for the positions `where` [B, G] marks, row-major
    (as boolean indexing lists them); -inf confidence elsewhere."""
    full_tokens = torch.zeros(masked.shape, dtype=torch.long, device=masked.device)
    full_conf = torch.full(masked.shape, float("-inf"), dtype=torch.float64, device=masked.device)
    full_tokens[where] = tokens
    full_conf[where] = confidence.double()
    return Proposal(tokens=full_tokens, confidence=full_conf)
