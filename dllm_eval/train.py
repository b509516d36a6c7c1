"""`dllm-eval train-tiny`: train the small embedded LLaDA-format model on the synthetic tasks.

What it does, in order:
1. builds the tokenizer: a byte-level BPE learned with the `tokenizers` library on generated
   problems, with digits kept as single tokens (no merge ever contains a digit, so numbers are
   spelled digit by digit and arithmetic stays learnable), LLaDA's special tokens packed after
   the learned vocabulary, and LLaDA's chat template;
2. streams freshly generated training problems (train bucket only, see dllm_eval.synth.common)
   from worker processes, each prompt rendered raw, raw after BOS, or through the chat template,
   so the model answers the same whichever way an adapter renders prompts;
3. trains with LLaDA's SFT objective (reference 1.4): the prompt is never masked; each sample
   draws t ~ U(0, 1) and masks every answer token with probability p = (1 - eps) t + eps; the
   loss is the cross-entropy on masked answer tokens divided by p. Answers are padded with EOS
   to the task's generation length (64 tokens for synth_math, 96 for synth_code) and the EOS
   padding is masked and predicted like any answer token. Normalisation, as LLaDA's SFT
   guidelines: each sample's sum is divided by its answer length (the generation length,
   EOS padding included), then averaged over the batch;
4. evaluates on the test splits with a minimal block-wise low-confidence decoder (no KV cache,
   for speed on the GPU; committed numbers come from the real schedulers) and writes the
   checkpoint in LLaDA's on-disk format (bf16 safetensors shards, index, config, tokenizer).

Reproducible from `--seed` (with the same `--workers`, which decides how the data stream is
split). Step count: `--steps`, or `--time-budget` seconds, in which case the step count is fixed
from the speed of the first steps (during warm-up, so the schedule is exactly that of `--steps N`
with the N it logs).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from dllm_eval.errors import UserError
from dllm_eval.frontend import cut_at_stops
from dllm_eval.synth import synth_code, synth_math

TASKS = {"math": synth_math, "code": synth_code}
MAX_PROMPT = 112  # prompt tokens, chat wrapper included (tier-4 synth_code prompts need up to ~110)
MAX_GEN = max(synth_math.GEN_LENGTH, synth_code.GEN_LENGTH)
SEQ_LEN = MAX_PROMPT + MAX_GEN
EPS = 1e-3  # LLaDA's minimum mask probability
BLOCK = 32
FORMATS = ("raw", "bos", "chat")
FORMAT_WEIGHTS = (0.45, 0.15, 0.40)
VOCAB_MULTIPLE = 64


# --------------------------------------------------------------------------------------------
# Tokenizer
# --------------------------------------------------------------------------------------------


def tokenizer_corpus(seed: int, n_per_task: int) -> list[str]:
    """Prompts and answers of generated training problems: what the BPE merges are learned from."""
    texts = ["user", "assistant"] * 100  # the chat template's role names, so they are one token each
    for task in TASKS.values():
        for doc in itertools.islice(task.stream(seed), n_per_task):
            texts.append(task.doc_to_text(doc) + task.doc_to_answer(doc))
    return texts


def build_tokenizer(out_dir: str | os.PathLike, seed: int = 0, n_per_task: int = 20000,
                    max_vocab: int = 1024) -> dict[str, int]:
    """Learn the BPE, write an AutoTokenizer-loadable tokenizer to `out_dir`, return its special ids.

    The trainer's pre-tokenizer isolates every digit, so no learned merge contains a digit; the
    written tokenizer (plain byte-level pre-tokenizer) then also splits numbers into digits.
    The templates' vocabulary is small, so the BPE saturates well below `max_vocab` (~660
    tokens: every template word becomes one token, which roughly halves prompt length).
    """
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from dllm_eval.models.tokenizer import compact_special_ids, write_tokenizer

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    trainer = trainers.BpeTrainer(vocab_size=max_vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(tokenizer_corpus(seed, n_per_task), trainer)
    model = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise RuntimeError("BPE vocabulary ids are not contiguous")
    specials = compact_special_ids(len(vocab))
    need = max(specials.values()) + 1
    vocab_size = -(-need // VOCAB_MULTIPLE) * VOCAB_MULTIPLE
    write_tokenizer(out_dir, vocab, merges, specials, vocab_size, model_max_length=SEQ_LEN * 4)
    return specials


def render_prompt(text: str, fmt: str) -> str:
    """A prompt as an adapter may present it: raw, after BOS, or through LLaDA's chat template."""
    from dllm_eval.models.tokenizer import BOS, END_HEADER, EOT, START_HEADER

    if fmt == "raw":
        return text
    if fmt == "bos":
        return BOS + text
    if fmt == "chat":
        return (f"{BOS}{START_HEADER}user{END_HEADER}\n\n{text.strip()}{EOT}"
                f"{START_HEADER}assistant{END_HEADER}\n\n")
    raise ValueError(f"unknown prompt format {fmt!r}")


