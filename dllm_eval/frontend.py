"""The generation front end: prompt text in, answer text out, for every caller.

The lm-eval adapter, `dllm-eval generate`, the synth evaluator and the benchmarks all decode
the same way, so the steps live here once:

1. render: instruct models get the whole (few-shot) prompt as one user turn of the chat template;
2. encode: tokenize without special tokens, keep the last `max_length - gen_length` tokens, and
   left-pad the batch with a real attention mask (so batch size never changes an output);
3. generate: the scheduler decodes the whole canvas;
4. finish: a diffusion canvas has no left-to-right stop, so stop strings (EOS included) are
   applied afterwards: decode with special tokens, cut at the first stop string, re-tokenize,
   decode without special tokens. The kept answer's non-EOS tokens are counted (Fast-dLLM's
   throughput convention).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dllm_eval.errors import UserError


def is_instruct_name(name: str) -> bool:
    """Chat-tuned checkpoints: '*Instruct*' and LLaDA-1.5 (whose name lacks 'instruct')."""
    lowered = name.lower()
    return "instruct" in lowered or re.search(r"llada[-_]?1\.5", lowered) is not None


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Token lists -> (input_ids, attention_mask), left-padded to the longest: the batch layout
    `Scheduler.generate` expects (the prompt ends where the generation canvas starts)."""
    width = max(len(x) for x in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, seq in enumerate(seqs):
        input_ids[row, width - len(seq):] = torch.tensor(list(seq), dtype=torch.long)
        mask[row, width - len(seq):] = 1
    return input_ids, mask


def cut_at_stops(text: str, stops: Sequence[str]) -> str:
    """The text before the first stop string (what lm-eval's `until` keeps); empty stops are ignored."""
    for stop in stops:
        if stop:
            text = text.split(stop, 1)[0]
    return text


@dataclass
class Decoded:
    """One batch's answers: kept text and non-EOS token count per row, plus the scheduler output."""

    texts: list[str]
    gen_tokens: list[int]
    prompt_tokens: list[int]
    output: Any  # schedulers.base.GenerationOutput
    tokens: list[list[int]] = field(default_factory=list)


@dataclass
class FrontEnd:
    """A model, its tokenizer and the prompt conventions that go with them."""

    model: Any
    tokenizer: Any
    use_chat: bool = False
    max_length: int | None = None
    templated_elsewhere: bool = False  # lm-eval's --apply_chat_template already rendered the prompt
    compile_mode: str = "none"  # how the decode step runs (models.graphs)

    @property
    def eos_id(self) -> int:
        return int(self.model.config.eos_token_id)

    @property
    def eos_text(self) -> str:
        return self.tokenizer.decode([self.eos_id])

    def render(self, context: str) -> str:
        if self.use_chat and not self.templated_elsewhere:
            return self.tokenizer.apply_chat_template([{"role": "user", "content": context}],
                                                      add_generation_prompt=True, tokenize=False)
        return context

    def encode(self, contexts: Sequence[str], gen_length: int) -> tuple[Tensor, Tensor]:
        limit = self.max_length or int(getattr(self.model.config, "max_sequence_length", 0) or 1 << 30)
        budget = limit - gen_length
        if budget <= 0:
            raise UserError(f"gen_length={gen_length} leaves no room for the prompt within max_length={limit}")
        ids = [self.tokenizer(self.render(c), add_special_tokens=False)["input_ids"][-budget:] for c in contexts]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.eos_id
        return left_pad(ids, pad)

    def finish(self, token_ids: list[int], stops: Sequence[str]) -> tuple[str, int]:
        """Cut at stop strings (EOS included) after decoding; the kept text and its non-EOS tokens."""
        stops = [*stops, *([self.eos_text] if self.eos_text not in stops else [])]
        raw = self.tokenizer.decode(token_ids, skip_special_tokens=False)
        kept_ids = self.tokenizer(cut_at_stops(raw, stops), add_special_tokens=False)["input_ids"]
        n_tokens = sum(1 for t in kept_ids if t != self.eos_id)
        return self.tokenizer.decode(kept_ids, skip_special_tokens=True), n_tokens

    def generate(self, contexts: Sequence[str], scheduler: Any, stops: Sequence[str],
                 generator: torch.Generator | Sequence[torch.Generator] | None = None) -> Decoded:
        """Render, encode, decode and finish one batch with a built scheduler.

        `generator` may be one per context (per-request random streams). A scheduler that draws
        its randomness outside `schedulers.base.propose` (``row_streams = False``, e.g. dream)
        cannot split one batch's draws by row, so it then decodes the contexts one at a time.
        """
        if (generator is not None and not isinstance(generator, torch.Generator)
                and not getattr(scheduler, "row_streams", True)):
            if len(contexts) > 1:
                return self._generate_rows(contexts, scheduler, stops, list(generator))
            generator = generator[0]
        input_ids, mask = self.encode(contexts, scheduler.params.gen_length)
        out = scheduler.generate(self.model, input_ids, attention_mask=mask, generator=generator)
        texts, counts, tokens = [], [], []
        for row in range(len(contexts)):
            toks = out.tokens[row].tolist()
            text, n = self.finish(toks, stops)
            texts.append(text)
            counts.append(n)
            tokens.append(toks)
        return Decoded(texts, counts, [int(m) for m in mask.sum(dim=1).tolist()], out, tokens)


    def _generate_rows(self, contexts: Sequence[str], scheduler: Any, stops: Sequence[str],
                       generators: list[torch.Generator]) -> Decoded:
        """`generate` one context at a time, merged into one batch's `Decoded`."""
        parts = [self.generate([c], scheduler, stops, generator=g) for c, g in zip(contexts, generators)]
        first = parts[0].output
        merged = type(first)(torch.cat([p.output.tokens for p in parts]), [t for p in parts for t in p.output.traces],
                             sum(p.output.batch_nfe for p in parts), sum(p.output.wall_s for p in parts))
        return Decoded([t for p in parts for t in p.texts], [n for p in parts for n in p.gen_tokens],
                       [n for p in parts for n in p.prompt_tokens], merged, [t for p in parts for t in p.tokens])


def load_front_end(pretrained: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype | None = None,
                   chat: str | bool = "auto", max_length: int | None = None, compile: str = "auto") -> FrontEnd:
    """Load a checkpoint (directory or hub id) and its tokenizer; `chat="auto"` applies the chat
    template when the name looks like an instruct model and the tokenizer has one. `compile`
    picks how the decode step runs (`models.graphs`: auto = inductor for a model of a billion
    parameters or more on a GPU, CUDA graphs for a smaller one, eager on CPU)."""
    from dllm_eval.models.checkpoint_io import resolve_checkpoint
    from dllm_eval.models.graphs import accelerate, resolve_compile_mode
    from dllm_eval.models.registry import load_model
    from dllm_eval.models.tokenizer import load_tokenizer

    resolve_compile_mode(compile, device)  # a bad value or a GPU mode on CPU fails before loading
    path = resolve_checkpoint(pretrained)
    model = load_model(path, device=device, dtype=dtype)  # the family comes from config.json
    mode = resolve_compile_mode(compile, device, sum(p.numel() for p in model.parameters()))  # auto: by size
    model = accelerate(model, mode)
    tokenizer = load_tokenizer(path)
    tokenizer.padding_side = "left"
    wants_chat = is_instruct_name(str(pretrained)) if chat == "auto" else chat in (True, "true")
    use_chat = wants_chat and bool(getattr(tokenizer, "chat_template", None))
    return FrontEnd(model, tokenizer, use_chat=use_chat, max_length=max_length, compile_mode=mode)
