"""Tokenizers in LLaDA's on-disk format (tokenizer.json + tokenizer_config.json) and Dream's
(vocab.json + merges.txt + tokenizer_config.json, as the hub ships them).

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
    if cls_name == "DreamTokenizer":  # Dream's remote code; the stock Qwen2 tokenizer reads the same files
        return load_dream_tokenizer(path)
    cls = getattr(transformers, cls_name, None) if cls_name else None
    if cls is not None and cls_name.endswith("Fast"):
        return cls.from_pretrained(str(path))
    return transformers.AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)


# --------------------------------------------------------------------------------------------
# Dream (Qwen2 byte-level BPE + Dream's two extra special tokens)
# --------------------------------------------------------------------------------------------

# Qwen2's chat template (`<|im_start|>role\n...<|im_end|>` turns, a default system turn when the
# conversation has none), as Dream-v0-Instruct uses it.
DREAM_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

DREAM_BOS, DREAM_EOS, DREAM_MASK = "<|beginoftext|>", "<|endoftext|>", "<|mask|>"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"

# Qwen2.5's added tokens (ids 151643..151664) then Dream's two (151665, 151666), in id order;
# the flag says whether the token is "special" (tool-call tags are not).
DREAM_ADDED_TOKENS: list[tuple[str, bool]] = [
    (DREAM_EOS, True), (IM_START, True), (IM_END, True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True),
    ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False),
    ("<|fim_prefix|>", False), ("<|fim_middle|>", False), ("<|fim_suffix|>", False), ("<|fim_pad|>", False),
    ("<|repo_name|>", False), ("<|file_sep|>", False),
    (DREAM_BOS, True), (DREAM_MASK, True),
]
DREAM_FIRST_ADDED_ID = 151643  # = the size of Qwen2's ordinary BPE vocabulary
DREAM_7B_VOCAB = 152064  # the model's rows; ids above 151666 have no token
DREAM_ADDITIONAL_SPECIAL = [IM_START, IM_END, "<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>",
                            "<|box_end|>", "<|quad_start|>", "<|quad_end|>", "<|vision_start|>", "<|vision_end|>",
                            "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>"]

# A few byte-level merges so that small test tokenizers exercise BPE ranks (not only bytes).
SMALL_MERGES: list[tuple[str, str]] = [
    ("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("e", "r"), ("o", "n"), ("r", "e"),
    ("Ġ", "s"), ("a", "n"), ("Ġ", "w"), ("a", "t"), ("i", "s"), ("Ġ", "="), ("Ġ", "+"), ("Ċ", "Ċ"),
    ("Ġ", "Ġ"), ("ĠĠ", "ĠĠ"), ("o", "u"), ("Ġw", "h"), ("Ġwh", "at"), ("Ġ", "is"), ("an", "s"), ("e", "d"),
]


def dream_special_ids(vocab_size: int, n_ordinary: int) -> dict[str, int]:
    """Added-token ids: Dream's real ones (from 151643) when the model has Dream-7B's 152064
    rows, else packed right after the `n_ordinary` BPE tokens."""
    first = DREAM_FIRST_ADDED_ID if vocab_size >= DREAM_7B_VOCAB else n_ordinary
    ids = {name: first + i for i, (name, _) in enumerate(DREAM_ADDED_TOKENS)}
    if max(ids.values()) >= vocab_size:
        raise ValueError(f"vocab_size={vocab_size} is too small: the byte alphabet, merges and "
                         f"{len(ids)} added tokens need {max(ids.values()) + 1}")
    return ids


def write_dream_tokenizer(out_dir: str | os.PathLike, vocab_size: int, merges: list[tuple[str, str]] | None = None,
                          model_max_length: int = 131072) -> dict[str, int]:
    """Write a Dream-format tokenizer the way the hub ships it: vocab.json + merges.txt (the
    ordinary BPE tokens only), tokenizer_config.json with the added tokens by id, Dream's
    `auto_map` to its custom `tokenization_dream.DreamTokenizer`, the chat template, and
    special_tokens_map.json. Returns the added tokens' ids.

    The ordinary vocabulary is the 256 byte-level symbols plus `merges`' products. With Dream's
    real ids (vocab_size >= 152064) it is padded with unreachable filler entries up to id
    151643, so that the added tokens follow it contiguously, exactly as in Qwen2's files.
    """
    merges = SMALL_MERGES if merges is None else merges
    vocab = {ch: i for i, ch in enumerate(byte_level_alphabet())}
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    specials = dream_special_ids(vocab_size, len(vocab))
    first = min(specials.values())
    for i in range(len(vocab), first):  # only with real ids: keep the added tokens contiguous
        vocab[f"<|dream_filler_{i}|>"] = i
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n")
    (out / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    flags = dict(DREAM_ADDED_TOKENS)
    added = {
        str(idx): {"content": name, "lstrip": False, "normalized": False, "rstrip": False,
                   "single_word": False, "special": flags[name]}
        for name, idx in sorted(specials.items(), key=lambda kv: kv[1])
    }
    config = {
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "additional_special_tokens": DREAM_ADDITIONAL_SPECIAL,
        "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
        "bos_token": DREAM_BOS,
        "chat_template": DREAM_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": DREAM_EOS,
        "errors": "replace",
        "mask_token": DREAM_MASK,
        "model_max_length": model_max_length,
        "pad_token": DREAM_EOS,
        "split_special_tokens": False,
        "tokenizer_class": "DreamTokenizer",
        "unk_token": None,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
    special_map = {"additional_special_tokens": DREAM_ADDITIONAL_SPECIAL, "bos_token": DREAM_BOS,
                   "eos_token": DREAM_EOS, "mask_token": DREAM_MASK, "pad_token": DREAM_EOS}
    (out / "special_tokens_map.json").write_text(json.dumps(special_map, indent=2) + "\n")
    return specials


def load_dream_tokenizer(path: str | os.PathLike):
    """Dream's tokenizer without its remote code: `tokenization_dream.DreamTokenizer` is Qwen2's
    byte-level BPE (same pre-tokenizer regex, NFC normalisation, byte-level decoding, no BOS
    added), so the stock Qwen2 tokenizer reads the same vocab.json/merges.txt and added tokens."""
    from transformers import Qwen2Tokenizer

    return Qwen2Tokenizer.from_pretrained(str(path))