class Vocab:
    """The ids training and decoding need, read from a written tokenizer directory."""

    def __init__(self, tok_dir: str | os.PathLike) -> None:
        from tokenizers import Tokenizer

        from dllm_eval.models.tokenizer import BOS, EOS, MASK

        self.path = Path(tok_dir) / "tokenizer.json"
        self.tok = Tokenizer.from_file(str(self.path))
        self.eos, self.bos, self.mask = (self.tok.token_to_id(t) for t in (EOS, BOS, MASK))
        self.first_special = self.bos
        self.size = self.tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text).ids

    def decode_answer(self, ids: Sequence[int]) -> str:
        """Text of a generated canvas: everything before the first special token (EOS, EOT...)."""
        cut = next((i for i, t in enumerate(ids) if t >= self.first_special), len(ids))
        return self.tok.decode(list(ids[:cut]))


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------


def make_batches(tok_dir: str, seed: int, batch_size: int, math_frac: float, worker: int) -> Iterator[dict]:
    """Endless training batches (numpy), each row laid out as [left pad][prompt][answer + EOS pad].

    Every row has length SEQ_LEN and its answer region ends the row, so one forward computes
    logits on the last MAX_GEN positions for every row; `ans` marks which of those are answer.
    """
    import numpy as np

    vocab = Vocab(tok_dir)
    rng = random.Random(f"batches:{seed}:{worker}")
    streams = {name: task.stream(seed * 1000 + worker) for name, task in TASKS.items()}
    while True:
        ids = np.full((batch_size, SEQ_LEN), vocab.eos, dtype=np.int64)
        valid = np.zeros((batch_size, SEQ_LEN), dtype=bool)
        ans = np.zeros((batch_size, MAX_GEN), dtype=bool)
        row = 0
        while row < batch_size:
            name = "math" if rng.random() < math_frac else "code"
            task = TASKS[name]
            doc = next(streams[name])
            fmt = rng.choices(FORMATS, weights=FORMAT_WEIGHTS)[0]
            prompt = vocab.encode(render_prompt(task.doc_to_text(doc), fmt))
            answer = vocab.encode(task.doc_to_answer(doc))
            gen = task.GEN_LENGTH
            if len(answer) >= gen or len(prompt) + gen > SEQ_LEN:
                continue  # never truncate: the model must always see the EOS that ends an answer
            seq = prompt + answer + [vocab.eos] * (gen - len(answer))
            ids[row, SEQ_LEN - len(seq):] = seq
            valid[row, SEQ_LEN - len(seq):] = True
            ans[row, MAX_GEN - gen:] = True
            row += 1
        yield {"ids": ids, "valid": valid, "ans": ans}


class _BatchStream:
    """torch IterableDataset over `make_batches`; each DataLoader worker gets its own stream."""

    def __init__(self, tok_dir: str, seed: int, batch_size: int, math_frac: float) -> None:
        self.args = (tok_dir, seed, batch_size, math_frac)

    def __iter__(self) -> Iterator[dict]:
        import torch

        info = torch.utils.data.get_worker_info()
        tok_dir, seed, batch_size, math_frac = self.args
        return make_batches(tok_dir, seed, batch_size, math_frac, 0 if info is None else info.id)


def batch_iterator(tok_dir: str, seed: int, batch_size: int, math_frac: float, workers: int) -> Iterator[dict]:
    import torch

    class Stream(_BatchStream, torch.utils.data.IterableDataset):
        pass

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    loader = torch.utils.data.DataLoader(Stream(tok_dir, seed, batch_size, math_frac), batch_size=None,
                                         num_workers=workers, prefetch_factor=4 if workers else None,
                                         persistent_workers=bool(workers))
    for batch in loader:
        yield {k: torch.as_tensor(v) for k, v in batch.items()}


