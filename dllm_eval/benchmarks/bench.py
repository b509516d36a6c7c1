"""`dllm-eval bench`: fixed decode workloads, timed against the hardware's floors.

    dllm-eval bench --workload cpu                  # the embedded model on CPU: a quick check
    dllm-eval bench --workload llada-8b [--reference DIR]   # random LLaDA-8B shape, bf16, one GPU

For each (scheduler, batch, prompt length, compile mode) it decodes warm, then prints and writes
(results/bench/<workload>_<device>.md) one row: NFE, model calls, tokens/s, time per call, the
pure-forward time of the same calls (each distinct call timed alone), the overhead ratio (wall
time / the pure-forward sum: what the scheduler's own code costs), the HBM floor (bytes each call
must read: weights plus the KV it attends to, at the measured copy bandwidth), the compute floor
(its FLOPs at the measured sustained bf16 matmul rate: see `matmul_rates`) and peak memory. The targets of issue 11 follow as a
table with measured values and met / not met.

Random weights give meaningless confidences (tau=0.9 would commit one token per step), so the
fixed quota `steps=80` (3.2 tokens per step over gen 256) stands in for tau=0.9 on both sides of
every comparison. `--reference DIR` names a checkout of NVlabs/Fast-dLLM's `llada/` folder (an
ignored scratch folder: never committed); its `generate_with_dual_cache` runs on the same weights
and the same NFE, with the run-time patches transformers 5 needs (post_init, tie_weights(**kw),
use_cache=False) applied here only.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dllm_eval.errors import UserError
from dllm_eval.models.cache import KVCache
from dllm_eval.models.graphs import EXPERIMENTAL

GEN, BLOCK, QUOTA_STEPS = 256, 32, 80


# ----------------------------------------------------------------------------------------------
# Hardware floors
# ----------------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    """Wait for the GPU's queued work (nothing to wait for on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def _settle(fn: Callable[[], Any], device: torch.device, seconds: float) -> None:
    """Run `fn` back to back for `seconds`: a GPU under dense load reaches its power cap and lowers
    its clock within about a second, so a timing that should match a long decode lets it settle."""
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        fn()
        _sync(device)


