"""The decode-step vocabulary every scheduler speaks: propose, select, commit, trace.

A diffusion LM decodes a canvas `[prompt | gen_length masks]` by repeating one step:

1. **propose** -- run the model on a window, take a token and a confidence for each masked
   position (`propose`, from logits);
2. **select** -- decide which proposals to keep (`select_quota`, `select_threshold`,
   `select_factor`, or a scheduler's own rule);
3. **commit** -- write the kept tokens into the canvas and remember at which step and with
   which confidence each was committed (`DecodeState.commit`); `DecodeState.remask` undoes it;
4. **trace** -- count the forward pass against every row that needed it, and summarise the
   step (`Trace`).

Schedulers differ only in how they order these steps and which KV cache mode they call the
model with, so each scheduler is one short file on top of this one.

NFE accounting: `Trace.forward(active)` is called once per model call; `batch_nfe` counts calls,
and each row's `nfe` counts only the calls it took part in, i.e. the NFE it would have had if it
had been decoded alone at batch 1. That makes per-document NFE comparable across batch sizes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from dllm_eval import defaults
from dllm_eval.errors import UserError
from dllm_eval.models.cache import KVCache

DiffusionModel = Any  # any model family behind the interface in `dllm_eval.models.cache`
NEG_INF = float("-inf")
SOFTMAX_DTYPES = {"model": None, "float32": torch.float32, "float64": torch.float64}


# --------------------------------------------------------------------------------------------
# propose
# --------------------------------------------------------------------------------------------


@dataclass
class Proposal:
    """Proposed tokens and their confidence for a window; confidence is -inf where not masked."""

    tokens: Tensor  # [B, W] long
    confidence: Tensor  # [B, W] float; -inf at positions that are not masked (or not eligible)


Generators = torch.Generator | Sequence[torch.Generator] | None
"""One generator for the batch, or one per batch row (a per-request random stream)."""


def _uniform(shape: tuple[int, ...], generator: Generators, device: torch.device, rows: Tensor | None = None,
             need: Tensor | None = None) -> Tensor:
    """float64 uniforms of `shape` ([N, ...], one leading entry per row of the window).

    With a generator per batch row, row i draws its own slice from `generator[rows[i]]`, and a
    row that `need` says has nothing to decode draws nothing: a row's stream then advances only
    with its own decoding, so its samples do not depend on batch mates.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return torch.rand(shape, generator=generator, dtype=torch.float64, device=device)
    index = range(shape[0]) if rows is None else rows.tolist()
    out = torch.full(shape, 0.5, dtype=torch.float64, device=device)
    for i, row in enumerate(index):
        if need is None or bool(need[i]):
            out[i] = torch.rand(shape[1:], generator=generator[row], dtype=torch.float64, device=device)
    return out


def add_gumbel_noise(logits: Tensor, temperature: float, generator: Generators, *, rows: Tensor | None = None,
                     need: Tensor | None = None) -> Tensor:
    """Exact Gumbel-max sampling from softmax(logits / T) in float64 (as LLaDA and Fast-dLLM).

    Returns logits unchanged at T == 0, so argmax is greedy. Low-precision Gumbel noise is known
    to hurt quality (arXiv:2409.02908), hence float64. `generator` may be one per batch row
    (`rows`/`need` as in `_uniform`).
    """
    if temperature == 0:
        return logits
    logits64 = logits.to(torch.float64)
    noise = _uniform(tuple(logits64.shape), generator, logits.device, rows, need)
    return logits64.exp() / (-torch.log(noise)) ** temperature