# --------------------------------------------------------------------------------------------
# Objective
# --------------------------------------------------------------------------------------------


def sft_loss(model, batch: dict, mask_id: int, generator) -> tuple[Any, dict]:
    """LLaDA's SFT loss on a batch (see the module docstring); returns (loss, stats)."""
    import torch
    import torch.nn.functional as F

    ids, valid, ans = batch["ids"], batch["valid"], batch["ans"]
    bsz = ids.shape[0]
    dev = ids.device
    # Stratified t: one uniform offset, spread evenly over the batch. Each t is still U(0, 1),
    # but a batch always covers the whole range of noise levels (lower-variance gradients).
    u = torch.rand((), generator=generator, device=dev)
    t = (u + torch.arange(bsz, device=dev) / bsz) % 1.0
    t = t[torch.randperm(bsz, generator=generator, device=dev)]
    p = (1 - EPS) * t + EPS
    masked = (torch.rand(ans.shape, generator=generator, device=dev) < p[:, None]) & ans
    noisy = ids.clone()
    noisy[:, -MAX_GEN:] = torch.where(masked, torch.full_like(ids[:, -MAX_GEN:], mask_id), ids[:, -MAX_GEN:])
    logits = model(noisy, attention_mask=valid, logits_positions=slice(SEQ_LEN - MAX_GEN, SEQ_LEN))
    target = ids[:, -MAX_GEN:]
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1),
                         reduction="none").view(bsz, MAX_GEN)
    per_sample = (ce * masked).sum(-1) / p / ans.sum(-1)  # / answer length (EOS padding included)
    loss = per_sample.mean()
    with torch.no_grad():
        n_masked = masked.sum()
        stats = {"masked_ce": (ce * masked).sum() / n_masked.clamp(min=1)}
    return loss, stats


# --------------------------------------------------------------------------------------------
# Quick evaluation (a minimal decoder; the committed numbers come from dllm_eval.schedulers)
# --------------------------------------------------------------------------------------------