def _timed(fn: Callable[[], Any], device: torch.device, reps: int = 5, settle_s: float = 0.0) -> float:
    """Median seconds of `fn` (synchronised around each call), after `_settle` for `settle_s`."""
    _settle(fn, device, settle_s)
    times = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def copy_bandwidth(device: torch.device) -> float:
    """Bytes/s of a large device-to-device copy (read + write counted): the HBM rate a decode
    step's weight reads can reach."""
    n = (1 << 30) if device.type == "cuda" else (1 << 26)
    src = torch.empty(n, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    return 2 * n / _timed(lambda: dst.copy_(src), device, reps=10)


# How long the sustained matmul rate lets the GPU settle under load, then measures (seconds).
SETTLE_S, SUSTAIN_S = 2.0, 1.0


def matmul_rates(device: torch.device, dtype: torch.dtype) -> tuple[float, float]:
    """(sustained, burst) FLOP/s of a large square matmul in `dtype`; the compute floors use the
    sustained one.

    - burst: the median of 10 products after one warm-up (what the first bench runs measured): the
      clock is still at its boost value (1,980 MHz on the H200);
    - sustained: products back to back for `SUSTAIN_S` seconds after `SETTLE_S` seconds of them.
      Dense bf16 products hold an H200 at its 700 W cap, where its clock sinks to 1,500-1,770 MHz
      (nvidia-smi dmon, 2026-12-02); a decode that runs for seconds runs at that clock, so a floor
      at the burst rate would charge the code for the card's power limit.
    On a CPU both are the same measurement."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    burst = 2 * n**3 / _timed(lambda: a @ b, device, reps=10)
    if device.type != "cuda":
        return burst, burst
    _settle(lambda: a @ b, device, SETTLE_S)
    reps = max(1, round(SUSTAIN_S * burst / (2 * n**3)))
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    end.synchronize()
    return 2 * n**3 * reps / (start.elapsed_time(end) / 1e3), burst


# ----------------------------------------------------------------------------------------------
# Recording the calls of a decode, and what each must cost at least
# ----------------------------------------------------------------------------------------------


@dataclass
class Call:
    """One model call of a decode: enough to run it again alone and to price it (the cache is
    not kept per call: a re-run uses the recorder's latest cache of the same shape)."""

    shape: tuple[int, int]  # input ids [B, W]
    kwargs: dict[str, Any]  # without cache and attention_mask
    cache_length: int | None
    masked: bool

    @property
    def key(self) -> tuple:
        """Calls with equal keys cost the same: shapes, cache use and the window's layout (per-row
        windows and logits positions of `adaptive`/`drs` are tensors: keyed by their shapes, which
        set the work; their values only say which positions)."""
        k = self.kwargs
        return (self.shape, _layout(k.get("window")), k.get("attend"), k.get("write"),
                _layout(k.get("logits_positions")), _layout(k.get("window_valid")), self.cache_length, self.masked)


def _layout(index: Any) -> Any:
    """A hashable description of a window or logits index: range, slice, tensor or None."""
    if isinstance(index, range | slice):
        return (type(index).__name__, index.start, index.stop)
    if isinstance(index, Tensor):
        return ("tensor", tuple(index.shape))
    return index


class Recorder:
    """Passes calls to the model and keeps their shapes (attribute reads fall through)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.calls: list[Call] = []
        self.recording = False
        self.caches: dict[tuple[int, int], Any] = {}  # (batch, length) -> the latest cache of that shape
        self.masks: dict[tuple[int, int], Tensor] = {}
        # the tokens of each distinct call's first occurrence: its re-run alone uses real tokens,
        # since a GPU runs matmuls over constant inputs (all zeros) faster, at lower power
        self.inputs: dict[tuple, Tensor] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    @property
    def served_model(self) -> Any:
        return getattr(self.model, "served_model", self.model)

    def __call__(self, input_ids: Tensor, **kwargs: Any) -> Tensor:
        if self.recording:
            rest = {k: v for k, v in kwargs.items() if k not in ("cache", "attention_mask")}
            cache, mask = kwargs.get("cache"), kwargs.get("attention_mask")
            self.calls.append(Call(tuple(input_ids.shape), rest, None if cache is None else cache.length,
                                   mask is not None))
            if self.calls[-1].key not in self.inputs:
                self.inputs[self.calls[-1].key] = input_ids.clone()
            if cache is not None:
                self.caches[(input_ids.shape[0], cache.length)] = cache
            if mask is not None:
                self.masks[tuple(mask.shape)] = mask
        return self.model(input_ids, **kwargs)

    forward = __call__


def call_cost(call: Call, config: Any, weight_bytes: int, elem: int) -> tuple[float, float]:
    """(bytes that must move, FLOPs) of one call: all weights are read once; the KV it attends
    to is read (and the window's written); matmuls cost 2 x params x query tokens, attention
    4 x queries x keys x d_model per layer, the head 2 x d_model x vocab per scored position."""
    b, w = call.shape
    length = call.cache_length or w
    attend = call.kwargs.get("attend", "window")
    win = call.kwargs.get("window")
    keys = w if attend == "window" else length if attend == "cache" else (win.start if isinstance(win, range) else 0) + w
    lp = call.kwargs.get("logits_positions")
    scored = w if lp is None else len(range(*lp.indices(w))) if isinstance(lp, slice) else lp.shape[-1]
    d, layers, vocab = config.d_model, config.n_layers, config.padded_vocab
    kv_width = config.effective_n_kv_heads * config.head_dim
    body = weight_bytes // elem - 2 * vocab * d  # parameters outside the embedding and the head
    flops = 2 * body * b * w + 4 * b * w * keys * d * layers + 2 * d * vocab * b * scored
    kv_bytes = 2 * layers * b * keys * kv_width * elem
    return float(weight_bytes + kv_bytes), float(flops)


def call_floors_ms(call: Call, model: Any, floors: tuple[float, float]) -> tuple[float, float]:
    """(HBM floor, compute floor) of one call in ms: `call_cost` at the measured copy bandwidth
    and matmul rate, for `model`'s weights (a serving wrapper's model's)."""
    served = getattr(model, "served_model", model)
    params = list(served.parameters())
    moved, flops = call_cost(call, served.config, sum(p.numel() * p.element_size() for p in params),
                             params[0].element_size())
    return 1e3 * moved / floors[0], 1e3 * flops / floors[1]


def dual_step(model: Any, batch: int, prompt: int, device: torch.device) -> tuple[Callable[[], Any], Call]:
    """The dual-cache step the bench times alone, and its `Call`: block `BLOCK` right after a
    `prompt`-token random prompt (canvas prompt + GEN), over a cache one full forward filled,
    writing its KV. `model` may be a serving wrapper (its pooled cache is used then)."""
    length, window = prompt + GEN, range(prompt, prompt + BLOCK)
    ids = random_prompts(batch, length, min(int(model.config.mask_token_id), 20000)).to(device)
    cache = KVCache.for_model(model, batch, length)
    model(ids, cache=cache, write=True)
    kwargs: dict[str, Any] = {"window": window, "attend": "cache", "write": True, "logits_positions": slice(0, BLOCK)}
    step = functools.partial(model, ids[:, window.start: window.stop].contiguous(), cache=cache, **kwargs)
    return step, Call((batch, BLOCK), kwargs, length, False)


# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


def random_llada_on_device(config: Any, device: torch.device | str, dtype: torch.dtype, seed: int = 0) -> Any:
    """A LLaDA model of `config` with random weights drawn straight on the device (an 8B model's
    16 GB never touch the disk or the host), by the rule of `dllm-eval random-checkpoint`
    (`models.llada.random_tensors`): N(0, 0.02), residual output projections scaled by
    1/sqrt(2 * n_layers), norms at one."""
    from dllm_eval.models.llada import LLaDAModelLM

    with torch.device("meta"):
        model = LLaDAModelLM(config)
    model = model.to_empty(device=device).to(dtype)
    gen = torch.Generator(device=device).manual_seed(seed)
    residual = 0.02 / math.sqrt(2 * config.n_layers)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or name.endswith("ln_f.weight"):
                p.fill_(1.0)
            else:
                std = residual if ".blocks." in name and name.endswith(("attn_out.weight", "ff_out.weight")) else 0.02
                p.normal_(0.0, std, generator=gen)
    return model.eval().requires_grad_(False)


def llada_8b_on_device(device: torch.device, seed: int = 0) -> Any:
    """The real LLaDA-8B shape in bf16, random weights, with the head's mask-token row zeroed.

    Random logits put the mask token first at some position now and then; Fast-dLLM's quota loop
    then writes a mask back as a "decoded" token and runs past its schedule (an IndexError in the
    reference, not in ours). A zero row gives the mask token logit 0, below the best of 126k
    random logits (std ~1.3) everywhere, as a trained model's head does; both sides of every
    comparison read these same weights."""
    from dllm_eval.models.llada import LLADA_8B_CONFIG, LLaDAConfig

    config = LLaDAConfig.from_dict(LLADA_8B_CONFIG)
    model = random_llada_on_device(config, device, torch.bfloat16, seed)
    model.model.transformer.ff_out.weight[config.mask_token_id].zero_()
    return model


def reference_model(ref_dir: Path, ours: Any, dtype: torch.dtype) -> tuple[Any, Callable[..., Any]]:
    """Fast-dLLM's LLaDAModelLM over the same weights as `ours` (shared storage when dtypes
    match), and its `generate_with_dual_cache`."""
    llada_dir = ref_dir / "llada" if (ref_dir / "llada").is_dir() else ref_dir
    if not (llada_dir / "generate.py").is_file():
        raise UserError(f"--reference {ref_dir}: no generate.py (give NVlabs/Fast-dLLM's checkout or its llada/ folder)")
    sys.path.insert(0, str(llada_dir))
    from generate import generate_with_dual_cache  # type: ignore[import-not-found]
    from model.configuration_llada import LLaDAConfig as RefConfig  # type: ignore[import-not-found]
    from model.modeling_llada import LLaDAModel, LLaDAModelLM, create_model_config_from_pretrained_config  # type: ignore[import-not-found]

    LLaDAModelLM.tie_weights = lambda self, *args, **kwargs: None  # transformers 5 passes kwargs; LLaDA is untied
    cfg = RefConfig(**ours.config.to_dict())
    cfg.use_cache = False  # transformers 5 no longer gives configs this attribute
    inner_cfg = create_model_config_from_pretrained_config(cfg)
    inner_cfg.init_device = "meta"
    with torch.device("meta"):
        inner = LLaDAModel(inner_cfg, init_params=False)
        ref = LLaDAModelLM(cfg, model=inner)
        ref.post_init()  # transformers 5 wants it right after construction (it may initialise weights: load after)
    state = {k: v.to(dtype) for k, v in ours.state_dict().items()}
    missing, unexpected = ref.load_state_dict(state, strict=False, assign=True)
    params = {n for n, _ in ref.named_parameters()}
    if set(missing) & params or unexpected:
        raise UserError(f"reference weights do not line up: missing {sorted(set(missing) & params)[:3]}, "
                        f"unexpected {sorted(unexpected)[:3]}")
    ref = ref.eval().requires_grad_(False)
    if any(p.is_meta for p in ref.parameters()):
        raise UserError("a reference parameter stayed on the meta device")
    with torch.inference_mode():  # the reference must compute our model's function before it is timed
        probe = torch.randint(0, min(int(ours.config.mask_token_id), 20000), (1, 64), device=ours.device)
        want, got = ours(probe).float(), ref(probe).logits.float()
        gap = float((got - want).norm() / want.norm())
    if gap > (1e-3 if dtype == torch.float32 else 0.1):
        raise UserError(f"the reference model disagrees with ours on the same weights (relative L2 {gap:.3g})")
    return ref, generate_with_dual_cache


# ----------------------------------------------------------------------------------------------
# One row
# ----------------------------------------------------------------------------------------------


@dataclass
class Row:
    label: str
    batch: int
    prompt: int
    mode: str
    nfe: float = 0.0  # per prompt (mean)
    calls: int = 0
    max_row_nfe: int = 0  # summed over batches: each batch's largest per-row NFE
    n_prompts: int = 0
    step_ms: float = 0.0  # mean pure time of the cached (window) steps alone
    step_floor_ms: float = 0.0  # their mean HBM floor
    tokens_per_s: float = 0.0
    wall_s: float = 0.0
    pure_s: float = 0.0
    hbm_floor_s: float = 0.0
    compute_floor_s: float = 0.0
    peak_gib: float = 0.0
    note: str = ""
    extra: dict[str, float] = field(default_factory=dict)
    token_hashes: list[str] = field(default_factory=list)  # each prompt's generated tokens, hashed
    same_as_eager: float | None = None  # share of prompts whose tokens equal eager mode's (compile modes)
    warm_s: float = 0.0  # the two warm-up decodes: compiling (inductor) and capturing (graphs) happen there

    @property
    def per_call_ms(self) -> float:
        return 1e3 * self.wall_s / max(1, self.calls)

    @property
    def overhead(self) -> float:
        return self.wall_s / self.pure_s if self.pure_s else float("nan")


@torch.inference_mode()
def pure_forward_time(recorder: Recorder, device: torch.device, reps: int = 3) -> tuple[float, dict[tuple, float]]:
    """Sum over the recorded calls of each call's own time (its distinct shape timed alone), and
    the time of each distinct call."""
    per_key: dict[tuple, float] = {}
    total = 0.0
    for call in recorder.calls:
        if call.key not in per_key:
            ids = recorder.inputs[call.key]
            batch, length = call.shape[0], call.cache_length or call.shape[1]
            kwargs = dict(call.kwargs, cache=recorder.caches.get((batch, length)) if call.cache_length else None,
                          attention_mask=recorder.masks.get((batch, length)) if call.masked else None)
            per_key[call.key] = _timed(lambda ids=ids, kwargs=kwargs: recorder.model(ids, **kwargs), device, reps=reps)
        total += per_key[call.key]
    return total, per_key


def bench_row(model: Any, label: str, scheduler: str, params: dict[str, Any], prompts: Tensor, batch: int,
              mode: str, floors: tuple[float, float], device: torch.device) -> Row:
    """Decode `prompts` in batches of `batch` (after a warm-up decode of the first batch)."""
    from dllm_eval.schedulers import get_scheduler

    recorder = Recorder(model)
    sched = get_scheduler(scheduler, gen_length=GEN, **params)
    row = Row(label, batch, prompts.shape[1], mode)
    started = time.perf_counter()
    try:
        for _ in range(2):  # warm: graphs are captured on a call's second occurrence
            sched.generate(recorder, prompts[:batch])
    except UserError as exc:
        row.note = str(exc)
        return row
    _sync(device)
    row.warm_s = time.perf_counter() - started
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    recorder.recording = True
    nfe, max_row = 0, 0
    started = time.perf_counter()
    for lo in range(0, prompts.shape[0], batch):
        out = sched.generate(recorder, prompts[lo: lo + batch])
        row.token_hashes.extend(token_hash(t) for t in out.tokens.cpu())
        nfe += sum(t["nfe"] for t in out.traces)
        max_row += max(t["nfe"] for t in out.traces)  # the calls a batch needs at least
    _sync(device)
    row.wall_s = time.perf_counter() - started
    recorder.recording = False
    row.nfe = nfe / prompts.shape[0]
    row.n_prompts = prompts.shape[0]
    row.calls = len(recorder.calls)
    row.max_row_nfe = max_row
    row.tokens_per_s = prompts.shape[0] * GEN / row.wall_s
    row.peak_gib = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
    weights = sum(p.numel() * p.element_size() for p in getattr(model, "served_model", model).parameters())
    elem = next(iter(getattr(model, "served_model", model).parameters())).element_size()
    bandwidth, rate = floors
    row.pure_s, per_key = pure_forward_time(recorder, device)
    steps, step_floor = [], []
    for call in recorder.calls:
        moved, flops = call_cost(call, model.config, weights, elem)
        row.hbm_floor_s += moved / bandwidth
        row.compute_floor_s += flops / rate
        if call.kwargs.get("attend") in ("cache", "prefix"):
            steps.append(per_key[call.key])
            step_floor.append(moved / bandwidth)
    if steps:
        row.step_ms, row.step_floor_ms = 1e3 * statistics.mean(steps), 1e3 * statistics.mean(step_floor)
    return row


# ----------------------------------------------------------------------------------------------
# Workloads
# ----------------------------------------------------------------------------------------------

Q80 = {"cache": "dual", "threshold": None, "steps": QUOTA_STEPS, "block_length": BLOCK}
SETTINGS: dict[str, tuple[str, dict[str, Any]]] = {
    "fast_dllm dual q80": ("fast_dllm", Q80),
    "fast_dllm prefix q80": ("fast_dllm", {**Q80, "cache": "prefix"}),
    "adaptive": ("adaptive", {"base_block_size": BLOCK}),
    "drs_v2": ("drs_v2", {"block_length": BLOCK}),
    "adaptive, identical rows": ("adaptive", {"base_block_size": BLOCK}),
    "drs_v2, identical rows": ("drs_v2", {"block_length": BLOCK}),
}
# Settings decoded on copies of one prompt: the rows never diverge (the target holds "with and
# without diverging rows"; random prompts make rows diverge).
IDENTICAL_ROWS = ("adaptive, identical rows", "drs_v2, identical rows")


def random_prompts(n: int, length: int, vocab_hi: int, seed: int = 0) -> Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab_hi, (n, length), generator=gen)


# (setting, batch, prompt length) rows per workload: what issue 11's targets read, and no more
# (a batch-32 row over a 900-token prompt costs about a minute of H200 time per compile mode)
WORKLOAD_ROWS: dict[str, list[tuple[str, int, int]]] = {
    "llada-8b": [("fast_dllm dual q80", 1, 256), ("fast_dllm prefix q80", 1, 256), ("fast_dllm dual q80", 8, 256),
                 ("adaptive", 8, 256), ("drs_v2", 8, 256), ("adaptive, identical rows", 8, 256),
                 ("drs_v2, identical rows", 8, 256), ("fast_dllm dual q80", 32, 256), ("fast_dllm dual q80", 1, 900)],
    "cpu": [("fast_dllm dual q80", 1, 64), ("fast_dllm dual q80", 4, 64), ("adaptive", 4, 64), ("drs_v2", 4, 64)],
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workload", choices=sorted(WORKLOAD_ROWS), default="cpu",
                        help="cpu: the embedded model on CPU (quick check); llada-8b: random LLaDA-8B shape, bf16, GPU")
    parser.add_argument("--modes", default=None, help="compile modes to compare (default: none on CPU; none,graphs on GPU)")
    parser.add_argument("--rows", default=None,
                        help="override the workload's rows: 'setting@batch@prompt;...' (settings: " + ", ".join(SETTINGS) + ")")
    parser.add_argument("--gsm8k-prompts", type=int, default=0,
                        help="also time the GSM8K-sized workload on this many 900-token prompts at batch 32, 4 tokens/step")
    parser.add_argument("--reference", type=Path, help="NVlabs/Fast-dLLM checkout (its llada/ folder): run it side by side")
    parser.add_argument("--fidelity", action="store_true", help="bf16 vs fp32 logits, ours and the reference's")
    parser.add_argument("--out", type=Path, help="markdown file (default: results/bench/<workload>_<device>.md)")
    parser.add_argument("--profile", action="store_true",
                        help="also break the batch-32 dual step and a GSM8K-sized full refresh down by kernel kind "
                             "(torch.profiler): where the time over the floors goes")
    parser.add_argument("--resume", action="store_true",
                        help="keep what an earlier run of the same workload measured (the .json next to --out) and "
                             "measure only the rest: a long GPU bench can be split over several calls")
    parser.add_argument("--experimental", default="",
                        help="comma-separated step optimisations to turn on for this run, to measure their gain "
                             "(models.graphs.EXPERIMENTAL: tensor-window-graphs, fused-projections)")


def parse_rows(text: str) -> list[tuple[str, int, int]]:
    rows = []
    for part in filter(None, (x.strip() for x in text.split(";"))):
        try:
            label, batch, prompt = part.split("@")
            rows.append((label, int(batch), int(prompt)))
        except ValueError:
            raise UserError(f"--rows entry {part!r} is not setting@batch@prompt") from None
        if label not in SETTINGS:
            raise UserError(f"--rows: unknown setting {label!r}; choose from {', '.join(SETTINGS)}")
    return rows


def run(args: argparse.Namespace) -> int:
    """`dllm-eval bench`, with the --experimental switches on for this run only."""
    switched = [x.strip() for x in args.experimental.split(",") if x.strip()]
    for x in switched:
        if x not in EXPERIMENTAL:
            raise UserError(f"--experimental {x!r} is not a switch; choose from {', '.join(EXPERIMENTAL)}")
    before = dict(EXPERIMENTAL)
    EXPERIMENTAL.update(dict.fromkeys(switched, True))
    try:
        return _run(args, switched)
    finally:
        EXPERIMENTAL.update(before)


def _run(args: argparse.Namespace, switched: list[str]) -> int:
    gpu = args.workload != "cpu"
    if gpu and not torch.cuda.is_available():
        raise UserError(f"--workload {args.workload} needs a CUDA GPU; use --workload cpu here")
    device = torch.device("cuda" if gpu else "cpu")
    modes = (args.modes or ("none,graphs" if gpu else "none")).split(",")
    plan = parse_rows(args.rows) if args.rows else WORKLOAD_ROWS[args.workload]
    from dllm_eval.models.graphs import accelerate, resolve_compile_mode

    for m in modes:
        resolve_compile_mode(m, device)
    if gpu:
        base = llada_8b_on_device(device)
        base.fuse_projections()  # before any capture (it moves the weights); used only where turned on
        name = "random LLaDA-8B shape (8.0B parameters, bf16), drawn on the device"
    else:
        from dllm_eval.frontend import load_front_end
        from dllm_eval.models import EMBEDDED_MODEL_DIR

        base = load_front_end(EMBEDDED_MODEL_DIR, device="cpu", compile="none").model
        name = "embedded tiny_llada (fp32)"
    if switched:
        name += f"; experimental switches on: {', '.join(switched)}"
    out = args.out or Path("results/bench") / f"{args.workload}_{device.type}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    state = out.with_suffix(".json")  # what this file's runs measured, for --resume
    if getattr(args, "resume", False) and state.is_file():
        run = Measured.load(state)
        if run.workload != name:
            raise UserError(f"--resume: {state} was measured on {run.workload!r}, not {name!r}; "
                            "run with the same workload and --experimental, or without --resume")
        print(f"resuming {state}: {len(run.rows)} rows and the stages done so far are kept", flush=True)
    else:
        sustained, burst = matmul_rates(device, base.dtype)
        run = Measured(name, (copy_bandwidth(device), sustained), burst_rate=burst if gpu else None)
    floors, rows = run.floors, run.rows
    vocab_hi = min(int(base.config.mask_token_id), 20000)

    def publish(stage: str | None) -> str:
        """Write the file and its JSON state as they stand (atomically), after every stage: a run
        cut short by a time limit keeps what it measured, marked partial, and `--resume` goes on
        from there."""
        text = render(run, device)
        if stage is not None:
            text = f"**Partial: this run has finished up to {stage}.**\n\n" + text
        for path, content in ((state, json.dumps(dataclasses.asdict(run), indent=1)), (out, text + "\n")):
            tmp = path.with_suffix(path.suffix + ".tmp")
            tmp.write_text(content)
            tmp.replace(path)
        return text

    if "inductor" in modes and run.compile_s is None:  # before anything else compiles the pieces
        run.compile_s = compile_seconds(base, device)
        publish("the compile time")
    if gpu and not run.steps:  # the quick, independent measurements first
        run.steps = step_variants(base, device, floors)
        publish("the step variants")
    served = {m: accelerate(base, m) for m in modes}
    total, done = len(modes) * len(plan), 0
    for label, batch, length in plan:
        prompts = random_prompts(max(2, batch), length, vocab_hi).to(device)
        if label in IDENTICAL_ROWS:
            prompts = prompts[:1].expand_as(prompts).contiguous()
        for mode in modes:
            done += 1
            if _find(rows, label, batch, length, mode) is not None:
                continue  # measured by the run this one resumes
            rows[:] = [r for r in rows if (r.label, r.batch, r.prompt, r.mode) != (label, batch, length, mode)]
            scheduler, params = SETTINGS[label]
            row = bench_row(served[mode], label, scheduler, params, prompts, batch, mode, floors, device)
            eager = _find(rows, row.label, row.batch, row.prompt, "none")
            if row.mode != "none" and eager is not None and not row.note:
                row.same_as_eager = same_tokens(row.token_hashes, eager.token_hashes)
            rows.append(row)
            print(f"[{done}/{total}] {_row_text(row)}", flush=True)
            publish(f"row {done} of {total}")
    lengths = sorted({length for label, batch, length in plan if batch == 1 and label == "fast_dllm dual q80"})
    if args.reference and not run.reference:
        run.reference = bench_reference(args.reference, base, lengths, device)
        publish("the reference rows")
    if args.fidelity and (run.fidelity is None or (args.reference and "reference_bf16_rel_l2" not in run.fidelity)):
        run.fidelity = fidelity_numbers(args.reference, base, device)
        publish("the fidelity numbers")
    if gpu and not run.matches:
        run.matches = embedded_match_rates(modes, device)
        publish("the embedded model's match rates")
    if getattr(args, "profile", False) and not run.profile:
        run.profile = kernel_profile(base, device, floors, served=served[modes[-1]])
        publish("the kernel profile")
    if args.gsm8k_prompts and (run.gsm is None or run.gsm.note):
        run.gsm = gsm8k_row(served[modes[-1]], modes[-1], floors, device, args.gsm8k_prompts)
    print(publish(None))
    print(f"wrote {out}")
    return 0


@dataclass
class Measured:
    """Everything one `dllm-eval bench` file reports, kept as JSON next to it for `--resume`."""

    workload: str  # the workload's description, experimental switches included
    floors: tuple[float, float]  # (copy bandwidth B/s, matmul rate FLOP/s)
    rows: list[Row] = field(default_factory=list)
    reference: list[Row] = field(default_factory=list)
    fidelity: dict[str, float] | None = None
    gsm: Row | None = None
    matches: list[tuple[str, str, float, int]] = field(default_factory=list)
    steps: list[StepTime] = field(default_factory=list)
    profile: list[KernelShare] = field(default_factory=list)
    compile_s: float | None = None  # inductor's one-off compile (first step minus a warm one)
    burst_rate: float | None = None  # the matmul rate at boost clock (`matmul_rates`); floors[1] is the sustained one

    @classmethod
    def load(cls, path: Path) -> Measured:
        try:
            raw = json.loads(path.read_text())
            return cls(raw["workload"], tuple(raw["floors"]), [Row(**r) for r in raw["rows"]],
                       [Row(**r) for r in raw["reference"]], raw["fidelity"],
                       None if raw["gsm"] is None else Row(**raw["gsm"]), [tuple(m) for m in raw["matches"]],
                       [StepTime(**t) for t in raw["steps"]], [KernelShare(**k) for k in raw.get("profile", [])],
                       raw.get("compile_s"), raw.get("burst_rate"))
        except (ValueError, KeyError, TypeError) as exc:
            raise UserError(f"--resume: {path} is not a bench state file ({exc}); delete it or run without --resume") from None


@torch.inference_mode()
def bench_reference(ref_dir: Path, ours: Any, lengths: list[int], device: torch.device) -> list[Row]:
    """Fast-dLLM's own dual-cache generate at batch 1 on the same weights, same quota (NFE 80)."""
    ref, generate = reference_model(ref_dir, ours, ours.dtype)
    rows = []
    mask_id = int(ours.config.mask_token_id)
    for length in lengths:
        prompts = random_prompts(2, length, min(mask_id, 20000)).to(device)
        nfe = 0
        try:
            generate(ref, prompts[:1], steps=QUOTA_STEPS, gen_length=GEN, block_length=BLOCK, mask_id=mask_id)  # warm
            torch.cuda.synchronize()
            started = time.perf_counter()
            for i in range(prompts.shape[0]):
                _, n = generate(ref, prompts[i: i + 1], steps=QUOTA_STEPS, gen_length=GEN, block_length=BLOCK,
                                mask_id=mask_id)
                nfe += n
        except IndexError:  # its quota loop runs past the schedule when the model predicts [MASK]
            rows.append(Row("Fast-dLLM reference dual q80", 1, length, "eager (reference)",
                            note="the reference's quota loop overran its schedule: random weights predicted "
                                 "the mask token, which its commit rule writes back as a mask"))
            continue
        torch.cuda.synchronize()
        wall = time.perf_counter() - started
        row = Row("Fast-dLLM reference dual q80", 1, length, "eager (reference)", nfe=nfe / 2, calls=nfe,
                  max_row_nfe=nfe // 2, tokens_per_s=2 * GEN / wall, wall_s=wall)
        rows.append(row)
        print(f"[reference] {_row_text(row)}", flush=True)
    del ref
    torch.cuda.empty_cache()
    return rows


@torch.inference_mode()
def fidelity_numbers(ref_dir: Path | None, ours: Any, device: torch.device) -> dict[str, float]:
    """Relative L2 and top-1 agreement of bf16 logits against an fp32 forward of the same
    weights, for ours and (with --reference) for Fast-dLLM's model code."""
    from dllm_eval.models.llada import LLaDAModelLM

    ours = getattr(ours, "served_model", ours)
    ids = random_prompts(1, 512, min(int(ours.config.mask_token_id), 20000), seed=7).to(device)
    ids[:, 256:] = int(ours.config.mask_token_id)
    with torch.device("meta"):
        fp32 = LLaDAModelLM(ours.config)
    fp32.load_state_dict({k: v.float() for k, v in ours.state_dict().items()}, assign=True)
    fp32 = fp32.eval()
    oracle = fp32(ids).float()
    out: dict[str, float] = {}

    def score(name: str, logits: Tensor) -> None:
        logits = logits.float()
        out[f"{name}_rel_l2"] = float((logits - oracle).norm() / oracle.norm())
        out[f"{name}_top1"] = float((logits.argmax(-1) == oracle.argmax(-1)).float().mean())

    score("ours_bf16", ours(ids))
    if ref_dir is not None:
        ref32, _ = reference_model(ref_dir, fp32, torch.float32)
        score("reference_fp32", ref32(ids).logits)
        del ref32
        ref16, _ = reference_model(ref_dir, ours, torch.bfloat16)
        score("reference_bf16", ref16(ids).logits)
        del ref16
    del fp32
    torch.cuda.empty_cache()
    return out


# The cached dual step timed alone as a replayed graph, with each fusion of compile=inductor on
# or off: (compiled, fused elementwise pieces, fused projections). What each part buys.
STEP_VARIANTS: dict[str, tuple[bool, bool, bool]] = {
    "graphs": (False, False, False),
    "graphs + fused projections": (True, False, True),
    "graphs + fused elementwise": (True, True, False),
    "inductor (both)": (True, True, True),
}


@dataclass
class StepTime:
    variant: str
    batch: int
    ms: float
    hbm_floor_ms: float
    compute_floor_ms: float


@torch.inference_mode()
def step_variants(base: Any, device: torch.device, floors: tuple[float, float], batches: tuple[int, ...] = (1, 8, 32),
                  prompt: int = 256) -> list[StepTime]:
    """The dual-cache step (block `BLOCK` right after a `prompt`-token prompt, canvas prompt + GEN,
    writing its KV) timed alone per `STEP_VARIANTS` and batch, against its HBM and compute floors."""
    from dllm_eval.models.graphs import GraphedModel

    base.fuse_projections()  # used only where a variant turns projections on (fusion.enabled)
    out = []
    for name, (compiled, elementwise, projections) in STEP_VARIANTS.items():
        served = GraphedModel(base, compiled=compiled)
        served.fusion_parts = {"elementwise": elementwise, "projections": projections}
        for batch in batches:
            step, call = dual_step(served, batch, prompt, device)
            for _ in range(3):  # captured on its second call
                step()
            hbm_ms, compute_ms = call_floors_ms(call, base, floors)
            # the clock settled under load first, as in a decode and in the sustained matmul rate
            ms = 1e3 * _timed(step, device, reps=20, settle_s=1.0)
            out.append(StepTime(name, batch, ms, hbm_ms, compute_ms))
            print(f"[step] {name} b{batch}: {out[-1].ms:.2f} ms (HBM floor {out[-1].hbm_floor_ms:.2f}, "
                  f"compute floor {out[-1].compute_floor_ms:.2f})", flush=True)
        del served, step
        torch.cuda.empty_cache()
    return out


@dataclass
class KernelShare:
    """Device time of one kind of kernel in one profiled call (`kernel_profile`)."""

    call: str
    kind: str
    ms: float  # per call
    kernels: int  # launches per call
    top: str = ""  # the kind's costliest kernel (name shortened)


# kernel names -> kind, first match wins (cuBLAS/CUTLASS GEMMs, flash/memory-efficient attention,
# Inductor's fused Triton kernels, data movement); on CPU the names are aten ops
KERNEL_KINDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attention", ("flash", "fmha", "attention", "sdpa", "efficient")),
    ("matmul", ("gemm", "cutlass", "xmma", "nvjet", "sm90", "sm80", "matmul", "addmm", "aten::mm", "aten::bmm",
                "aten::linear")),
    ("fused elementwise (inductor)", ("triton",)),
    ("selection (softmax, argmax, sort)", ("softmax", "argmax", "sort", "topk", "radix", "reduce")),
    ("copy / index", ("copy", "index", "scatter", "gather", "cat", "memcpy", "memset", "fill", "where")),
)


def kernel_kind(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KERNEL_KINDS if any(k in low for k in keys)), "other elementwise")


def _kinds(prof: Any, cuda: bool, reps: int) -> tuple[float, int, list[tuple[str, float, int, str]]]:
    """(kernel ms per rep, kernels per rep, [(kind, ms, kernels, costliest kernel)], costliest kind
    first) from a finished torch.profiler run: device time on a GPU, aten self time on a CPU."""
    kinds: dict[str, list[tuple[float, int, str]]] = {}
    for evt in prof.key_averages():
        us = (getattr(evt, "self_device_time_total", 0) or getattr(evt, "self_cuda_time_total", 0)) if cuda \
            else evt.self_cpu_time_total
        if us > 0 and (cuda or evt.key.startswith("aten::")):
            kinds.setdefault(kernel_kind(evt.key), []).append((us, evt.count, evt.key))
    rows = [(kind, sum(e[0] for e in evts) / reps / 1e3, round(sum(e[1] for e in evts) / reps), max(evts)[2][:70])
            for kind, evts in kinds.items()]
    rows.sort(key=lambda r: -r[1])
    return sum(r[1] for r in rows), sum(r[2] for r in rows), rows


@torch.inference_mode()
def kernel_profile(base: Any, device: torch.device, floors: tuple[float, float], reps: int = 5,
                   served: Any = None) -> list[KernelShare]:
    """Device time per kernel kind of (a) the dual-cache step at batch 32 (block 32 after a
    256-token prompt), (b) a GSM8K-sized full refresh (batch 32, canvas 900 + 256), each run
    eagerly with compile=inductor's fused pieces (the same kernels its graphs replay), and, given
    the `served` model, (c) one whole GSM8K-sized decode as the bench runs it (graphs replayed,
    the scheduler's own selection kernels included), against its wall time: the share of the
    wall the GPU is busy, and which kernels the decode adds to the forwards. The floors say how
    far each call is from the hardware; this says which kernels hold the rest."""
    from torch.profiler import ProfilerActivity, profile

    from dllm_eval.models import fusion

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CUDA] if cuda else [ProfilerActivity.CPU]
    vocab_hi = min(int(base.config.mask_token_id), 20000)
    batch = 32 if cuda else 2
    out: list[KernelShare] = []

    def add(call_name: str, total: float, kernels: int, rows: list[tuple[str, float, int, str]], first: str) -> None:
        out.append(KernelShare(call_name, "all kernels", total, kernels, first))
        out.extend(KernelShare(call_name, kind, ms, n, top) for kind, ms, n, top in rows)
        print("\n".join(f"[profile] {k.call}: {k.kind} {k.ms:.2f} ms ({k.kernels} kernels) {k.top}"
                        for k in out if k.call == call_name), flush=True)

    for call_name, prompt, full in ((f"dual step b{batch} (canvas {256 + GEN})", 256, False),
                                    (f"full refresh b{batch} (canvas {900 + GEN})", 900, True)):
        if full:  # the refresh at a block start: the whole canvas, writing the cache, one block's logits
            length = prompt + GEN
            ids = random_prompts(batch, length, vocab_hi).to(device)
            kwargs: dict[str, Any] = {"write": True, "logits_positions": slice(prompt, prompt + BLOCK)}
            call = Call((batch, length), kwargs, length, False)
            run_call = functools.partial(base, ids, cache=KVCache.for_model(base, batch, length), **kwargs)
        else:
            run_call, call = dual_step(base, batch, prompt, device)
        with fusion.enabled(elementwise=cuda, projections=False):
            for _ in range(2):  # compile and warm
                run_call()
            _sync(device)
            with profile(activities=activities) as prof:
                for _ in range(reps):
                    run_call()
                _sync(device)
        total, kernels, rows = _kinds(prof, cuda, reps)
        hbm_ms, compute_ms = call_floors_ms(call, base, floors)
        add(call_name, total, kernels, rows, f"{total / max(hbm_ms, compute_ms):.2f}x the floor: HBM {hbm_ms:.2f} ms, "
                                             f"compute {compute_ms:.2f} ms")
        del run_call
    if served is not None:
        from dllm_eval.schedulers import get_scheduler

        sched = get_scheduler("fast_dllm", gen_length=GEN, cache="dual", threshold=None, steps=GEN // 4,
                              block_length=BLOCK)
        prompts = random_prompts(batch, 900, vocab_hi).to(device)
        for _ in range(2):  # graphs are captured on a call's second occurrence
            sched.generate(served, prompts)
        _sync(device)
        with profile(activities=activities) as prof:
            started = time.perf_counter()
            sched.generate(served, prompts)
            _sync(device)
            wall = 1e3 * (time.perf_counter() - started)
        total, kernels, rows = _kinds(prof, cuda, 1)
        add(f"whole GSM8K-sized decode b{batch} (fast_dllm, 4 tok/step)", total, kernels, rows,
            f"busy {total / wall:.0%} of its {wall:.0f} ms wall (profiled: the wall includes the profiler's own cost)")
    return out