def propose(
    logits: Tensor,
    masked: Tensor,
    *,
    temperature: float = 0.0,
    remasking: str = "low_confidence",
    softmax_dtype: str = "float64",
    generator: Generators = None,
    eos_id: int | None = None,
    eot_id: int | None = None,
    logits_eos_inf: bool = False,
    confidence_eos_eot_inf: str = "off",
    mask_id: int | None = None,
    rows: Tensor | None = None,
    active: Tensor | None = None,
) -> Proposal:
    """Token proposals and confidences for a window.

    - `rows`: the logits are for these batch rows only (indices); `masked` is still the whole
      batch's, and so is the returned proposal, with confidence -inf in the other rows, so that
      every `select_*` rule skips them.
    - `active` [B] bool: the logits are the whole batch's, but only these rows needed the step
      (the others ran along in the same model call); the others get confidence -inf. Greedy
      low-confidence proposals need no host sync; with sampling the active rows alone draw
      noise (as if they had run alone), which needs their indices (`rows`).
    - `generator`: one for the batch, or a sequence with one per batch row; then each row draws
      from its own, and only while it has masks in the window (see `_uniform`).

    - `logits_eos_inf`: EOS can never be proposed (LLaDA's option of that name).
    - `confidence_eos_eot_inf`: "off"; "shipped" reproduces LLaDA's chained assignment bug
      (issue #137: only EOT's logit is set to -inf before the confidence softmax, so EOT
      proposals get confidence 0 and EOS is not suppressed); "fixed" does what was meant:
      both EOS and EOT proposals get confidence 0, so they are committed last.
    - `softmax_dtype`: "model" keeps the logits' dtype (bf16 on GPU, as LLaDA's generate since
      June 2025, which makes ties frequent); "float64" as Fast-dLLM.
    """
    if active is not None:
        options = dict(temperature=temperature, remasking=remasking, softmax_dtype=softmax_dtype, generator=generator,
                       eos_id=eos_id, eot_id=eot_id, logits_eos_inf=logits_eos_inf,
                       confidence_eos_eot_inf=confidence_eos_eot_inf, mask_id=mask_id)
        if temperature == 0 and remasking == "low_confidence":
            out = propose(logits, masked & active[:, None], **options)
            return Proposal(tokens=torch.where(active[:, None], out.tokens, 0), confidence=out.confidence)
        index = active.nonzero().flatten()
        return propose(logits.index_select(0, index), masked, rows=index, **options)
    if logits_eos_inf:
        if eos_id is None:
            raise ValueError("logits_eos_inf needs eos_id")
        logits = logits.clone()
        logits[..., eos_id] = NEG_INF
    need = None
    if generator is not None and not isinstance(generator, torch.Generator):
        need = (masked if rows is None else masked[rows]).any(dim=1)
    scores = add_gumbel_noise(logits, temperature, generator, rows=rows, need=need)
    if mask_id is not None:
        scores = scores.clone() if scores is logits else scores
        scores[..., mask_id] = NEG_INF if temperature == 0 else 0.0  # Gumbel scores are positive
    tokens = scores.argmax(dim=-1)
    if confidence_eos_eot_inf != "off":
        if eos_id is None or eot_id is None:
            raise ValueError("confidence_eos_eot_inf needs eos_id and eot_id")
        logits = logits.clone()
        logits[..., eot_id] = NEG_INF
        if confidence_eos_eot_inf == "fixed":
            logits[..., eos_id] = NEG_INF
    if remasking == "low_confidence":
        dtype = SOFTMAX_DTYPES[softmax_dtype]
        probs = torch.softmax(logits if dtype is None else logits.to(dtype), dim=-1)
        conf = probs.gather(-1, tokens[..., None]).squeeze(-1)
    elif remasking == "random":
        conf = _uniform(tuple(tokens.shape), generator, tokens.device, rows, need)
    else:
        raise ValueError(f"remasking must be 'low_confidence' or 'random', got {remasking!r}")
    if rows is None:
        return Proposal(tokens=tokens, confidence=torch.where(masked, conf, torch.full_like(conf, NEG_INF)))
    full_tokens = torch.zeros(masked.shape, dtype=tokens.dtype, device=tokens.device)
    full_conf = torch.full(masked.shape, NEG_INF, dtype=conf.dtype, device=conf.device)
    full_tokens[rows] = tokens
    full_conf[rows] = torch.where(masked[rows], conf, torch.full_like(conf, NEG_INF))
    return Proposal(tokens=full_tokens, confidence=full_conf)


# --------------------------------------------------------------------------------------------
# select
# --------------------------------------------------------------------------------------------


def num_transfer_tokens(masked: Tensor, steps: int) -> Tensor:
    """LLaDA's linear schedule: each of `steps` steps gets masks // steps, the first masks % steps
    steps one more. Returns [B, steps] long."""
    count = masked.sum(dim=1, keepdim=True)
    base, rem = count // steps, count % steps
    return base + (torch.arange(steps, device=masked.device)[None, :] < rem).long()


def _own(confidence: Tensor, row: int, widths: Tensor | None) -> Tensor:
    """Row `row` of `confidence`, cut to its own `widths[row]` entries when rows share a padded
    frame: which of several tied values torch.topk returns depends on the vector's length."""
    return confidence[row] if widths is None else confidence[row, :int(widths[row])]


