"""`adaptive`: Self-Correcting Adaptive Inference Scheduling (seed 001), and its ablations.

Fast-dLLM's threshold decoding with three components that can each be switched on alone:

=====================  ===========================================================================
variant                components
=====================  ===========================================================================
`adaptive`             dynamic block size + adaptive threshold + tiered cache (the full system)
`adaptive_block`       dynamic block size only
`adaptive_threshold`   adaptive threshold only
`tiered_cache`         tiered cache only
`adaptive_static`      none: Fast-dLLM dual cache, blocks of `base_block_size`, tau fixed at
                       `base_confidence_threshold` (the ablation's reference row; equals
                       ``fast_dllm(block_length=16, threshold=0.8, block_check="top")``)
=====================  ===========================================================================

Parameter names and defaults are the seed's (base_block_size=16, base_confidence_threshold=0.8,
adaptation_rate=0.2, enable_tiered_cache, min/max_block_size=8/64, confidence_window=5,
adaptation_sensitivity=0.15, entropy_threshold_high/low=2.0/0.5, tier2_stability_threshold=0.85,
tier2_update_interval=3, memory_efficiency_mode), plus `enable_dynamic_block` and
`enable_adaptive_threshold` for the other two switches, and the threshold range 0.7-0.95 of the
seed's comparison table as `min_threshold` / `max_threshold`. `block_length` is not used.

Each step of a row: one forward, proposals for the masked positions of the row's active block,
commit every one with confidence >= the row's tau plus always the most confident one (Fast-dLLM's
rule). A block is complete when it has no masks; nothing is checked or run after that ("top"
convention, so no June extra forward).

**Dynamic block sizing.** The first block has `base_block_size` tokens. When a block completes,
the row's recent confidence -- the mean, over its last `confidence_window` decode steps, of each
step's mean commit confidence -- decides the next size: above ``base_confidence_threshold +
adaptation_sensitivity`` (0.95) the size is multiplied by `scale_up_factor`, below
``base_confidence_threshold - adaptation_sensitivity`` (0.65) by `scale_down_factor`, rounded to
a whole token (moving at least one), and clamped to [min_block_size, max_block_size]; the last
block is clipped to the generation region. Choices: the seed names the factors but gives no
values; we take them from `adaptation_rate` (x1.2 up, x0.8 down: a 20% change per block, so
16 -> 64 takes eight confident blocks and a single noisy block cannot swing the size), and its
``adaptation_sensitivity`` as the half-width of the dead band around the base threshold. The
window is over *steps*, not tokens, because steps are what an uncertain region costs: a block
committed in one confident step and a block dragged out one forced token at a time look
different here even when most of their tokens have similar confidence; five steps span about the
current block in hard regions and a few blocks in easy ones.

**Adaptive threshold.** Each step the row's entropy -- the mean, over the active block's masked
positions, of the entropy (nats) of the model's predictive distribution there -- moves tau before
it is used: above `entropy_threshold_high` ``tau = min(max_threshold, tau * safety_factor)``,
below `entropy_threshold_low` ``tau = max(min_threshold, tau * efficiency_factor)``. Choices: the
seed names the safety and efficiency factors without values; 1.05 and 0.95 cross the 0.7-0.95
range in about five consecutive steps (within one block), while one outlier step moves tau by
under 0.05.

**Tiered cache** (otherwise: Fast-dLLM's dual cache, a full forward at each block's first step
and block-window steps after it). Only the first forward of a row is a full one; every later step
runs, with ``attend="cache", write=True``, a window made of:

- tier 3 (every step): the active block, and finished blocks whose mean commit confidence is
  below `tier2_stability_threshold` ("recent/uncertain");
- tier 2 (stable): finished blocks whose mean commit confidence is >= the threshold, plus the
  still-masked suffix after the active block. A finished block enters tier 2 with one refresh at
  the next block's first step (its cached KV was computed before its last tokens were committed);
  after that all of tier 2 is recomputed at the first step of every `tier2_update_interval`-th
  block (blocks interval, 2*interval, ...), and is served from the cache in between;
- tier 1 (frozen): the prompt, written by the first forward and never again.

So a stable block's KV is never older than the first step of the latest scheduled refresh (or its
own promotion), the suffix's never older than the latest scheduled refresh (or the first forward),
and the prompt's is always the first forward's. Commit confidences do not change after commit, so
"confidence falls below the threshold" is decided once, when a block completes (LLaDA's logits at
unmasked positions are not trained, so re-scoring committed tokens would not be a meaningful
confidence). `memory_efficiency_mode` is accepted for the seed's API and recorded in the
metrics; it has no effect here, because the KV cache is one preallocated canvas-sized tensor and
nothing it stores can be dropped.

Two knobs take the tiered cache apart (for mechanism checks; the seed's behaviour is the
default): `suffix_refresh` says when the still-masked suffix is recomputed (``tier2``: with the
scheduled tier-2 refresh; ``block``: at every block's first step, as the dual cache does;
``never``: it keeps the first forward's KV) and `tier1_refresh` recomputes the prompt at every
block's first step. With ``tier2_update_interval=1, tier2_stability_threshold=0,
tier1_refresh=true, suffix_refresh=block`` every piece is fresh again and the decoder equals
`adaptive_static` token for token (tested). The variant `dual_stale_suffix` is the one piece that
carries the tiered cache's gain on synth_code (results/mechanisms/README.md): Fast-dLLM's dual
cache in every respect except that the masked suffix is never recomputed after the first forward.

Trace, per row: events ``block`` (start, end, size, mean confidence, steps, tier), ``block_size``
(the decision: recent confidence, previous and chosen size, up/down/hold), ``tau`` (old, new,
entropy), ``cache_refresh`` (tier, reason, positions) and ``eos_fill``; metrics: the seed's
``avg_block_size``, ``cache_hit_rate`` and ``adaptations`` (block-size changes plus tau changes),
and ``block_sizes``, ``tau_final``, ``tau_range``, ``refreshed_positions`` per tier, ``nfe``.
``cache_hit_rate``: over the row's forwards, the fraction of attended KV positions (real,
non-padding canvas positions) served from the cache rather than recomputed in that forward.

Batching: every row has its own blocks, tau and tiers; every step is one model call for the whole
batch, each row with its own window (per-row windows when rows diverge, `BlockRunner.forward_each`),
so a batched row decodes exactly as it would alone, its NFE counts only its own steps, and the
batch takes as many calls as its slowest row.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from dllm_eval.errors import UserError
from dllm_eval.schedulers.base import (
    CommonParams,
    DecodeState,
    select_threshold,
)
from dllm_eval.schedulers.blocks import BlockRunner, RowStep
from dllm_eval.schedulers.registry import Scheduler, register, register_variant

Span = tuple[int, int]
# When the still-masked suffix after the active block is recomputed (tiered cache only):
# with the scheduled tier-2 refresh (the seed's rule), at every block's first step (as the dual
# cache's full forward does), or never (it keeps the KV of the row's first, all-mask forward).
SUFFIX_REFRESH = ("tier2", "block", "never")


@dataclass
class AdaptiveParams(CommonParams):
    base_block_size: int = 16
    base_confidence_threshold: float = 0.8
    adaptation_rate: float = 0.2
    enable_dynamic_block: bool = True
    enable_adaptive_threshold: bool = True
    enable_tiered_cache: bool = True
    min_block_size: int = 8
    max_block_size: int = 64
    confidence_window: int = 5
    adaptation_sensitivity: float = 0.15
    scale_up_factor: float | None = None  # default 1 + adaptation_rate
    scale_down_factor: float | None = None  # default 1 - adaptation_rate
    entropy_threshold_high: float = 2.0
    entropy_threshold_low: float = 0.5
    min_threshold: float = 0.7
    max_threshold: float = 0.95
    safety_factor: float = 1.05
    efficiency_factor: float = 0.95
    tier2_stability_threshold: float = 0.85
    tier2_update_interval: int = 3
    suffix_refresh: str = "tier2"
    tier1_refresh: bool = False
    memory_efficiency_mode: bool = True

    def validate(self) -> None:
        # The common checks, minus gen_length % block_length: blocks here are variable-size.
        CommonParams.validate(dataclasses.replace(self, block_length=1))
        if not 1 <= self.min_block_size <= self.base_block_size <= self.max_block_size:
            raise UserError(f"need 1 <= min_block_size ({self.min_block_size}) <= base_block_size "
                            f"({self.base_block_size}) <= max_block_size ({self.max_block_size})")
        if not 0.0 < self.min_threshold <= self.base_confidence_threshold <= self.max_threshold <= 1.0:
            raise UserError(f"need 0 < min_threshold ({self.min_threshold}) <= base_confidence_threshold "
                            f"({self.base_confidence_threshold}) <= max_threshold ({self.max_threshold}) <= 1")
        if not 0.0 < self.adaptation_rate < 1.0:
            raise UserError(f"adaptation_rate must be in (0, 1), got {self.adaptation_rate}")
        if self.up <= 1.0 or not 0.0 < self.down < 1.0:
            raise UserError(f"need scale_up_factor > 1 and 0 < scale_down_factor < 1, got {self.up}, {self.down}")
        if self.confidence_window < 1:
            raise UserError(f"confidence_window must be >= 1, got {self.confidence_window}")
        if self.adaptation_sensitivity < 0:
            raise UserError(f"adaptation_sensitivity must be >= 0, got {self.adaptation_sensitivity}")
        if not 0.0 <= self.entropy_threshold_low <= self.entropy_threshold_high:
            raise UserError(f"need 0 <= entropy_threshold_low ({self.entropy_threshold_low}) <= "
                            f"entropy_threshold_high ({self.entropy_threshold_high})")
        if self.safety_factor < 1.0 or not 0.0 < self.efficiency_factor <= 1.0:
            raise UserError(f"need safety_factor >= 1 and 0 < efficiency_factor <= 1, got "
                            f"{self.safety_factor}, {self.efficiency_factor}")
        if not 0.0 <= self.tier2_stability_threshold <= 1.0:
            raise UserError(f"tier2_stability_threshold must be in [0, 1], got {self.tier2_stability_threshold}")
        if self.tier2_update_interval < 1:
            raise UserError(f"tier2_update_interval must be >= 1, got {self.tier2_update_interval}")
        if self.suffix_refresh not in SUFFIX_REFRESH:
            raise UserError(f"suffix_refresh must be one of {', '.join(SUFFIX_REFRESH)}, got {self.suffix_refresh!r}")
        for name in ("enable_dynamic_block", "enable_adaptive_threshold", "enable_tiered_cache",
                     "tier1_refresh", "memory_efficiency_mode"):
            if not isinstance(getattr(self, name), bool):
                raise UserError(f"{name} must be true or false, got {getattr(self, name)!r}")

    @property
    def up(self) -> float:
        return 1.0 + self.adaptation_rate if self.scale_up_factor is None else self.scale_up_factor

    @property
    def down(self) -> float:
        return 1.0 - self.adaptation_rate if self.scale_down_factor is None else self.scale_down_factor


@dataclass
class RowControl:
    """Everything one row adapts: its block, tau, recent confidence and cache tiers."""

    row: int
    start: int
    end: int
    tau: float
    recent: deque[float]
    prompt_real: int  # real (non-padding) prompt tokens: tier 1
    block: int = 0
    started: bool = False  # has the active block had a forward yet
    any_forward: bool = False  # has the row had a forward at all (tier 1 written)
    steps_in_block: int = 0
    done: bool = False
    sizes: list[int] = field(default_factory=list)
    stable: list[Span] = field(default_factory=list)  # tier 2
    unstable: list[Span] = field(default_factory=list)  # finished, but tier 3
    promote: list[Span] = field(default_factory=list)  # finished stable, refreshed at the next step
    adaptations: int = 0
    tau_seen: list[float] = field(default_factory=list)
    refreshed: dict[str, int] = field(default_factory=lambda: {"tier1": 0, "tier2": 0, "tier3": 0, "active": 0})


@dataclass(frozen=True)
class Plan:
    """One row's forward for this step: `window=None` is a full forward."""

    window: tuple[int, ...] | None
    start: int
    end: int
    block: int


