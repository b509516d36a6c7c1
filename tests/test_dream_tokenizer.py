"""Dream's tokenizer, loaded without its remote code, against a re-implementation of what
`tokenization_dream.DreamTokenizer` (a slow GPT-2-style byte-level BPE) does, written from
reading that file: NFC, split on added tokens, Qwen2's pre-tokenizer regex, byte-to-unicode,
rank-ordered BPE merges, vocab lookup; decode joins byte-level pieces and UTF-8-decodes them
with errors="replace", added tokens verbatim, special ones dropped on request."""

from __future__ import annotations

import itertools
import json
import random
import unicodedata

import pytest
import regex

from dllm_eval.models.tokenizer import (
    DREAM_CHAT_TEMPLATE,
    load_dream_tokenizer,
    write_dream_tokenizer,
)

QWEN2_PRETOKENIZE = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                     r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")


def _bytes_to_unicode() -> dict[int, str]:
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    table, extra = {b: chr(b) for b in printable}, 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


class OracleDreamTokenizer:
    """The behaviour of DreamTokenizer, from its vocab.json / merges.txt / tokenizer_config.json."""

    def __init__(self, path):
        self.encoder = json.loads((path / "vocab.json").read_text())
        self.decoder = {v: k for k, v in self.encoder.items()}
        lines = (path / "merges.txt").read_text().splitlines()
        merges = [tuple(line.split()) for i, line in enumerate(lines) if line and not (i == 0 and line.startswith("#version"))]
        self.ranks = {m: r for r, m in enumerate(merges)}
        config = json.loads((path / "tokenizer_config.json").read_text())
        self.added = {v["content"]: int(k) for k, v in config["added_tokens_decoder"].items()}
        self.added_by_id = {i: t for t, i in self.added.items()}
        named = [config[k] for k in ("bos_token", "eos_token", "pad_token", "mask_token", "unk_token") if config.get(k)]
        self.special_ids = {self.added[t] for t in named + config["additional_special_tokens"]}
        self.byte_enc = _bytes_to_unicode()
        self.byte_dec = {c: b for b, c in self.byte_enc.items()}
        self.pattern = regex.compile(QWEN2_PRETOKENIZE)

    def _bpe(self, word: str) -> list[str]:
        parts = list(word)
        while len(parts) > 1:
            pairs = set(itertools.pairwise(parts))
            best = min(pairs, key=lambda p: self.ranks.get(p, float("inf")))
            if best not in self.ranks:
                break
            merged, i = [], 0
            while i < len(parts):
                if i < len(parts) - 1 and (parts[i], parts[i + 1]) == best:
                    merged.append(parts[i] + parts[i + 1])
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        return parts

    def _split_added(self, text: str) -> list[tuple[str, bool]]:
        out, buf, i = [], "", 0
        by_len = sorted(self.added, key=len, reverse=True)
        while i < len(text):
            hit = next((t for t in by_len if text.startswith(t, i)), None)
            if hit is None:
                buf += text[i]
                i += 1
                continue
            if buf:
                out.append((buf, False))
                buf = ""
            out.append((hit, True))
            i += len(hit)
        if buf:
            out.append((buf, False))
        return out

    def encode(self, text: str) -> list[int]:
        ids = []
        for chunk, is_added in self._split_added(unicodedata.normalize("NFC", text)):
            if is_added:
                ids.append(self.added[chunk])
                continue
            for piece in self.pattern.findall(chunk):
                mapped = "".join(self.byte_enc[b] for b in piece.encode("utf-8"))
                ids.extend(self.encoder[tok] for tok in self._bpe(mapped))
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        out, run = [], []

        def flush():
            if run:
                out.append(bytearray(self.byte_dec[c] for c in "".join(run)).decode("utf-8", errors="replace"))
                run.clear()

        for i in ids:
            if i in self.added_by_id:
                if skip_special_tokens and i in self.special_ids:
                    continue
                flush()
                out.append(self.added_by_id[i])
            else:
                run.append(self.decoder[i])
        flush()
        return "".join(out)


TEXTS = [
    "Hello world",
    " Hello  world ",
    "What is 12+345? The answer is 357.\n\nNext:",
    "I'M here, you're THERE, it's done, we'll see, they'd go, I've won",
    "tabs\tand\r\nwindows\r\n\r\nlines   \n  indented",
    "<|im_start|>user\nwhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "x<|mask|><|mask|>y<|endoftext|><|beginoftext|>z<tool_call>{}</tool_call>",
    "<|im_start|<|im_end|>>",  # a broken tag next to a real one
    "Cafe\u0301 na\u00efve \u00e9t\u00e9 \u4f60\u597d\u4e16\u754c \U0001f600\U0001f680",  # a decomposed é (NFC)
    "def f(x):\n    return x  +  1\n\n\n",
    "    leading spaces and trailing    ",
    "",
]


@pytest.fixture(scope="module", params=[512, 152064], ids=["compact-ids", "dream-7b-ids"])
def tokenizers(request, tmp_path_factory):
    path = tmp_path_factory.mktemp(f"dream_tok_{request.param}")
    specials = write_dream_tokenizer(path, request.param)
    return load_dream_tokenizer(path), OracleDreamTokenizer(path), specials


@pytest.mark.parametrize("text", TEXTS)
def test_encode_matches_dream_tokenizer(tokenizers, text):
    tok, oracle, _ = tokenizers
    assert tok(text)["input_ids"] == oracle.encode(text)


@pytest.mark.parametrize("text", TEXTS)
def test_decode_matches_dream_tokenizer(tokenizers, text):
    tok, oracle, _ = tokenizers
    ids = oracle.encode(text)
    for skip in (False, True):
        assert tok.decode(ids, skip_special_tokens=skip) == oracle.decode(ids, skip_special_tokens=skip)
    assert tok.decode(ids) == unicodedata.normalize("NFC", text)


def test_decode_random_ids_matches_including_split_utf8(tokenizers):
    tok, oracle, specials = tokenizers
    rng = random.Random(0)
    ids = sorted(oracle.decoder) [:300] + sorted(specials.values())
    ids = [i for i in ids if i in oracle.decoder or i in oracle.added_by_id]
    for _ in range(50):
        seq = [rng.choice(ids) for _ in range(rng.randint(1, 30))]
        for skip in (False, True):
            assert tok.decode(seq, skip_special_tokens=skip) == oracle.decode(seq, skip_special_tokens=skip), seq


def test_special_ids_and_template(tokenizers):
    tok, _, specials = tokenizers
    assert tok.mask_token_id == specials["<|mask|>"]
    assert tok.eos_token_id == tok.pad_token_id == specials["<|endoftext|>"]
    assert tok.bos_token_id == specials["<|beginoftext|>"]
    if tok.mask_token_id > 1000:
        assert (tok.mask_token_id, tok.eos_token_id, tok.bos_token_id) == (151666, 151643, 151665)
        assert tok.convert_tokens_to_ids("<|im_start|>") == 151644
    assert tok("ab")["input_ids"] == tok.encode("ab")  # no BOS/EOS added, as DreamTokenizer
    text = tok.apply_chat_template([{"role": "user", "content": "2+2?"}], add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                    "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n")
    assert tok.chat_template == DREAM_CHAT_TEMPLATE


def test_hub_file_layout(tmp_path):
    write_dream_tokenizer(tmp_path, 512)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["auto_map"] == {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]}
    assert config["tokenizer_class"] == "DreamTokenizer"
    assert (tmp_path / "merges.txt").read_text().startswith("#version: 0.2\n")