def _topk_keep(confidence: Tensor, k: Tensor, widths: Tensor | None = None) -> Tensor:
    """[B, W] bool: the k[b] positions torch.topk(confidence[b], k[b]) returns, for every row
    (over its first widths[b] entries, if given: the rest is padding).

    Vectorised, and equal to per-row topk: a row keeps every position above its k-th largest
    value and, when the positions tied at that value fit exactly, all of them. Only a row whose
    tie straddles the k-th place (which of the tied positions topk returns is its own
    implementation detail) is handed to torch.topk itself, after a check that needs the host.
    """
    width = confidence.shape[1]
    k = k.clamp(min=0, max=width)
    ordered = confidence.sort(dim=1, descending=True).values
    kth = ordered.gather(1, (k - 1).clamp(min=0)[:, None])  # [B, 1] the k-th largest value
    above = confidence > kth
    at = confidence == kth
    keep = (above | at) & (k > 0)[:, None]
    straddles = (k > 0) & (at.sum(dim=1) > k - above.sum(dim=1)) & (kth[:, 0] != NEG_INF)
    if bool(straddles.any()):  # a decision: only such rows need topk's own tie order
        for row in straddles.nonzero().flatten().tolist():
            keep[row] = False
            keep[row, torch.topk(_own(confidence, row, widths), int(k[row])).indices] = True
    return keep


def select_quota(confidence: Tensor, k: Tensor, widths: Tensor | None = None) -> Tensor:
    """Keep the k[b] most confident positions of each row (torch.topk, as LLaDA, for equal ties;
    `widths`: each row's own length in a padded frame, see `_own`).

    Positions with confidence -inf (not masked) are never kept, even if k exceeds the masks left.
    """
    return _topk_keep(confidence, k, widths) & (confidence != NEG_INF)


def select_threshold(confidence: Tensor, masked: Tensor, threshold: float | Tensor,
                     widths: Tensor | None = None) -> Tensor:
    """Fast-dLLM's threshold rule: every masked position with confidence >= tau, plus always the
    single most confident one (so a step never commits nothing). Order of ties at the maximum
    follows torch.topk over the masked positions, as the June-2025 code. `threshold` may be a
    [B, 1] tensor, one tau per row; `widths`: each row's own length in a padded frame (`_own`).

    Vectorised: the positions >= tau are all among topk's n (= masks left) picks, and the forced
    one is topk's first, i.e. the argmax, unless no position passes and the maximum is tied; only
    such rows ask torch.topk (a host check, a decision)."""
    n = masked.sum(dim=1)
    keep = (confidence >= threshold) & (n > 0)[:, None]
    best = confidence.amax(dim=1, keepdim=True)
    forced = torch.zeros_like(keep).scatter_(1, confidence.argmax(dim=1, keepdim=True), True)
    none = (n > 0) & ~keep.any(dim=1)
    keep |= forced & none[:, None]
    tied = none & ((confidence == best).sum(dim=1) > 1)
    if bool(tied.any()):
        for row in tied.nonzero().flatten().tolist():
            keep[row] = False
            keep[row, torch.topk(_own(confidence, row, widths), int(n[row])).indices[0]] = True
    return keep


def factor_count(sorted_confidence: list[float], factor: float) -> int:
    """How many tokens Fast-dLLM's factor rule commits, given confidences sorted descending.

    The n-th most confident token passes if c(n) >= 1 - f/(n+1) (the first always passes); the
    scan stops at the first failure. Quirk kept on purpose (it is in the reference code): when
    the scan stops at the *last* token, or all pass, the count is N, so a failing last token is
    committed anyway; a single masked token is always committed.
    """
    n_masked = len(sorted_confidence)
    top_i = 0
    for top_i in range(n_masked):
        threshold = -1.0 if top_i == 0 else 1.0 - factor / (top_i + 2)
        if sorted_confidence[top_i] < threshold:
            break
    if top_i == 0 or top_i == n_masked - 1:
        top_i += 1
    return top_i