def decode(model, prompts: list[list[int]], gen_length: int, vocab: Vocab, threshold: float | None,
           batch_size: int = 256) -> tuple[list[list[int]], list[int]]:
    """Block-wise low-confidence remasking without a KV cache; returns canvases and NFE per row.

    threshold=None: one token per step (LLaDA with steps = gen_length); otherwise every masked
    token of the block whose confidence is >= threshold, plus the most confident one (Fast-dLLM's
    rule). NFE counts the forwards during which a row still had masks in the block.
    """
    import torch

    outs: list[list[int]] = []
    nfes: list[int] = []
    dev = model.device
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start:start + batch_size]
        plen = max(len(p) for p in chunk)
        x = torch.full((len(chunk), plen + gen_length), vocab.mask, dtype=torch.long, device=dev)
        valid = torch.ones_like(x, dtype=torch.bool)
        for i, p in enumerate(chunk):
            x[i, :plen - len(p)] = vocab.eos
            valid[i, :plen - len(p)] = False
            x[i, plen - len(p):plen] = torch.tensor(p, device=dev)
        nfe = torch.zeros(len(chunk), dtype=torch.long, device=dev)
        for b in range(gen_length // BLOCK):
            s, e = plen + b * BLOCK, plen + (b + 1) * BLOCK
            while True:
                masked = x[:, s:e] == vocab.mask
                active = masked.any(-1)
                if not active.any():
                    break
                logits = model(x, attention_mask=valid, logits_positions=slice(s, e)).float()
                conf, pred = logits.softmax(-1).max(-1)
                conf = torch.where(masked, conf, torch.full_like(conf, -1.0))
                best = torch.nn.functional.one_hot(conf.argmax(-1), BLOCK).bool()
                pick = best if threshold is None else best | (conf >= threshold)
                pick &= masked
                x[:, s:e] = torch.where(pick, pred, x[:, s:e])
                nfe += active.long()
        outs.extend(x[:, plen:].tolist())
        nfes.extend(nfe.tolist())
    return outs, nfes


_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")


def score_math(doc: dict, text: str) -> bool:
    """gsm8k strict-match: the number after '#### ', commas and a final dot ignored."""
    m = _STRICT.search(text)
    if not m:
        return False
    return m.group(1).replace(",", "").rstrip(".") == doc["target"]


def _quick_pass(program: str, tests: list[str], timeout: float = 30.0) -> bool:
    """Run a program and its asserts in a fresh interpreter (training-time check only).

    The timeout is generous: during training the data workers keep every core busy, and a
    start-up that times out would count as a failed program (mid-run synth_code evaluations of
    the shipped run read near 0% and then 100% at the end, most likely for that reason).
    """
    try:
        res = subprocess.run([sys.executable, "-I", "-c", program + "\n\n" + "\n".join(tests) + "\n"],
                             capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False
    return res.returncode == 0


def evaluate(model, vocab: Vocab, task_name: str, docs: list[dict], threshold: float | None,
             fmt: str = "raw") -> dict:
    """Accuracy per tier and mean NFE of the quick decoder on `docs`."""
    task = TASKS[task_name]
    prompts = [vocab.encode(render_prompt(task.doc_to_text(d), fmt)) for d in docs]
    t0 = time.perf_counter()
    outs, nfes = decode(model, prompts, task.GEN_LENGTH, vocab, threshold)
    texts = [cut_at_stops(vocab.decode_answer(o), TASKS[task_name].UNTIL) for o in outs]
    if task_name == "math":
        ok = [score_math(d, t) for d, t in zip(docs, texts)]
    else:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            ok = list(pool.map(lambda dt: _quick_pass(synth_code.extract_program(dt[1]), dt[0]["test_list"]),
                               zip(docs, texts)))
    tiers = sorted({d["tier"] for d in docs})
    by_tier = {t: [o for d, o in zip(docs, ok) if d["tier"] == t] for t in tiers}
    return {
        "task": task_name, "threshold": threshold, "format": fmt, "n": len(docs),
        "acc": sum(ok) / len(ok),
        "acc_tier": {str(t): sum(v) / len(v) for t, v in by_tier.items()},
        "nfe": sum(nfes) / len(nfes),
        "seconds": round(time.perf_counter() - t0, 2),
        "examples": [{"tier": d["tier"], "ok": o, "text": t} for d, o, t in list(zip(docs, ok, texts))[:8]],
    }


# --------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/tiny_llada", help="checkpoint directory to write")
    parser.add_argument("--log-dir", default="results/embedded", help="where the loss curve and eval go")
    parser.add_argument("--tokenizer", default=None,
                        help="reuse the tokenizer of this directory instead of learning a new one")
    parser.add_argument("--init", default=None,
                        help="start from this checkpoint (continued training; implies its tokenizer)")
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds of training; fixes --steps from the speed of the first steps")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--min-lr-frac", type=float, default=0.05)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--weight-decay", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto")
    parser.add_argument("--d-model", type=int, default=320)
    parser.add_argument("--n-layers", type=int, default=8)
    parser.add_argument("--n-heads", type=int, default=5)
    parser.add_argument("--mlp", type=int, default=896)
    parser.add_argument("--math-frac", type=float, default=0.7, help="share of synth_math rows")
    parser.add_argument("--workers", type=int, default=8, help="data-generation processes (0: in-process)")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--eval-every", type=int, default=0, help="quick eval every N steps (0: never)")
    parser.add_argument("--eval-docs", type=int, default=256, help="docs per task for the periodic eval")
    parser.add_argument("--final-eval", action="store_true",
                        help="evaluate the full test splits at the end (quick decoder, several thresholds)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")


def _lr_at(step: int, total: int, args: argparse.Namespace) -> float:
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    frac = (step - args.warmup) / max(1, total - args.warmup)
    return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))


def _compiled_or_eager(model, vocab: Vocab, device: str, batch_size: int):
    """torch.compile the model, or fall back to eager (with a note) if compiling fails.

    Compiled and eager compute the same function, so the fallback changes speed, not results.
    The trial step runs on a throwaway batch with no optimizer step.
    """
    import torch

    compiled = torch.compile(model)
    try:
        batch = {k: v.to(device) for k, v in next(make_batches_torch(str(vocab.path.parent), batch_size)).items()}
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda")):
            loss, _ = sft_loss(compiled, batch, vocab.mask, torch.Generator(device=device).manual_seed(0))
        loss.backward()
        model.zero_grad(set_to_none=True)
        return compiled
    except Exception as exc:  # a compiler failure must not cost the run
        print(f"torch.compile failed ({type(exc).__name__}: {str(exc)[:200]}); training eagerly", flush=True)
        model.zero_grad(set_to_none=True)
        return model