@torch.inference_mode()
def compile_seconds(base: Any, device: torch.device, prompt: int = 256) -> float:
    """Seconds the first dual-cache step under compile=inductor's fusion takes beyond a warm one:
    what compiling its fused pieces costs a process (run before anything else compiles them)."""
    from dllm_eval.models import fusion

    step, _ = dual_step(base, 1, prompt, device)
    with fusion.enabled(elementwise=True, projections=EXPERIMENTAL["fused-projections"]):
        first = _timed(step, device, reps=1)
        warm = _timed(step, device, reps=5)
    return first - warm


def token_hash(tokens: Tensor) -> str:
    """A prompt's generated tokens as a short digest (kept in the run's JSON state instead of the
    tokens: equal digests, equal tokens)."""
    return hashlib.sha1(tokens.to(torch.int64).numpy().tobytes()).hexdigest()[:16]


def same_tokens(ours: list[str], eager: list[str]) -> float:
    """Share of prompts whose generated tokens (`token_hash`es) equal eager mode's."""
    return sum(a == b for a, b in zip(ours, eager, strict=True)) / max(1, len(eager))


MATCH_SCHEDULERS = ("fast_dllm", "adaptive", "drs_v2")


@torch.inference_mode()
def embedded_match_rates(modes: list[str], device: torch.device, n: int = 64) -> list[tuple[str, str, float, int]]:
    """(mode, scheduler, share of prompts with eager mode's tokens, prompts) on the embedded
    tiny_llada in bf16 over `n` synth_math test prompts: a trained model's confidences, where
    a rounding difference flips a decision only near a tie (random weights are all ties)."""
    from dllm_eval.frontend import load_front_end
    from dllm_eval.models import EMBEDDED_MODEL_DIR
    from dllm_eval.schedulers import get_scheduler
    from dllm_eval.synth import synth_math

    eager = load_front_end(EMBEDDED_MODEL_DIR, device=device, dtype=torch.bfloat16, chat=False, compile="none")
    docs = synth_math.test_docs()[:n]
    ids, mask = eager.encode([synth_math.doc_to_text(d) for d in docs], 64)
    ids, mask = ids.to(device), mask.to(device)
    want = {name: [token_hash(t) for t in get_scheduler(name, gen_length=64).generate(eager.model, ids, mask).tokens.cpu()]
            for name in MATCH_SCHEDULERS}
    out = []
    for mode in (m for m in modes if m != "none"):
        served = load_front_end(EMBEDDED_MODEL_DIR, device=device, dtype=torch.bfloat16, chat=False, compile=mode)
        for name in MATCH_SCHEDULERS:
            sched = get_scheduler(name, gen_length=64)
            for _ in range(3):  # the first decodes capture graphs; the last one is all replays
                got = sched.generate(served.model, ids, mask).tokens.cpu()
            out.append((mode, name, same_tokens([token_hash(t) for t in got], want[name]), len(docs)))
    return out