def positions(spans: Sequence[Span]) -> list[int]:
    return [p for s, e in spans for p in range(s, e)]


def tiered_window(active: Span, tier3: Sequence[Span], promote: Sequence[Span], tier2: Sequence[Span],
                  suffix: Span | None) -> tuple[int, ...]:
    """The positions a tiered-cache step recomputes: the active block and tier 3 always, blocks
    being promoted, and (on a scheduled refresh) tier 2 and the masked suffix; sorted, unique."""
    spans = [active, *tier3, *promote, *tier2] + ([suffix] if suffix is not None else [])
    return tuple(sorted(set(positions(spans))))


def mean_entropy(logits: Tensor, masked: Tensor) -> Tensor:
    """[g] mean entropy (nats) of softmax(logits) over each row's masked positions."""
    probs = torch.softmax(logits.double(), dim=-1)
    ent = -torch.special.xlogy(probs, probs).sum(dim=-1)
    return (ent * masked).sum(dim=1) / masked.sum(dim=1).clamp(min=1)


@register("adaptive", "Self-correcting adaptive scheduling: dynamic block size + adaptive tau + tiered cache")
class Adaptive(Scheduler):
    Params = AdaptiveParams

    def decode(self, runner: BlockRunner) -> None:
        p, state = self.params, runner.state
        first = state.prompt_len
        prompt_real = (torch.full((state.batch,), first) if state.attention_mask is None
                       else state.attention_mask[:, :first].sum(dim=1)).tolist()
        rows = [RowControl(r, first, min(first + p.base_block_size, state.length), p.base_confidence_threshold,
                           deque(maxlen=p.confidence_window), prompt_real=int(prompt_real[r]))
                for r in range(state.batch)]
        for ctl in rows:
            ctl.tau_seen.append(ctl.tau)
            self._skip_finished(state, ctl)
        while live := [ctl for ctl in rows if not ctl.done]:
            self._step(runner, rows, {ctl.row: self._plan(state, ctl) for ctl in live})
        for ctl in rows:
            n = len(ctl.sizes)
            state.trace.metrics[ctl.row].update(
                avg_block_size=sum(ctl.sizes) / n if n else 0.0, cache_hit_rate=runner.stats.hit_rate(ctl.row),
                adaptations=ctl.adaptations, block_sizes=ctl.sizes, tau_final=ctl.tau,
                tau_range=[min(ctl.tau_seen), max(ctl.tau_seen)], refreshed_positions=dict(ctl.refreshed),
                nfe=int(state.trace.row_nfe[ctl.row]), memory_efficiency_mode=p.memory_efficiency_mode,
                components={"dynamic_block": p.enable_dynamic_block, "adaptive_threshold": p.enable_adaptive_threshold,
                            "tiered_cache": p.enable_tiered_cache})

    # -- what each row runs this step ------------------------------------------------------
    def _plan(self, state: DecodeState, ctl: RowControl) -> Plan:
        p = self.params
        if not p.enable_tiered_cache:  # Fast-dLLM dual cache
            if not ctl.started:
                return Plan(None, ctl.start, ctl.end, ctl.block)
            return Plan(tuple(range(ctl.start, ctl.end)), ctl.start, ctl.end, ctl.block)
        if not ctl.any_forward:
            return Plan(None, ctl.start, ctl.end, ctl.block)
        suffix = (ctl.end, state.length) if self._suffix_due(ctl) and ctl.end < state.length else None
        window = tiered_window((ctl.start, ctl.end), ctl.unstable, ctl.promote,
                               ctl.stable if self._refresh_due(ctl) else (), suffix)
        if self._tier1_due(ctl):
            window = tuple(range(state.prompt_len)) + window
        return Plan(window, ctl.start, ctl.end, ctl.block)

    def _refresh_due(self, ctl: RowControl) -> bool:
        """Scheduled tier-2 refresh: the first step of blocks interval, 2*interval, ..."""
        k = self.params.tier2_update_interval
        return not ctl.started and ctl.block > 0 and ctl.block % k == 0

    def _suffix_due(self, ctl: RowControl) -> bool:
        """Is the masked suffix recomputed this step (`suffix_refresh`)?"""
        rule = self.params.suffix_refresh
        if rule == "block":
            return not ctl.started and ctl.block > 0
        return rule == "tier2" and self._refresh_due(ctl)

    def _tier1_due(self, ctl: RowControl) -> bool:
        """`tier1_refresh`: recompute the prompt at every later block's first step (the seed freezes it)."""
        return self.params.tier1_refresh and not ctl.started and ctl.block > 0

    def _note_refreshes(self, state: DecodeState, ctl: RowControl, plan: Plan) -> None:
        """Trace the refreshes this step's window makes (spans in generation-region coordinates),
        then move promoted blocks into tier 2."""
        trace, size, off = state.trace, plan.end - plan.start, state.prompt_len

        def gen(spans: Sequence[Span]) -> list[list[int]]:
            return [[s - off, e - off] for s, e in spans]

        ctl.refreshed["active"] += size
        if plan.window is None:
            if not ctl.any_forward and self.params.enable_tiered_cache:
                trace.event(ctl.row, "cache_refresh", tier=1, reason="initial", block=ctl.block,
                            positions=ctl.prompt_real)
                ctl.refreshed["tier1"] += ctl.prompt_real
            return
        if not self.params.enable_tiered_cache:
            return
        ctl.refreshed["tier3"] += len(positions(ctl.unstable))
        if ctl.promote:
            trace.event(ctl.row, "cache_refresh", tier=2, reason="promotion", block=ctl.block,
                        blocks=gen(ctl.promote), positions=len(positions(ctl.promote)))
            ctl.refreshed["tier2"] += len(positions(ctl.promote))
        if self._refresh_due(ctl) or self._suffix_due(ctl):
            stable = ctl.stable if self._refresh_due(ctl) else []
            suffix = state.length - ctl.end if self._suffix_due(ctl) else 0
            n = len(positions(stable)) + suffix
            trace.event(ctl.row, "cache_refresh", tier=2, reason="scheduled", block=ctl.block,
                        blocks=gen(stable), suffix=[ctl.end - off, ctl.end - off + suffix], positions=n)
            ctl.refreshed["tier2"] += n
        if self._tier1_due(ctl):
            trace.event(ctl.row, "cache_refresh", tier=1, reason="tier1_refresh", block=ctl.block,
                        positions=ctl.prompt_real)
            ctl.refreshed["tier1"] += ctl.prompt_real
        ctl.stable.extend(ctl.promote)
        ctl.promote.clear()

    # -- one step of every row that is not done, in one model call -----------------------------
    def _step(self, runner: BlockRunner, rows: list[RowControl], plans: dict[int, Plan]) -> None:
        p, state = self.params, runner.state
        live = [ctl for ctl in rows if ctl.row in plans]
        logits, spans = runner.forward_each([RowStep(plan.window, plan.start, plan.end) if (plan := plans.get(r))
                                             else None for r in range(state.batch)])
        for ctl in live:
            self._note_refreshes(state, ctl, plans[ctl.row])
            ctl.started = ctl.any_forward = True
            ctl.steps_in_block += 1

        masked = state.masked_at(spans.positions, spans.inside)
        proposal = runner.propose_each(logits, spans)
        if p.enable_adaptive_threshold:
            entropy = mean_entropy(logits, masked).tolist()
            for ctl in live:
                self._adapt_tau(state, ctl, entropy[ctl.row])
        tau = torch.tensor([[ctl.tau] for ctl in rows], dtype=torch.float64, device=masked.device)
        keep = select_threshold(proposal.confidence, masked, tau, spans.widths) & spans.active[:, None]
        blocks = torch.tensor([plans[ctl.row].block if ctl.row in plans else -1 for ctl in rows], device=masked.device)
        runner.commit_each(blocks, spans, keep, proposal)
        conf = torch.where(keep, proposal.confidence.double(), 0.0)
        recent = (conf.sum(dim=1) / keep.sum(dim=1).clamp(min=1)).tolist()  # mean commit confidence
        left = state.masked_at(spans.positions, spans.inside).any(dim=1).tolist()
        for ctl in live:
            ctl.recent.append(recent[ctl.row])
            if not left[ctl.row]:
                self._finish_block(state, ctl)
                self._skip_finished(state, ctl)

    # -- the controllers ---------------------------------------------------------------------
    def _adapt_tau(self, state: DecodeState, ctl: RowControl, entropy: float) -> None:
        p = self.params
        old = ctl.tau
        if entropy > p.entropy_threshold_high:
            ctl.tau = min(p.max_threshold, ctl.tau * p.safety_factor)
        elif entropy < p.entropy_threshold_low:
            ctl.tau = max(p.min_threshold, ctl.tau * p.efficiency_factor)
        if ctl.tau != old:
            ctl.adaptations += 1
            ctl.tau_seen.append(ctl.tau)
            state.trace.event(ctl.row, "tau", block=ctl.block, old=old, new=ctl.tau, entropy=entropy)

    def _finish_block(self, state: DecodeState, ctl: RowControl) -> None:
        p = self.params
        span = (ctl.start, ctl.end)
        confs = state.commit_conf[ctl.row, ctl.start - state.prompt_len:ctl.end - state.prompt_len]
        known = confs[~confs.isnan()]
        mean_conf = float(known.mean()) if known.numel() else 1.0  # only EOS-filled: nothing uncertain
        tier = None
        if p.enable_tiered_cache:
            tier = 2 if mean_conf >= p.tier2_stability_threshold else 3
            (ctl.promote if tier == 2 else ctl.unstable).append(span)
        ctl.sizes.append(ctl.end - ctl.start)
        state.trace.event(ctl.row, "block", block=ctl.block, start=ctl.start - state.prompt_len,
                          end=ctl.end - state.prompt_len, size=ctl.end - ctl.start, mean_conf=mean_conf,
                          steps=ctl.steps_in_block, tier=tier)
        if ctl.end >= state.length:
            ctl.done = True
            return
        size = self._next_size(state, ctl, ctl.end - ctl.start) if p.enable_dynamic_block else p.base_block_size
        ctl.block += 1
        ctl.start, ctl.end = ctl.end, min(ctl.end + size, state.length)
        ctl.started = False
        ctl.steps_in_block = 0

    def _next_size(self, state: DecodeState, ctl: RowControl, size: int) -> int:
        """Scale the size of the block just finished by the row's recent confidence (only the
        last block is ever clipped, and no block follows it)."""
        p = self.params
        current = size
        recent = sum(ctl.recent) / len(ctl.recent)
        high = p.base_confidence_threshold + p.adaptation_sensitivity
        low = p.base_confidence_threshold - p.adaptation_sensitivity
        if recent > high:
            new, decision = min(p.max_block_size, max(current + 1, round(current * p.up))), "up"
        elif recent < low:
            new, decision = max(p.min_block_size, min(current - 1, round(current * p.down))), "down"
        else:
            new, decision = current, "hold"
        if new != current:
            ctl.adaptations += 1
        state.trace.event(ctl.row, "block_size", block=ctl.block + 1, recent_confidence=recent, previous=current,
                          size=new, decision=decision)
        return new

    def _skip_finished(self, state: DecodeState, ctl: RowControl) -> None:
        """With `stop_at_eos`, blocks can be complete before they are reached (EOS-filled): a row
        whose whole remaining region is filled is done; a filled block is closed without a forward."""
        while not ctl.done and not bool(state.incomplete(ctl.start, ctl.end)[ctl.row]):
            if not bool(state.incomplete(ctl.start, state.length)[ctl.row]):
                ctl.done = True
                return
            self._finish_block(state, ctl)


register_variant("adaptive_block", Adaptive, "Adaptive scheduling ablation: dynamic block size only",
                 enable_dynamic_block=True, enable_adaptive_threshold=False, enable_tiered_cache=False)
register_variant("adaptive_threshold", Adaptive, "Adaptive scheduling ablation: entropy-driven threshold only",
                 enable_dynamic_block=False, enable_adaptive_threshold=True, enable_tiered_cache=False)
register_variant("tiered_cache", Adaptive, "Adaptive scheduling ablation: tiered KV cache only",
                 enable_dynamic_block=False, enable_adaptive_threshold=False, enable_tiered_cache=True)
register_variant("adaptive_static", Adaptive,
                 "Adaptive scheduling with every component off (Fast-dLLM dual cache, B=16, tau=0.8)",
                 enable_dynamic_block=False, enable_adaptive_threshold=False, enable_tiered_cache=False)
register_variant("dual_stale_suffix", Adaptive,
                 "Dual cache whose masked suffix keeps the first forward's KV (the tiered cache's one active piece)",
                 enable_dynamic_block=False, enable_adaptive_threshold=False, enable_tiered_cache=True,
                 tier2_update_interval=1, tier2_stability_threshold=0.0, tier1_refresh=True, suffix_refresh="never")
