"""`dllm-eval train-tiny`: train a small embedded model (LLaDA or Dream format) on the synthetic tasks.

`--arch llada` (default) trains tiny_llada, `--arch dream` tiny_dream. The two share the data,
objective, optimizer, budget and evaluation; what differs is small and kept in one place each:
the BPE's pre-tokenizer and the tokenizer files (`build_tokenizer`), the prompt rendering
(`render_prompt`), the model config (`model_config`) and the checkpoint writer (`FAMILY_CODE`).
The objective needs no family branch: every model's forward returns *aligned* logits
(Dream's one-position shift happens inside `dllm_eval.models.dream`).

What it does, in order:
1. builds the tokenizer: a byte-level BPE learned with the `tokenizers` library on generated
   problems, with digits kept as single tokens (no merge ever contains a digit, so numbers are
   spelled digit by digit and arithmetic stays learnable), the family's special tokens packed
   after the learned vocabulary, and the family's chat template (LLaDA-8B-Instruct's, or
   Qwen2's for Dream);
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
   checkpoint in the family's on-disk format (bf16 safetensors shards, index, config, tokenizer);
   for Dream also the model card (`write_dream_card`), filled from the run's logs.

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


def learn_bpe(seed: int, n_per_task: int, max_vocab: int, arch: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Learn the byte-level BPE on the generated corpus; returns (vocabulary, merges).

    Merges can only form inside a pre-token, so the BPE must be learned under the pre-tokenizer
    the written tokenizer applies when encoding, or some merges never fire:
    - LLaDA (tokenizer.json, GPT-2's byte-level regex): the trainer isolates every digit first,
      so no merge contains a digit; the written tokenizer then also spells numbers digit by digit.
    - Dream (vocab.json + merges.txt, read by Qwen2's tokenizer, whose regex is fixed by the
      format): Qwen2's regex, which already splits digits one by one. It also cuts a newline off
      the indentation after it ("\\n    x" -> "\\n", "   ", " x"), so tiny_llada's merges
      (`\\n   ` is one of them) under it would lengthen every synth_code line: 8.5% of training
      answers would no longer fit the 96-token canvas. Learned under Qwen2's regex, the longest
      synth_code answer is 87 tokens (88 for tiny_llada); Qwen2's chat template (with its default
      system turn) is longer than LLaDA's, and 2 in 60,000 synth_code chat prompts exceed
      MAX_PROMPT (skipped, like any row that does not fit).
    """
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    if arch == "llada":
        pre = [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    else:
        from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

        pre = [pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
               pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(pre)
    trainer = trainers.BpeTrainer(vocab_size=max_vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(tokenizer_corpus(seed, n_per_task), trainer)
    model = json.loads(tok.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    if sorted(vocab.values()) != list(range(len(vocab))):
        raise RuntimeError("BPE vocabulary ids are not contiguous")
    return vocab, merges


def padded_vocab_size(n_ids: int) -> int:
    """Model rows for `n_ids` token ids: rounded up to a multiple of 64 (GPU-friendly matmuls)."""
    return -(-n_ids // VOCAB_MULTIPLE) * VOCAB_MULTIPLE


def build_tokenizer(out_dir: str | os.PathLike, seed: int = 0, n_per_task: int = 20000,
                    max_vocab: int = 1024, arch: str = "llada") -> dict[str, int]:
    """Learn the BPE, write the family's tokenizer files to `out_dir`, return its special ids.

    The templates' vocabulary is small, so the BPE saturates well below `max_vocab` (~660-690
    tokens: every template word becomes one token, which roughly halves prompt length).
    LLaDA: tokenizer.json + LLaDA's special tokens and template (AutoTokenizer-loadable).
    Dream: the hub's layout (vocab.json, merges.txt, tokenizer_config.json with the
    `tokenization_dream` auto_map), Dream's added tokens packed after the vocabulary, Qwen2's
    chat template; loaded by `load_tokenizer` as Qwen2's tokenizer, no remote code.
    """
    from dllm_eval.models.tokenizer import (
        DREAM_ADDED_TOKENS,
        compact_special_ids,
        write_dream_tokenizer,
        write_tokenizer,
    )

    vocab, merges = learn_bpe(seed, n_per_task, max_vocab, arch)
    if arch == "llada":
        specials = compact_special_ids(len(vocab))
        vocab_size = padded_vocab_size(max(specials.values()) + 1)
        write_tokenizer(out_dir, vocab, merges, specials, vocab_size, model_max_length=SEQ_LEN * 4)
        return specials
    # write_dream_tokenizer rebuilds the vocabulary as bytes + merge products in merge order,
    # which is how the trainer numbers it; checked, since every model row depends on it.
    specials = write_dream_tokenizer(out_dir, padded_vocab_size(len(vocab) + len(DREAM_ADDED_TOKENS)), merges=merges,
                                     model_max_length=SEQ_LEN * 4)
    written = json.loads((Path(out_dir) / "vocab.json").read_text())
    if written != vocab:
        raise RuntimeError("the Dream vocab.json does not number tokens as the trained BPE does")
    return specials


def render_prompt(text: str, fmt: str, arch: str = "llada") -> str:
    """A prompt as an adapter may present it: raw, after BOS, or through the family's chat
    template (equal to the tokenizer's `apply_chat_template` with a generation prompt)."""
    from dllm_eval.models import tokenizer as T

    if fmt == "raw":
        return text
    if fmt == "bos":
        return (T.BOS if arch == "llada" else T.DREAM_BOS) + text
    if fmt == "chat" and arch == "llada":
        return (f"{T.BOS}{T.START_HEADER}user{T.END_HEADER}\n\n{text.strip()}{T.EOT}"
                f"{T.START_HEADER}assistant{T.END_HEADER}\n\n")
    if fmt == "chat":  # Qwen2's template: a default system turn, content untrimmed
        return (f"{T.IM_START}system\nYou are a helpful assistant.{T.IM_END}\n"
                f"{T.IM_START}user\n{text}{T.IM_END}\n{T.IM_START}assistant\n")
    raise ValueError(f"unknown prompt format {fmt!r}")


TOKENIZER_FILES = {
    "llada": ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"),
    "dream": ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json"),
}


def tokenizer_arch(tok_dir: str | os.PathLike) -> str | None:
    """Which family's tokenizer files `tok_dir` holds (Dream's config names DreamTokenizer), or None."""
    d = Path(tok_dir)
    config = d / "tokenizer_config.json"
    if config.is_file() and json.loads(config.read_text()).get("tokenizer_class") == "DreamTokenizer":
        return "dream" if all((d / f).is_file() for f in TOKENIZER_FILES["dream"]) else None
    return "llada" if (d / "tokenizer.json").is_file() else None


class Vocab:
    """The ids training and decoding need, read from a written tokenizer directory (either family).

    Encoding uses a `tokenizers` object in both cases (fast in the data workers); for Dream it is
    Qwen2's fast tokenizer built from vocab.json/merges.txt, which encodes like the Qwen2
    tokenizer `load_tokenizer` returns (tested).
    """

    def __init__(self, tok_dir: str | os.PathLike) -> None:
        from dllm_eval.models import tokenizer as T

        self.dir = Path(tok_dir)
        arch = tokenizer_arch(self.dir)
        if arch is None:
            raise UserError(f"{self.dir} holds no LLaDA (tokenizer.json) or Dream (vocab.json, merges.txt, "
                            "tokenizer_config.json) tokenizer")
        self.arch: str = arch
        if arch == "llada":
            from tokenizers import Tokenizer

            self.tok = Tokenizer.from_file(str(self.dir / "tokenizer.json"))
            self.eos, self.bos, self.mask = (self.tok.token_to_id(t) for t in (T.EOS, T.BOS, T.MASK))
            self.first_special = self.bos
            self.size = self.tok.get_vocab_size()
        else:
            from transformers import Qwen2TokenizerFast

            self.tok = Qwen2TokenizerFast.from_pretrained(str(self.dir)).backend_tokenizer
            self.eos, self.bos, self.mask = (self.tok.token_to_id(t) for t in (T.DREAM_EOS, T.DREAM_BOS, T.DREAM_MASK))
            self.first_special = min(self.tok.get_added_tokens_decoder())
            self.size = padded_vocab_size(self.tok.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

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
            prompt = vocab.encode(render_prompt(task.doc_to_text(doc), fmt, vocab.arch))
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
    prompts = [vocab.encode(render_prompt(task.doc_to_text(d), fmt, vocab.arch)) for d in docs]
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


ARCHES = ("llada", "dream")
# Per-family defaults where the families differ. Dream: 4 heads of 80 sharing 2 KV heads, so the
# tiny model has real grouped-query attention (more than one KV head, each shared by several
# query heads: a head-to-group mapping error cannot hide, as it could with a single KV head).
ARCH_DEFAULTS = {
    "llada": {"out": "runs/tiny_llada", "log_dir": "results/embedded", "n_heads": 5, "kv_heads": None},
    "dream": {"out": "runs/tiny_dream", "log_dir": "results/embedded/tiny_dream", "n_heads": 4, "kv_heads": 2},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--arch", choices=ARCHES, default="llada",
                        help="checkpoint family: llada (tiny_llada) or dream (tiny_dream)")
    parser.add_argument("--out", default=None, help="checkpoint directory to write (default: runs/tiny_<arch>)")
    parser.add_argument("--log-dir", default=None, help="where the loss curve and eval go "
                        "(default: results/embedded for llada, results/embedded/tiny_dream for dream)")
    parser.add_argument("--tokenizer", default=None,
                        help="reuse the tokenizer of this directory (same --arch) instead of learning a new one")
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
    parser.add_argument("--n-heads", type=int, default=None, help="attention heads (default: 5 llada, 4 dream)")
    parser.add_argument("--kv-heads", type=int, default=None,
                        help="key/value heads (default: --n-heads for llada, 2 for dream)")
    parser.add_argument("--mlp", type=int, default=896)
    parser.add_argument("--math-frac", type=float, default=0.7, help="share of synth_math rows")
    parser.add_argument("--workers", type=int, default=8, help="data-generation processes (0: in-process)")
    parser.add_argument("--log-every", type=int, default=25)
    parser.add_argument("--eval-every", type=int, default=0, help="quick eval every N steps (0: never)")
    parser.add_argument("--eval-docs", type=int, default=256, help="docs per task for the periodic eval")
    parser.add_argument("--final-eval", action="store_true",
                        help="evaluate the full test splits at the end (quick decoder, several thresholds)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    parser.add_argument("--card-only", action="store_true",
                        help="dream: only (re)write --out's README.md from the checkpoint and --log-dir's logs")


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
        batch = {k: v.to(device) for k, v in next(make_batches_torch(str(vocab.dir), batch_size)).items()}
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
    """Fill the per-family defaults, then reject bad combinations with one line each."""
    arch = getattr(args, "arch", "llada")
    args.arch = arch
    for key, value in ARCH_DEFAULTS[arch].items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.kv_heads is None:
        args.kv_heads = args.n_heads
    if args.card_only:
        if arch != "dream":
            raise UserError("--card-only writes tiny_dream's model card; use it with --arch dream")
        return
    if (args.steps is None) == (args.time_budget is None):
        raise UserError("give exactly one of --steps N or --time-budget SECONDS")
    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be positive, got {args.steps}")
    if args.time_budget is not None and args.time_budget <= 0:
        raise UserError(f"--time-budget must be positive, got {args.time_budget}")
    if args.d_model % args.n_heads or (args.d_model // args.n_heads) % 2:
        raise UserError(f"--d-model {args.d_model} must split into --n-heads {args.n_heads} heads of even size")
    if args.kv_heads < 1 or args.n_heads % args.kv_heads:
        raise UserError(f"--kv-heads {args.kv_heads} must divide --n-heads {args.n_heads}")
    if not 0.0 <= args.math_frac <= 1.0:
        raise UserError(f"--math-frac must be in [0, 1], got {args.math_frac}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be positive, got {args.batch_size}")
    if args.init:
        if not (Path(args.init) / "config.json").is_file():
            raise UserError(f"--init {args.init} is not a checkpoint directory (no config.json)")
        args.tokenizer = args.tokenizer or args.init
    if args.tokenizer and tokenizer_arch(args.tokenizer) != arch:
        raise UserError(f"--tokenizer {args.tokenizer} holds no {arch} tokenizer "
                        f"({', '.join(TOKENIZER_FILES[arch])})")


# The model file of each family and its checkpoint writer; both files offer
# `build_model(config, seed, device, dtype)` and `parameter_count(config)`.
FAMILY_CODE = {"llada": ("dllm_eval.models.llada", "save_llada"), "dream": ("dllm_eval.models.dream", "save_dream")}


def model_config(args: argparse.Namespace, vocab: Vocab) -> Any:
    """The family's config for the model to train, with the tokenizer's ids.

    Dream: Dream-7B's architecture choices (q/k/v biases, untied head, RoPE theta 1e6, GQA) at
    tiny_llada's width, depth and MLP size; eos = pad = bos id = `<|endoftext|>` as in
    Dream-7B's config.json (`<|beginoftext|>` is the tokenizer's BOS, which prompts may carry).
    """
    if args.arch == "llada":
        from dllm_eval.models.llada import LLaDAConfig

        return LLaDAConfig(
            d_model=args.d_model, n_heads=args.n_heads, n_kv_heads=args.kv_heads, n_layers=args.n_layers,
            mlp_hidden_size=args.mlp, vocab_size=vocab.size, embedding_size=vocab.size,
            max_sequence_length=4096, mask_token_id=vocab.mask, eos_token_id=vocab.eos, pad_token_id=vocab.eos,
            extra={"bos_token_id": vocab.bos},
        )
    from dllm_eval.models.dream import DreamConfig

    config = DreamConfig(
        hidden_size=args.d_model, intermediate_size=args.mlp, num_hidden_layers=args.n_layers,
        num_attention_heads=args.n_heads, num_key_value_heads=args.kv_heads, vocab_size=vocab.size,
        max_position_embeddings=4096, rope_theta=1e6, tie_word_embeddings=False,
        mask_token_id=vocab.mask, eos_token_id=vocab.eos, pad_token_id=vocab.eos, bos_token_id=vocab.eos,
    )
    config.validate()
    return config


def run(args: argparse.Namespace) -> int:
    _check_args(args)
    if args.card_only:
        print(f"wrote {write_dream_card(args.out, args.log_dir)}")
        return 0
    import importlib

    import torch

    from dllm_eval.models.registry import family_of, load_model

    family = importlib.import_module(FAMILY_CODE[args.arch][0])
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
        for name in TOKENIZER_FILES[args.arch]:
            src = Path(args.tokenizer) / name
            if src.resolve() != (out / name).resolve():
                shutil.copyfile(src, out / name)
    else:
        build_tokenizer(out, seed=args.seed, arch=args.arch)
    vocab = Vocab(out)
    print(f"tokenizer: {vocab.size} ids (eos={vocab.eos} mask={vocab.mask}) "
          f"in {time.perf_counter() - t_start:.1f}s", flush=True)

    config = model_config(args, vocab)
    if args.init:
        model = load_model(args.init, device=device, dtype=torch.float32)
        if family_of(model).name != args.arch:
            raise UserError(f"--init {args.init} is a {family_of(model).name} checkpoint, not --arch {args.arch}")
        config = model.config
        if (config.padded_vocab, config.mask_token_id, config.eos_token_id) != (vocab.size, vocab.mask, vocab.eos):
            raise UserError(f"--init {args.init}: its vocabulary does not match the tokenizer")
    else:
        model = family.build_model(config, seed=args.seed, device=device, dtype=torch.float32)
    model = model.train().requires_grad_(True)
    n_params = family.parameter_count(config)
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
        **({"arch": args.arch, "compile": args.compile} if args.arch != "llada" else {}),  # llada: keys as shipped
        "seed": args.seed, "steps": step, "batch_size": args.batch_size, "lr": args.lr, "warmup": args.warmup,
        "workers": args.workers, "math_frac": args.math_frac, "init": args.init, "train_seconds": round(train_seconds, 1),
        "parameters": n_params, "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        "sequences_seen": step * args.batch_size, "torch": torch.__version__,
    }
    getattr(family, FAMILY_CODE[args.arch][1])(model, out, dtype=torch.bfloat16, max_shard_bytes=12 * 1024**2)
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
    if args.arch == "dream":
        print(f"model card: {write_dream_card(out, log_dir)}", flush=True)
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


# --------------------------------------------------------------------------------------------
# Model card (tiny_dream): every number is read from the checkpoint and the run's logs
# --------------------------------------------------------------------------------------------


def _card_table(rows: Sequence[tuple[str, str]]) -> list[str]:
    return ["| field | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def _quick_eval_lines(results: list[dict]) -> list[str]:
    """train_eval.json (the training-time decoder at several thresholds) as one markdown table."""
    lines = ["| task | decoder | prompt | n | tier 1 | tier 2 | tier 3 | tier 4 | all | NFE/doc |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        decoder = "1 token/step" if r["threshold"] is None else f"τ = {r['threshold']}"
        tiers = [f"{100 * r['acc_tier'][t]:.1f}" if t in r["acc_tier"] else "" for t in ("1", "2", "3", "4")]
        lines.append(f"| synth_{r['task']} | {decoder} | {r['format']} | {r['n']} | {' | '.join(tiers)} | "
                     f"{100 * r['acc']:.1f} | {r['nfe']:.2f} |")
    return lines


def _continued_lines(logs: Path) -> list[str]:
    """A paragraph for a continued-training stage (`--init`), logged under `<log-dir>/continued/`."""
    path = logs / "continued" / "train_meta.json"
    if not path.is_file():
        return []
    meta = json.loads(path.read_text())
    return [f"Continued training (`--init`, logs in `continued/`): {meta['steps']:,} more steps at lr {meta['lr']} "
            f"({meta['warmup']} warm-up steps), seed {meta['seed']}, {meta['train_seconds']:.0f} s on {meta['device']} "
            f"({meta['sequences_seen'] / 1e6:.2f}M more sequences): `dllm-eval train-tiny --arch dream --init DIR "
            f"--out DIR --steps {meta['steps']} --lr {meta['lr']} --warmup {meta['warmup']}"
            f"{' --compile' if meta.get('compile') else ''} --workers {meta['workers']} --seed {meta['seed']}`. "
            "synth_code was still being learned at the first stage's end, as for tiny_llada; the evaluation below is "
            "of the weights after both stages.", ""]


def write_dream_card(ckpt_dir: str | os.PathLike, log_dir: str | os.PathLike) -> Path:
    """Write `ckpt_dir/README.md`, tiny_dream's model card, from its config, index, tokenizer and
    the run's `train_meta.json` / `train_log.jsonl` (plus `train_eval.json` and
    `scheduler_eval_gpu.json` when present), so no number in it is typed by hand. Re-run it with
    `dllm-eval train-tiny --arch dream --card-only --out DIR --log-dir DIR` after adding results."""
    from dllm_eval.models import tokenizer as T
    from dllm_eval.models.checkpoint_io import WEIGHTS_INDEX, read_json
    from dllm_eval.models.dream import load_config, parameter_count

    ckpt, logs = Path(ckpt_dir), Path(log_dir)
    config = load_config(ckpt)
    meta = read_json(logs / "train_meta.json")
    records = [json.loads(x) for x in (logs / "train_log.jsonl").read_text().splitlines() if x.strip()]
    last = [r for r in records if "loss" in r][-1]
    index = read_json(ckpt / WEIGHTS_INDEX)
    shards = sorted(set(index["weight_map"].values()))
    mib = [(ckpt / s).stat().st_size / 1024**2 for s in shards]
    vocab = Vocab(ckpt)
    n_bpe = len(json.loads((ckpt / "vocab.json").read_text()))
    n_merges = sum(1 for line in (ckpt / "merges.txt").read_text().splitlines()[1:] if line)  # after "#version"
    ids = {name: vocab.tok.token_to_id(name) for name in (T.DREAM_BOS, T.DREAM_EOS, T.DREAM_MASK, T.IM_START, T.IM_END)}
    rate = meta["steps"] / meta["train_seconds"] if meta["train_seconds"] else 0.0
    command = (f"dllm-eval train-tiny --arch dream --out DIR --steps {meta['steps']}"
               f"{' --compile' if meta.get('compile') else ''} --workers {meta['workers']} --seed {meta['seed']}")

    out = [
        "# tiny_dream: the embedded Dream-format diffusion model of dllm-eval",
        "",
        f"A {meta['parameters'] / 1e6:.1f}M-parameter masked diffusion language model in Dream's exact on-disk "
        "format (Dream-org/Dream-v0-Instruct-7B's config fields, weight names, tokenizer files and chat "
        "template), trained from scratch on the same synthetic tasks, data and objective as tiny_llada. "
        "It exists so that every scheduler can be compared on two model families on a laptop with no network:",
        "",
        "    lm_eval --model dllm_adaptive --model_args pretrained=tiny_dream --tasks synth_math --include_path tasks",
        "",
        "It is a toy for testing evaluation machinery, not a language model: it knows nothing outside the "
        "two task templates.",
        "",
        "## Architecture",
        "",
        "Dream's Qwen2 network (`dllm_eval/models/dream.py`): bidirectional attention, RMSNorm, RoPE, SwiGLU "
        "MLP, biases on q/k/v only, grouped-query attention, untied head, and Dream's logit shift "
        "(the logit for position i comes from the hidden state at i-1).",
        "",
        *_card_table([
            ("hidden_size / num_hidden_layers", f"{config.hidden_size} / {config.num_hidden_layers}"),
            ("num_attention_heads / num_key_value_heads (head dim)",
             f"{config.num_attention_heads} / {config.effective_n_kv_heads} ({config.head_dim})"),
            ("intermediate_size", str(config.intermediate_size)),
            ("rope_theta", f"{config.rope_theta:g}"),
            ("vocab_size (model rows)", str(config.vocab_size)),
            ("parameters", f"{parameter_count(config):,}"),
            ("weights", f"{config.extra.get('torch_dtype', 'bfloat16')} safetensors, {len(shards)} shard{'s' if len(shards) > 1 else ''} "
                        f"({' + '.join(f'{m:.1f}' for m in mib)} = {sum(mib):.1f} MiB), `{WEIGHTS_INDEX}`"),
            ("special ids", f"`<\\|endoftext\\|>` = EOS = PAD {ids[T.DREAM_EOS]}, `<\\|mask\\|>` {ids[T.DREAM_MASK]}, "
                            f"`<\\|beginoftext\\|>` (BOS) {ids[T.DREAM_BOS]}, `<\\|im_start\\|>` {ids[T.IM_START]}, "
                            f"`<\\|im_end\\|>` {ids[T.IM_END]}"),
        ]),
        "",
        "## Tokenizer",
        "",
        f"Dream's layout: `vocab.json` ({n_bpe} ordinary tokens: the 256 byte-level symbols plus {n_merges} "
        "merges), `merges.txt`, and `tokenizer_config.json` with Dream's added tokens packed after the "
        "vocabulary, the `auto_map` to `tokenization_dream.DreamTokenizer` and Qwen2's chat template "
        "(`<|im_start|>` turns, default system turn). Load it with `dllm_eval.models.tokenizer.load_tokenizer` "
        "(Qwen2's tokenizer, no remote code). The BPE is learned like tiny_llada's "
        "(`dllm_eval.train.build_tokenizer`, same corpus and settings, deterministic) but under Qwen2's "
        "pre-tokenizer regex, which the format applies when encoding: numbers are spelled digit by digit, "
        "and every merge can fire (tiny_llada's merges under Qwen2's regex would lengthen every indented "
        "synth_code line and push some answers past the 96-token canvas).",
        "",
        "## Data and training",
        "",
        "As tiny_llada (`dllm_eval/assets/tiny_llada/README.md`): problems generated on the fly from the train "
        f"bucket of each task ({100 * meta['math_frac']:.0f}% synth_math), answers padded with EOS to the task's "
        "generation length (64 / 96 tokens), prompts rendered raw (45%), after BOS (15%) or through the chat "
        "template (40%); LLaDA's SFT objective (prompt never masked, t ~ U(0, 1) stratified over the batch, "
        "CE on masked answer tokens divided by p). The objective code is the same: the model returns "
        "aligned logits, the shift stays inside the Dream model file.",
        "",
        *_card_table([
            ("steps / batch", f"{meta['steps']:,} / {meta['batch_size']} sequences "
                              f"({meta['sequences_seen'] / 1e6:.2f}M sequences seen)"),
            ("optimizer", f"AdamW (0.9, 0.95), lr {meta['lr']:g}, {meta['warmup']} warm-up steps, cosine decay, "
                          "weight decay 0.1, clip 1.0"),
            ("precision", "bf16 autocast, fp32 master weights" + (", `torch.compile`" if meta.get("compile") else "")),
            ("seed", f"{meta['seed']} ({meta['workers']} data workers)"),
            ("hardware / time", f"{meta['device']}: {meta['train_seconds']:.0f} s of training ({rate:.1f} steps/s), "
                                f"torch {meta['torch']}"),
            ("final loss", f"{last['loss']:.3f} (CE on masked tokens {last['masked_ce']:.3f}) at step {last['step']}"),
        ]),
        "",
        f"Reproduce: `{command}`. Loss curve and periodic evaluations: `train_log.jsonl`, `loss_curve.png` "
        "next to `train_meta.json`.",
        "",
        *_continued_lines(logs),
        "## Evaluation",
        "",
    ]
    if (logs / "scheduler_eval_gpu.json").is_file():
        from dllm_eval.synth.evaluate import summarize

        sched = json.loads((logs / "scheduler_eval_gpu.json").read_text())
        out += [f"Real schedulers through `python -m dllm_eval.synth.evaluate` ({sched['meta']['device_name']}, "
                f"{sched['meta']['dtype']}), full test splits; Δ is paired against `llada` on the same documents.",
                "", summarize(sched["results"]).rstrip(), ""]
    else:
        out += ["Real-scheduler numbers: not measured yet. Run `python -m dllm_eval.synth.evaluate --model "
                "dllm_eval/assets/tiny_dream --device cuda --dtype float32 --batch-size 250 --out "
                f"{logs}/scheduler_eval_gpu.json` and regenerate this card.", ""]
    if (logs / "train_eval.json").is_file():
        out += ["Training-time quick decoder (`dllm_eval.train.decode`: block 32, no cache; accuracy in %):", "",
                *_quick_eval_lines(json.loads((logs / "train_eval.json").read_text())), ""]
    out += [
        "## Limitations",
        "",
        "- Trained on canvases of exactly 64 (synth_math) and 96 (synth_code) tokens; decode with those lengths "
        "and blocks of 32 or more, as tiny_llada.",
        f"- The token ids are not Dream-7B's ({config.vocab_size} model rows, not 152,064), so no tokenizer or "
        "weights can be swapped between the two; the format, names and conventions are the same.",
        "- A toy for testing evaluation machinery; it knows nothing outside the two task templates.",
        "",
    ]
    path = ckpt / "README.md"
    path.write_text("\n".join(out))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m dllm_eval.train ...`, the same as `dllm-eval train-tiny ...`."""
    parser = argparse.ArgumentParser(prog="dllm-eval train-tiny", description=__doc__.splitlines()[0])
    add_arguments(parser)
    try:
        return run(parser.parse_args(argv))
    except UserError as exc:
        print(f"dllm-eval train-tiny: error: {exc}", file=sys.stderr)
        return 2


__all__ = ["add_arguments", "build_tokenizer", "decode", "render_prompt", "run", "sft_loss", "write_dream_card"]


if __name__ == "__main__":
    sys.exit(main())