def gsm8k_row(model: Any, mode: str, floors: tuple[float, float], device: torch.device, n: int) -> Row:
    """The GSM8K-sized workload on `n` prompts of 900 tokens, batch 32, 4 tokens per step."""
    prompts = random_prompts(n, 900, min(int(model.config.mask_token_id), 20000)).to(device)
    params = {"cache": "dual", "threshold": None, "steps": GEN // 4, "block_length": BLOCK}
    return bench_row(model, "GSM8K-sized (900 tok, 4 tok/step)", "fast_dllm", params, prompts, 32, mode, floors,
                     device)


# ----------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------


def _row_text(r: Row) -> str:
    if r.note:
        return f"{r.label} b{r.batch} p{r.prompt} {r.mode}: n/a ({r.note})"
    return (f"{r.label} b{r.batch} p{r.prompt} {r.mode}: nfe {r.nfe:.1f} calls {r.calls} {r.tokens_per_s:.1f} tok/s "
            f"{r.per_call_ms:.2f} ms/call overhead {r.overhead:.2f}")


def render(run: Measured, device: torch.device) -> str:
    name, floors, rows, reference, gsm, matches, steps = (run.workload, run.floors, run.rows, run.reference, run.gsm,
                                                          run.matches, run.steps)
    dev = torch.cuda.get_device_name() if device.type == "cuda" else (platform.processor() or platform.machine())
    lines = [
        f"# `dllm-eval bench`: {name}",
        "",
        f"Device: {dev} (torch {torch.__version__}); measured copy bandwidth {floors[0] / 1e12:.2f} TB/s, "
        f"matmul rate in the model's dtype {floors[1] / 1e12:.3g} TFLOP/s"
        + ("" if run.burst_rate is None else
           f" sustained (the compute floors use it: 8192-square products back to back for {SUSTAIN_S:g} s after "
           f"{SETTLE_S:g} s of them, the clock at the card's power cap) and {run.burst_rate / 1e12:.3g} TFLOP/s "
           "burst (10 products after idle, at boost clock)")
        + f". Gen {GEN}, block {BLOCK}; the quota "
        f"steps={QUOTA_STEPS} (3.2 tokens per step) stands in for tau=0.9 (random weights make confidences meaningless). Each row decodes max(2, batch) "
        "prompts warm (two warm-up decodes first: graphs are captured there).",
        "",
        "| scheduler | mode | prompt | batch | NFE/prompt | calls | max row NFE | tokens/s | ms/call | cached step ms "
        "(floor) | pure-forward s | wall s | overhead | HBM floor s | compute floor s | peak GiB | same tokens as eager |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in [*rows, *reference, *([gsm] if gsm else [])]:
        if r.note:
            lines.append(f"| {r.label} | {r.mode} | {r.prompt} | {r.batch} | n/a: {r.note} |||||||||||||")
            continue
        same = "" if r.same_as_eager is None else f"{r.same_as_eager:.0%} of {len(r.token_hashes)}"
        lines.append(
            f"| {r.label} | {r.mode} | {r.prompt} | {r.batch} | {r.nfe:.1f} | {r.calls} | {r.max_row_nfe} | "
            f"{r.tokens_per_s:.1f} | {r.per_call_ms:.2f} | {r.step_ms:.2f} ({r.step_floor_ms:.2f}) | {r.pure_s:.3f} | {r.wall_s:.3f} | {r.overhead:.2f} | "
            f"{r.hbm_floor_s:.3f} | {r.compute_floor_s:.3f} | {r.peak_gib:.1f} | {same} |")
    if run.compile_s is not None:
        lines += ["", f"`compile=inductor` compiles its fused pieces once per process: the first dual-cache step "
                  f"at batch 1 took {run.compile_s:.1f} s longer than a warm one (new shapes later cost a "
                  "recompile each until Dynamo generalises them). Each row's two untimed warm-up decodes take "
                  "their one-off costs (first kernels, graph captures; `warm_s` in the JSON)."]
    if any(r.mode == "inductor" and r.same_as_eager is not None for r in rows):
        lines += ["", "Random weights give nearly flat logits, so `inductor`'s different rounding (fused "
                  "elementwise kernels) flips near-ties and its tokens part from eager mode's on these rows; "
                  "the match rate that means something is the embedded model's, below."]
    if matches:
        lines += ["", "## bf16 tokens against eager mode, embedded model",
                  "", "Greedy decodes of synth_math test prompts by the embedded tiny_llada in bf16 (gen 64): the "
                  "share of prompts whose tokens equal eager mode's. `graphs` replays the eager kernels; `inductor` "
                  "fuses elementwise pieces and projections, so its rounding differs.", "",
                  "| mode | scheduler | same tokens as eager | prompts |", "|---|---|---:|---:|"]
        lines += [f"| {mode} | {name} | {rate:.1%} | {n} |" for mode, name, rate, n in matches]
    if steps:
        lines += ["", "## The dual-cache step alone, by fusion",
                  "", f"One cached step (block {BLOCK} after a 256-token prompt, canvas {256 + GEN}, KV written), "
                  "replayed as a CUDA graph, median of 20 after a second of replays (the clock settled under "
                  "load); `inductor (both)` is what compile=inductor runs.", "",
                  "| variant | batch | ms | HBM floor ms | x HBM floor | compute floor ms | x compute floor |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        lines += [f"| {t.variant} | {t.batch} | {t.ms:.2f} | {t.hbm_floor_ms:.2f} | {t.ms / t.hbm_floor_ms:.2f} | "
                  f"{t.compute_floor_ms:.2f} | {t.ms / t.compute_floor_ms:.2f} |" for t in steps]
    if run.profile:
        lines += ["", "## Where a call's time goes, by kernel kind",
                  "", "torch.profiler over eager calls with compile=inductor's fused pieces (the kernels its graphs "
                  "replay), device time per call; the first line of each call sums its kernels against its floors.", "",
                  "| call | kind | ms per call | kernels per call | costliest kernel |", "|---|---|---:|---:|---|"]
        lines += [f"| {k.call} | {k.kind} | {k.ms:.2f} | {k.kernels} | {k.top.replace('|', '/')} |" for k in run.profile]
    lines += ["", *targets(rows, reference, run.fidelity, gsm, floors, steps, run.burst_rate)]
    return "\n".join(lines)


def _find(rows: list[Row], label: str, batch: int, prompt: int, mode: str) -> Row | None:
    return next((r for r in rows if r.label == label and r.batch == batch and r.prompt == prompt and r.mode == mode
                 and not r.note), None)


def targets(rows: list[Row], reference: list[Row], fidelity: dict[str, float] | None, gsm: Row | None,
            floors: tuple[float, float], steps: list[StepTime] | None = None,
            burst_rate: float | None = None) -> list[str]:
    """Issue 11's targets with the measured values (rows at prompt 256 in the fastest compile mode
    run; the step targets from the step timed alone as compile=inductor runs it). Compute-floor
    targets are judged at the sustained matmul rate (`floors[1]`); each also states its ratio at
    the `burst_rate`, when measured."""
    out = ["## Targets", "", "| target | measured | met |", "|---|---|---|"]

    def at_burst(ratio: float) -> str:
        """The same ratio against a floor at the burst matmul rate (a lower floor)."""
        return "" if burst_rate is None else f" ({ratio * burst_rate / floors[1]:.2f}x at the burst rate)"
    modes = [m for m in ("inductor", "graphs", "none") if any(r.mode == m for r in rows)]
    best = modes[0] if modes else "none"

    def met(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "not met")

    # the step as compile=inductor runs it (projections fused only once that is switched on)
    served = "inductor (both)" if EXPERIMENTAL["fused-projections"] else "graphs + fused elementwise"
    for batch, what, floor, factor in ((1, "the HBM floor", "hbm_floor_ms", 2.0), (32, "its compute floor",
                                                                               "compute_floor_ms", 1.3)):
        t = next((t for t in steps or [] if t.batch == batch and t.variant == served), None)
        if t is not None:
            ratio = t.ms / getattr(t, floor)
            note = at_burst(ratio) if floor == "compute_floor_ms" else ""
            out.append(f"| dual-cache step at batch {batch} <= {factor}x {what} | {t.ms:.2f} ms ({t.variant}, timed "
                       f"alone) vs floor {getattr(t, floor):.2f} ms: {ratio:.2f}x{note} | {met(ratio <= factor)} |")
    dual1 = _find(rows, "fast_dllm dual q80", 1, 256, best)
    if dual1 is not None:
        ref = next((r for r in reference if r.prompt == 256), None)
        if ref is not None:
            ratio = dual1.tokens_per_s / ref.tokens_per_s
            out.append(f"| fast_dllm dual at batch 1 >= 3x the reference's tokens/s (same weights, NFE {dual1.nfe:.0f} "
                       f"vs {ref.nfe:.0f}) | {dual1.tokens_per_s:.1f} vs {ref.tokens_per_s:.1f} tok/s: {ratio:.2f}x "
                       f"| {met(ratio >= 3)} |")
    dual32 = _find(rows, "fast_dllm dual q80", 32, 256, best)
    if dual32 is not None:
        out.append(f"| batch-32 dual decode (every call, full refreshes too) within 1.3x its compute floor | pure forwards {dual32.pure_s:.3f} s vs "
                   f"compute floor {dual32.compute_floor_s:.3f} s: {dual32.pure_s / dual32.compute_floor_s:.2f}x; wall "
                   f"{dual32.wall_s / dual32.compute_floor_s:.2f}x{at_burst(dual32.wall_s / dual32.compute_floor_s)} "
                   f"| {met(dual32.wall_s <= 1.3 * dual32.compute_floor_s)} |")
    base8 = _find(rows, "fast_dllm dual q80", 8, 256, best)
    for label in ("adaptive", "drs_v2", *IDENTICAL_ROWS):
        r = _find(rows, label, 8, 256, best)
        if r is not None and base8 is not None:
            ratio = r.per_call_ms / base8.per_call_ms
            # a call of this scheduler may carry more work (wider windows, more refreshes) than
            # fast_dllm's; time over the calls' own compute floor separates that from overhead
            work = (r.compute_floor_s / r.calls) / (base8.compute_floor_s / base8.calls)
            efficiency = (r.wall_s / r.compute_floor_s) / (base8.wall_s / base8.compute_floor_s)
            out.append(f"| {label} at batch 8: time per call <= 1.15x fast_dllm's; calls = largest per-row NFE | "
                       f"{r.per_call_ms:.2f} vs {base8.per_call_ms:.2f} ms/call: {ratio:.2f}x; calls {r.calls} vs "
                       f"largest per-row NFE {r.max_row_nfe} (summed over batches); its calls carry {work:.2f}x "
                       f"fast_dllm's FLOPs per call, and its wall time over its compute floor is {efficiency:.2f}x "
                       f"fast_dllm's | {met(ratio <= 1.15 and r.calls == r.max_row_nfe)} |")
    if gsm is not None:
        scale = 1319 / gsm.n_prompts
        out.append(f"| GSM8K-sized workload within 1.25x its compute floor | {gsm.wall_s:.2f} s wall vs floor "
                   f"{gsm.compute_floor_s:.2f} s: {gsm.wall_s / gsm.compute_floor_s:.2f}x"
                   f"{at_burst(gsm.wall_s / gsm.compute_floor_s)}; about "
                   f"{gsm.wall_s * scale / 60:.1f} min for 1,319 prompts (floor {gsm.compute_floor_s * scale / 60:.1f} min) "
                   f"| {met(gsm.wall_s <= 1.25 * gsm.compute_floor_s)} |")
    if fidelity:
        ours = fidelity.get("ours_bf16_rel_l2")
        ref = fidelity.get("reference_bf16_rel_l2")
        text = (f"ours rel. L2 {ours:.4f}, top-1 {fidelity['ours_bf16_top1']:.3f}"
                + (f"; reference rel. L2 {ref:.4f}, top-1 {fidelity['reference_bf16_top1']:.3f}; reference fp32 vs our "
                   f"fp32 rel. L2 {fidelity['reference_fp32_rel_l2']:.2e}" if ref is not None else ""))
        out.append(f"| bf16 logits vs an fp32 forward: ours no worse than the reference's | {text} "
                   f"| {met(None if ref is None else ours <= ref)} |")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
