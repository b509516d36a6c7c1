"""Tokenizers in LLaDA's on-disk format (tokenizer.json + tokenizer_config.json).

Random checkpoints and the embedded tiny model need a tokenizer that `AutoTokenizer` loads with
no custom code and that carries LLaDA's special tokens and chat template. We build one with the
`tokenizers` library: a byte-level BPE (optionally with merges), the special tokens at the ids
the config names, and LLaDA-8B-Instruct's template.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

# LLaDA-8B-Instruct's template, rewritten from its documented behaviour: one header per message,
# BOS before the first, and the assistant header always appended (it ignores add_generation_prompt).
LLADA_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}"
    "{% endfor %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
)

BOS, EOS, EOT, MASK = "<|startoftext|>", "<|endoftext|>", "<|eot_id|>", "<|mdm_mask|>"
START_HEADER, END_HEADER = "<|start_header_id|>", "<|end_header_id|>"

# The real ids of LLaDA-8B-Instruct (reference 1.4).
LLADA_8B_SPECIAL_IDS: dict[str, int] = {
    BOS: 126080,
    EOS: 126081,
    "[CLS]": 126082,
    "[gMASK]": 126083,
    MASK: 126336,
    "<role>": 126340,
    "</role>": 126341,
    "<|arithmetic_start|>": 126342,
    "<|arithmetic_end|>": 126343,
    "<|number_start|>": 126344,
    "<|number_end|>": 126345,
    START_HEADER: 126346,
    END_HEADER: 126347,
    EOT: 126348,
}


@dataclass(frozen=True)
class SpecialIds:
    bos: int
    eos: int
    eot: int
    mask: int
    start_header: int
    end_header: int


def compact_special_ids(first_id: int) -> dict[str, int]:
    """Special tokens packed from `first_id` upward, same order as LLaDA's, for small vocabularies."""
    names = [BOS, EOS, "[CLS]", "[gMASK]", MASK, "<role>", "</role>", "<|arithmetic_start|>",
             "<|arithmetic_end|>", "<|number_start|>", "<|number_end|>", START_HEADER, END_HEADER, EOT]
    return {name: first_id + i for i, name in enumerate(names)}


def byte_level_alphabet() -> list[str]:
    from tokenizers import pre_tokenizers

    return sorted(pre_tokenizers.ByteLevel.alphabet())


def write_tokenizer(
    out_dir: str | os.PathLike,
    vocab: dict[str, int],
    merges: list[tuple[str, str]],
    special_ids: dict[str, int],
    vocab_size: int,
    model_max_length: int = 4096,
) -> None:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json.

    `vocab` holds the ordinary (byte-level) tokens. Ids not used by `vocab` or the special
    tokens up to `vocab_size` are filled with `<|reserved_token_k|>` added tokens, as LLaDA's
    vocabulary has reserved slots, so every model row has a token.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

    full_vocab = dict(vocab)
    clash = set(full_vocab.values()) & set(special_ids.values())
    if clash:
        raise ValueError(f"special ids {sorted(clash)[:5]} collide with ordinary tokens")
    if max(special_ids.values()) >= vocab_size or max(full_vocab.values()) >= vocab_size:
        raise ValueError(f"token ids exceed vocab_size={vocab_size}")
    used = set(full_vocab.values()) | set(special_ids.values())
    reserved = {f"<|reserved_token_{i}|>": i for i in range(vocab_size) if i not in used}
    full_vocab.update(special_ids)
    full_vocab.update(reserved)

    tok = Tokenizer(models.BPE(vocab=full_vocab, merges=merges, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(
        [AddedToken(name, special=True, normalized=False) for name in sorted(special_ids, key=special_ids.get)]
    )
    tok.add_tokens([AddedToken(name, special=True, normalized=False) for name in sorted(reserved, key=reserved.get)])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))

    # Check that ids landed where the config says they are (tokenizers keeps existing vocab ids).
    for name, idx in special_ids.items():
        if tok.token_to_id(name) != idx:
            raise RuntimeError(f"tokenizer put {name} at {tok.token_to_id(name)}, expected {idx}")

    added = {
        str(idx): {"content": name, "lstrip": False, "normalized": False, "rstrip": False,
                   "single_word": False, "special": True}
        for name, idx in sorted({**special_ids}.items(), key=lambda kv: kv[1])
    }
    config = {
        "add_bos_token": False,
        "add_eos_token": False,
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "eos_token": EOS,
        "pad_token": EOS,
        "mask_token": MASK,
        "chat_template": LLADA_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
        "model_max_length": model_max_length,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    special_map = {"bos_token": BOS, "eos_token": EOS, "pad_token": EOS, "mask_token": MASK,
                   "additional_special_tokens": [EOT, START_HEADER, END_HEADER]}
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")


def write_byte_tokenizer(out_dir: str | os.PathLike, vocab_size: int, llada_ids: bool) -> dict[str, int]:
    """A byte-level tokenizer with no merges: every text round-trips, one token per byte.

    With `llada_ids` the special tokens sit at LLaDA-8B's real ids (needs vocab_size >= 126349);
    otherwise they are packed right after the 256 byte tokens. Returns the special ids.
    """
    alphabet = byte_level_alphabet()
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    specials = dict(LLADA_8B_SPECIAL_IDS) if llada_ids else compact_special_ids(len(vocab))
    need = max(specials.values()) + 1
    if vocab_size < need:
        raise ValueError(f"vocab_size={vocab_size} is too small: the byte alphabet and special tokens need {need}")
    write_tokenizer(out_dir, vocab, [], specials, vocab_size)
    return specials


def special_ids_of(tokenizer) -> SpecialIds:
    """Look the LLaDA special tokens up in a loaded (HF) tokenizer."""

    def tid(name: str) -> int:
        idx = tokenizer.convert_tokens_to_ids(name)
        if idx is None or idx == tokenizer.unk_token_id:
            raise ValueError(f"tokenizer has no {name} token")
        return int(idx)

    return SpecialIds(bos=tid(BOS), eos=tid(EOS), eot=tid(EOT), mask=tid(MASK),
                      start_header=tid(START_HEADER), end_header=tid(END_HEADER))


def load_tokenizer(path: str | os.PathLike):
    """Load a checkpoint's tokenizer without running any repository code.

    LLaDA's config.json carries an `auto_map` to its remote modeling code, which makes
    `AutoTokenizer` ask for trust_remote_code. The tokenizer itself needs none: its
    tokenizer_config.json names a stock class (PreTrainedTokenizerFast), which we load directly.
    """
    import transformers

    config_file = Path(path) / "tokenizer_config.json"
    cls_name = json.loads(config_file.read_text()).get("tokenizer_class") if config_file.is_file() else None
    cls = getattr(transformers, cls_name, None) if cls_name else None
    if cls is not None and cls_name.endswith("Fast"):
        return cls.from_pretrained(str(path))
    return transformers.AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