def make_batches_torch(tok_dir: str, batch_size: int) -> Iterator[dict]:
    """A few batches as tensors, from a stream no training run uses (seed -1)."""
    import torch

    for batch in make_batches(tok_dir, -1, batch_size, 0.5, 0):
        yield {k: torch.as_tensor(v) for k, v in batch.items()}


def _check_args(args: argparse.Namespace) -> None:
    if (args.steps is None) == (args.time_budget is None):
        raise UserError("give exactly one of --steps N or --time-budget SECONDS")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be positive, got {args.steps}")
    if args.time_budget is not None and args.time_budget <= 0:
        raise UserError(f"--time-budget must be positive, got {args.time_budget}")
    if args.d_model % args.n_heads or (args.d_model // args.n_heads) % 2:
        raise UserError(f"--d-model {args.d_model} must split into --n-heads {args.n_heads} heads of even size")
    if not 0.0 <= args.math_frac <= 1.0:
        raise UserError(f"--math-frac must be in [0, 1], got {args.math_frac}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    if args.init:
        if not (Path(args.init) / "config.json").is_file():
            raise UserError(f"--init {args.init} is not a checkpoint directory (no config.json)")
        args.tokenizer = args.tokenizer or args.init
    if args.tokenizer and not (Path(args.tokenizer) / "tokenizer.json").is_file():
        raise UserError(f"--tokenizer {args.tokenizer} has no tokenizer.json")


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    import torch

    from dllm_eval.models.llada import LLaDAConfig, build_model, load_llada, parameter_count, save_llada

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda but no CUDA GPU is visible")
    out, log_dir = Path(args.out), Path(args.log_dir)
    out.mkdir(parents=True, exist_ok=True)
    log_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    random.seed(args.seed)

    t_start = time.perf_counter()
    if args.tokenizer:
        for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            src = Path(args.tokenizer) / name
            if src.resolve() != (out / name).resolve():
                shutil.copyfile(src, out / name)
    else:
        build_tokenizer(out, seed=args.seed)
    vocab = Vocab(out)
    print(f"tokenizer: {vocab.size} ids (eos={vocab.eos} mask={vocab.mask}) "
          f"in {time.perf_counter() - t_start:.1f}s", flush=True)

    config = LLaDAConfig(
        d_model=args.d_model, n_heads=args.n_heads, n_kv_heads=args.n_heads, n_layers=args.n_layers,
        mlp_hidden_size=args.mlp, vocab_size=vocab.size, embedding_size=vocab.size,
        max_sequence_length=4096, mask_token_id=vocab.mask, eos_token_id=vocab.eos, pad_token_id=vocab.eos,
        extra={"bos_token_id": vocab.bos},
    )
    if args.init:
        model = load_llada(args.init, device=device, dtype=torch.float32)
        config = model.config
        if (config.padded_vocab, config.mask_token_id, config.eos_token_id) != (vocab.size, vocab.mask, vocab.eos):
            raise UserError(f"--init {args.init}: its vocabulary does not match the tokenizer")
    else:
        model = build_model(config, seed=args.seed, device=device, dtype=torch.float32)
    model = model.train().requires_grad_(True)
    n_params = parameter_count(config)
    print(f"model: {n_params / 1e6:.2f}M parameters, {device}", flush=True)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=device.startswith("cuda"))
    fwd = model
    if args.compile:
        fwd = _compiled_or_eager(model, vocab, device, args.batch_size)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.startswith("cuda"))

    eval_docs = {
        "math": synth_math.test_docs()[:args.eval_docs],
        "code": synth_code.test_docs()[:args.eval_docs],
    }
    log_path = log_dir / "train_log.jsonl"
    log = log_path.open("w")
    batches = batch_iterator(str(out), args.seed, args.batch_size, args.math_frac, args.workers)
    total = args.steps if args.steps is not None else 10**9
    calib = (20, 60)
    t_train = time.perf_counter()
    t_calib = None
    step = 0
    while step < total:
        batch = {k: v.to(device, non_blocking=True) for k, v in next(batches).items()}
        lr = _lr_at(step, total, args)
        for group in opt.param_groups:
            group["lr"] = lr
        with autocast:
            loss, stats = sft_loss(fwd, batch, vocab.mask, gen)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        if args.time_budget is not None and step == calib[0]:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t_calib = time.perf_counter()
        if args.time_budget is not None and step == calib[1]:
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            rate = (calib[1] - calib[0]) / (time.perf_counter() - t_calib)
            left = args.time_budget - (time.perf_counter() - t_train)
            total = max(calib[1] + 1, calib[1] + int(left * rate))
            args.steps = total
            if total <= args.warmup:
                raise UserError(f"--time-budget allows only {total} steps, fewer than --warmup {args.warmup}")
            print(f"speed {rate:.1f} steps/s: training for --steps {total}", flush=True)
        if step % args.log_every == 0 or step == total:
            rec = {"step": step, "loss": round(loss.item(), 5), "masked_ce": round(stats["masked_ce"].item(), 5),
                   "grad_norm": round(float(gnorm), 4), "lr": lr,
                   "seconds": round(time.perf_counter() - t_train, 1)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            print(json.dumps(rec), flush=True)
        if args.eval_every and (step % args.eval_every == 0 or step == total):
            model.eval()
            with torch.no_grad(), autocast:
                for name, docs in eval_docs.items():
                    res = evaluate(model, vocab, name, docs, None)
                    rec = {"step": step, "eval": name, "acc": round(res["acc"], 4), "acc_tier": res["acc_tier"]}
                    log.write(json.dumps(rec) + "\n")
                    print(json.dumps(rec), flush=True)
            model.train()
    train_seconds = time.perf_counter() - t_train
    log.close()
    model.eval().requires_grad_(False)

    meta = {
        "seed": args.seed, "steps": step, "batch_size": args.batch_size, "lr": args.lr, "warmup": args.warmup,
        "workers": args.workers, "math_frac": args.math_frac, "init": args.init, "train_seconds": round(train_seconds, 1),
        "parameters": n_params, "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "sequences_seen": step * args.batch_size, "torch": torch.__version__,
    }
    save_llada(model, out, dtype=torch.bfloat16, max_shard_bytes=12 * 1024**2)
    (log_dir / "train_meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    plot_training_log(log_path, log_dir / "loss_curve.png")
    print(json.dumps(meta), flush=True)

    if args.final_eval:
        results = []
        with torch.no_grad(), autocast:
            full = {"math": synth_math.test_docs(), "code": synth_code.test_docs()}
            for name, thresholds in (("math", (None, 0.9, 0.7, 0.5, 0.3)), ("code", (None, 0.9, 0.3))):
                for thr in thresholds:
                    res = evaluate(model, vocab, name, full[name], thr)
                    results.append(res)
                    print(json.dumps({k: v for k, v in res.items() if k != "examples"}), flush=True)
            for name in ("math", "code"):
                res = evaluate(model, vocab, name, full[name][:400], None, fmt="chat")
                results.append(res)
                print(json.dumps({k: v for k, v in res.items() if k != "examples"}), flush=True)
        (log_dir / "train_eval.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


def plot_training_log(log_path: str | os.PathLike, out_png: str | os.PathLike) -> None:
    """The loss curve and the periodic per-tier evaluations of a `train_log.jsonl`, as one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    losses = [r for r in records if "loss" in r]
    evals = [r for r in records if "eval" in r]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot([r["step"] for r in losses], [r["loss"] for r in losses], lw=0.8, label="LLaDA SFT loss (CE/t)")
    axes[0].plot([r["step"] for r in losses], [r["masked_ce"] for r in losses], lw=0.8, label="CE on masked tokens")
    axes[0].set(xlabel="step", yscale="log", title="training loss")
    axes[0].legend()
    for ax, task in zip(axes[1:], ("math", "code")):
        rows = [r for r in evals if r["eval"] == task]
        for tier in ("1", "2", "3", "4"):
            ax.plot([r["step"] for r in rows], [100 * r["acc_tier"][tier] for r in rows], marker="o", label=f"tier {tier}")
        ax.set(xlabel="step", ylabel="accuracy % (1 token/step)", ylim=(-2, 102), title=f"synth_{task} (quick eval)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m dllm_eval.train ...`, the same as `dllm-eval train-tiny ...`."""
    parser = argparse.ArgumentParser(prog="dllm-eval train-tiny", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except UserError as exc:
        print(f"dllm-eval train-tiny: error: {exc}", file=sys.stderr)
        return 2


__all__ = ["add_arguments", "build_tokenizer", "decode", "render_prompt", "run", "sft_loss"]


if __name__ == "__main__":
    sys.exit(main())