def factor_counts(confidence: Tensor, masked: Tensor, factor: float) -> Tensor:
    """[B] `factor_count` of every row at once (its masked confidences, sorted descending)."""
    n = masked.sum(dim=1)
    values = torch.where(masked, confidence.double(), NEG_INF).sort(dim=1, descending=True).values
    i = torch.arange(values.shape[1], device=values.device)
    threshold = torch.where(i == 0, -1.0, 1.0 - factor / (i + 2).double())
    fail = (values < threshold) & (i[None, :] < n[:, None])
    stop = torch.where(fail.any(dim=1), fail.long().argmax(dim=1), n - 1)  # the scan's last index
    count = stop + ((stop == 0) | (stop == n - 1)).long()
    return torch.where(n > 0, count, 0)


def select_factor(confidence: Tensor, masked: Tensor, factor: float) -> Tensor:
    """Fast-dLLM's factor rule (`get_transfer_index_dynamic`), per row; see `factor_count`."""
    return _topk_keep(confidence, factor_counts(confidence, masked, factor))


# --------------------------------------------------------------------------------------------
# trace
# --------------------------------------------------------------------------------------------


class Trace:
    """What the decoder did, per row: forwards, commits per step, confidences, events."""

    def __init__(self, batch: int, device: torch.device) -> None:
        self.batch = batch
        self.device = device
        self.batch_nfe = 0
        self.row_nfe = torch.zeros(batch, dtype=torch.long, device=device)
        self._steps: list[tuple[int | Tensor, Tensor, Tensor, Tensor, Tensor]] = []
        self.events: list[list[dict[str, Any]]] = [[] for _ in range(batch)]
        self.metrics: list[dict[str, Any]] = [{} for _ in range(batch)]

    def forward(self, active: Tensor | None = None) -> None:
        """One model call; `active` [B] marks the rows that needed it (default: all)."""
        self.batch_nfe += 1
        self.row_nfe += 1 if active is None else active.long()

    def step(self, block: int | Tensor, transfer: Tensor, confidence: Tensor) -> None:
        """Summarise one commit: how many tokens each row committed and with what confidence
        (`block`: the block index, or [B] one per row)."""
        conf = torch.where(transfer, confidence.double(), torch.full_like(confidence, float("nan"), dtype=torch.float64))
        count = transfer.sum(dim=1)
        self._steps.append((block, count, conf.nan_to_num(float("inf")).amin(dim=1),
                            conf.nansum(dim=1) / count.clamp(min=1), conf.nan_to_num(float("-inf")).amax(dim=1)))

    def event(self, row: int, kind: str, **data: Any) -> None:
        self.events[row].append({"type": kind, **data})

    def event_all(self, rows: Tensor | None, kind: str, **data: Any) -> None:
        for row in range(self.batch) if rows is None else rows.nonzero().flatten().tolist():
            self.event(row, kind, **data)

    def rows(self) -> list[dict[str, Any]]:
        """Per-row trace dicts (tensors moved to Python once, at the end)."""
        out = [{"nfe": int(n), "steps": [], "events": self.events[r], "metrics": self.metrics[r]}
               for r, n in enumerate(self.row_nfe.tolist())]
        for block, count, cmin, cmean, cmax in self._steps:
            blocks = [block] * self.batch if isinstance(block, int) else block.tolist()
            for r, (c, lo, mid, hi) in enumerate(zip(count.tolist(), cmin.tolist(), cmean.tolist(), cmax.tolist())):
                if c:
                    out[r]["steps"].append({"block": blocks[r], "committed": c, "conf_min": round(lo, 6),
                                            "conf_mean": round(mid, 6), "conf_max": round(hi, 6)})
        return out


# --------------------------------------------------------------------------------------------
# commit: the decode state
# --------------------------------------------------------------------------------------------


def _gather_padded(target: Tensor, positions: Tensor) -> Tensor:
    """target.gather(1, positions) where positions may run up to W past the end (reads 0 there):
    per-row windows of one width W overhang the canvas when a row's block is shorter."""
    pad = target.new_zeros(target.shape[0], positions.shape[1])
    return torch.cat((target, pad), dim=1).gather(1, positions)


def _put_padded(target: Tensor, positions: Tensor, values: Tensor, where: Tensor) -> None:
    """target[b, positions[b, j]] = values[b, j] where `where`, in place; positions distinct per
    row and possibly past the end (as `_gather_padded`). No host sync, unlike boolean indexing."""
    n = target.shape[1]
    ext = torch.cat((target, target.new_zeros(target.shape[0], positions.shape[1])), dim=1)
    ext.scatter_(1, positions, torch.where(where, values.to(target.dtype), ext.gather(1, positions)))
    target.copy_(ext[:, :n])


@dataclass
class DecodeState:
    """The canvas being decoded and everything known about each generated position."""

    canvas: Tensor  # [B, P + G] long: left-padded prompt, then the generation region
    attention_mask: Tensor | None  # [B, P + G] (1 real, 0 padding) or None without padding
    prompt_len: int
    gen_length: int
    mask_id: int
    eos_id: int
    trace: Trace
    commit_conf: Tensor = field(init=False)  # [B, G] float64, NaN until committed
    commit_step: Tensor = field(init=False)  # [B, G] long, -1 until committed
    step_counter: int = 0

    def __post_init__(self) -> None:
        batch, device = self.canvas.shape[0], self.canvas.device
        self.commit_conf = torch.full((batch, self.gen_length), float("nan"), dtype=torch.float64, device=device)
        self.commit_step = torch.full((batch, self.gen_length), -1, dtype=torch.long, device=device)

    @classmethod
    def start(cls, model: DiffusionModel, prompt: Tensor, attention_mask: Tensor | None, gen_length: int) -> DecodeState:
        cfg = model.config
        batch, plen = prompt.shape
        canvas = torch.full((batch, plen + gen_length), cfg.mask_token_id, dtype=torch.long, device=prompt.device)
        canvas[:, :plen] = prompt
        if (prompt == cfg.mask_token_id).any():
            raise UserError("the prompt contains the mask token id; it would be decoded as a blank")
        mask = None
        if attention_mask is not None and not bool(attention_mask.all()):
            mask = torch.ones(canvas.shape, dtype=torch.long, device=prompt.device)
            mask[:, :plen] = attention_mask
        return cls(canvas, mask, plen, gen_length, cfg.mask_token_id, cfg.eos_token_id, Trace(batch, prompt.device))

    # -- geometry --------------------------------------------------------------------------
    @property
    def batch(self) -> int:
        return self.canvas.shape[0]

    @property
    def length(self) -> int:
        return self.canvas.shape[1]

    def blocks(self, block_length: int) -> Iterator[tuple[int, int, int]]:
        """(index, start, end) of each fixed-size block of the generation region, in canvas coordinates."""
        for b in range(self.gen_length // block_length):
            start = self.prompt_len + b * block_length
            yield b, start, start + block_length

    def masked(self, start: int, end: int) -> Tensor:
        return self.canvas[:, start:end] == self.mask_id

    def incomplete(self, start: int, end: int) -> Tensor:
        """[B] rows that still have masks in [start, end)."""
        return self.masked(start, end).any(dim=1)

    def masked_at(self, positions: Tensor, inside: Tensor) -> Tensor:
        """[B, W] masks at per-row canvas `positions` [B, W] (past the canvas's end allowed),
        False where not `inside`."""
        return (_gather_padded(self.canvas, positions) == self.mask_id) & inside

    # -- commit / remask -------------------------------------------------------------------
    def commit_at(self, positions: Tensor, transfer: Tensor, proposal: Proposal, block: Tensor) -> Tensor:
        """`commit` for per-row windows: row b's entry j is canvas position positions[b, j]
        (generated positions, distinct within a row, possibly past the canvas's end where
        `transfer` is False); `block`
        [B] each row's block index, for the trace. Returns the count per row."""
        gen = positions - self.prompt_len
        _put_padded(self.canvas, positions, proposal.tokens, transfer)
        _put_padded(self.commit_conf, gen, proposal.confidence.double(), transfer)
        _put_padded(self.commit_step, gen, torch.full_like(gen, self.step_counter), transfer)
        self.trace.step(block, transfer, proposal.confidence)
        self.step_counter += 1
        return transfer.sum(dim=1)

    def commit(self, start: int, transfer: Tensor, proposal: Proposal, block: int = -1) -> Tensor:
        """Write the selected proposals of the window starting at `start`; returns the count per row."""
        width = transfer.shape[1]
        window = self.canvas[:, start:start + width]
        window.copy_(torch.where(transfer, proposal.tokens, window))  # no boolean indexing: no host sync
        gen_lo = start - self.prompt_len
        if gen_lo >= 0:
            conf = self.commit_conf[:, gen_lo:gen_lo + width]
            conf.copy_(torch.where(transfer, proposal.confidence.double(), conf))
            steps = self.commit_step[:, gen_lo:gen_lo + width]
            steps.copy_(torch.where(transfer, self.step_counter, steps))
        self.trace.step(block, transfer, proposal.confidence)
        self.step_counter += 1
        return transfer.sum(dim=1)

    def remask(self, positions: Tensor) -> None:
        """Turn committed generated positions back into masks; `positions` is [B, G] bool."""
        region = self.canvas[:, self.prompt_len:]
        region[positions] = self.mask_id
        self.commit_conf[positions] = float("nan")
        self.commit_step[positions] = -1

    def fill_after_eos(self) -> Tensor:
        """For `stop_at_eos`: once a row has committed EOS at p, every mask after p can only be
        EOS (LLaDA pads answers with EOS, and text after the first EOS is cut anyway), so fill
        them without a forward pass. Returns [B] the number of positions filled."""
        region = self.canvas[:, self.prompt_len:]
        is_eos = region == self.eos_id
        has_eos = is_eos.any(dim=1)
        first = torch.where(has_eos, is_eos.float().argmax(dim=1), torch.full_like(has_eos, self.gen_length, dtype=torch.long))
        after = torch.arange(self.gen_length, device=region.device)[None, :] > first[:, None]
        fill = after & (region == self.mask_id)
        region[fill] = self.eos_id
        return fill.sum(dim=1)

    def fill_eos(self) -> None:
        """`fill_after_eos`, with an ``eos_fill`` trace event for every row it filled."""
        filled = self.fill_after_eos()
        for row in filled.nonzero().flatten().tolist():
            self.trace.event(row, "eos_fill", positions=int(filled[row]))

    # -- refinement helpers ------------------------------------------------------------------
    def ambiguous(self, start: int, end: int, tau: float) -> Tensor:
        """[B, end - start] committed tokens whose commit confidence is below tau (NaN: not ambiguous)."""
        lo, hi = start - self.prompt_len, end - self.prompt_len
        return self.commit_conf[:, lo:hi] < tau

    def remask_window(self, start: int, positions: Tensor) -> None:
        """`remask` for positions [B, W] of the window starting at canvas position `start`."""
        full = torch.zeros((self.batch, self.gen_length), dtype=torch.bool, device=positions.device)
        lo = start - self.prompt_len
        full[:, lo:lo + positions.shape[1]] = positions
        self.remask(full)

    # -- model calls -------------------------------------------------------------------------
    def logits_full(self, model: DiffusionModel, start: int, end: int, cache: KVCache | None = None) -> Tensor:
        """Full forward over the canvas (filling `cache` if given); logits of [start, end)."""
        return model(self.canvas, attention_mask=self.attention_mask, cache=cache, write=cache is not None,
                     logits_positions=slice(start, end))

    def generated(self) -> Tensor:
        return self.canvas[:, self.prompt_len:]


# --------------------------------------------------------------------------------------------
# scheduler parameters, registry and output
# --------------------------------------------------------------------------------------------


@dataclass
class CommonParams:
    """Parameters every scheduler takes. Subclasses add their own fields with defaults."""

    gen_length: int = defaults.GEN_LENGTH
    block_length: int = defaults.BLOCK_LENGTH
    temperature: float = 0.0
    remasking: str = "low_confidence"
    softmax_dtype: str = "float64"
    stop_at_eos: bool = False

    def validate(self) -> None:
        if self.gen_length <= 0 or self.block_length <= 0:
            raise UserError(f"gen_length ({self.gen_length}) and block_length ({self.block_length}) must be positive")
        if self.gen_length % self.block_length:
            raise UserError(f"gen_length={self.gen_length} must be a multiple of block_length={self.block_length}")
        if self.temperature < 0:
            raise UserError(f"temperature must be >= 0, got {self.temperature}")
        if self.remasking not in ("low_confidence", "random"):
            raise UserError(f"remasking must be low_confidence or random, got {self.remasking!r}")
        if self.softmax_dtype not in SOFTMAX_DTYPES:
            raise UserError(f"softmax_dtype must be one of {sorted(SOFTMAX_DTYPES)}, got {self.softmax_dtype!r}")

    @property
    def num_blocks(self) -> int:
        return self.gen_length // self.block_length

    def propose_kwargs(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "remasking": self.remasking, "softmax_dtype": self.softmax_dtype}


@dataclass
class GenerationOutput:
    tokens: Tensor  # [B, gen_length] the generated region (EOS padding included)
    traces: list[dict[str, Any]]  # per row: nfe, steps, events, metrics
    batch_nfe: int
    wall_s: float
