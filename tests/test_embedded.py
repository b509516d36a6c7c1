"""The shipped embedded model: LLaDA's on-disk format, size limits, loaders, and a real decode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ASSETS = Path(__file__).resolve().parents[1] / "dllm_eval" / "assets" / "tiny_llada"
MIB = 1024**2

pytestmark = pytest.mark.skipif(not (ASSETS / "config.json").is_file(), reason="embedded model not built")


def test_files_are_in_llada_format_and_within_size_limits():
    from safetensors import safe_open

    index = json.loads((ASSETS / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    sizes = [(ASSETS / s).stat().st_size for s in shards]
    assert all(size <= 15 * MIB for size in sizes)
    assert sum(sizes) <= 24 * MIB
    total = 0
    for shard in shards:
        with safe_open(str(ASSETS / shard), framework="pt") as fh:
            for name in fh.keys():  # noqa: SIM118  (safe_open is not a dict)
                tensor = fh.get_tensor(name)
                assert str(tensor.dtype) == "torch.bfloat16", name
                assert index["weight_map"][name] == shard
                total += tensor.numel() * 2
    assert total == index["metadata"]["total_size"]
    config = json.loads((ASSETS / "config.json").read_text())
    assert config["model_type"] == "llada" and config["architectures"] == ["LLaDAModelLM"]
    assert config["torch_dtype"] == "bfloat16"
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "README.md"):
        assert (ASSETS / name).is_file(), name


def test_model_and_tokenizer_load_and_agree():
    from transformers import AutoTokenizer

    from dllm_eval.models.llada import load_llada, parameter_count

    model = load_llada(ASSETS)
    tok = AutoTokenizer.from_pretrained(ASSETS, trust_remote_code=False)  # config.json's auto_map is LLaDA's
    cfg = model.config
    assert parameter_count(cfg) <= 12_500_000
    assert tok.convert_tokens_to_ids("<|mdm_mask|>") == cfg.mask_token_id
    assert tok.eos_token_id == cfg.eos_token_id == cfg.pad_token_id
    assert len(tok) == cfg.padded_vocab
    assert tok.chat_template and tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) \
        .startswith("<|startoftext|><|start_header_id|>user")
    card = (ASSETS / "README.md").read_text()
    for needle in ("Architecture", "synth_math", "synth_code", "train-tiny", "tier"):
        assert needle in card


def test_real_scheduler_solves_easy_problems():
    """A tier-1 problem through `get_scheduler('fast_dllm', ...)`: the trained model really works."""
    import torch

    from dllm_eval.models.llada import load_llada
    from dllm_eval.models.tokenizer import load_tokenizer
    from dllm_eval.schedulers import get_scheduler
    from dllm_eval.synth import evaluate, synth_math

    model = load_llada(ASSETS)
    tok = load_tokenizer(ASSETS)
    docs = [d for d in synth_math.test_docs(n=12) if d["tier"] == 1][:2]
    ids = [tok(synth_math.doc_to_text(d), add_special_tokens=False)["input_ids"] for d in docs]
    width = max(map(len, ids))
    input_ids = torch.full((len(ids), width), tok.eos_token_id)
    mask = torch.zeros((len(ids), width), dtype=torch.long)
    for row, seq in enumerate(ids):
        input_ids[row, width - len(seq):] = torch.tensor(seq)
        mask[row, width - len(seq):] = 1
    sched = get_scheduler("fast_dllm", gen_length=synth_math.GEN_LENGTH, block_length=32, cache="dual",
                          threshold=0.9)
    out = sched.generate(model, input_ids, attention_mask=mask)
    for row, doc in enumerate(docs):
        text = tok.decode(out.tokens[row].tolist(), skip_special_tokens=True)
        assert evaluate.exact_match(evaluate.strict_match(text), doc["answer"]), text
        assert out.traces[row]["nfe"] < synth_math.GEN_LENGTH / 2.5


def test_every_test_prompt_and_answer_fits_what_the_model_was_trained_on():
    """Evaluation prompts longer than training's prompt window (or answers longer than the
    canvas) would be out of distribution; training skips such rows, so none may exist."""
    from dllm_eval import train
    from dllm_eval.models.tokenizer import load_tokenizer
    from dllm_eval.synth import synth_code, synth_math

    tok = load_tokenizer(ASSETS)
    for task in (synth_math, synth_code):
        for doc in task.test_docs():
            for fmt in ("raw", "chat"):
                prompt = train.render_prompt(task.doc_to_text(doc), fmt)
                assert len(tok(prompt, add_special_tokens=False)["input_ids"]) <= train.MAX_PROMPT, prompt
            answer = tok(task.doc_to_answer(doc), add_special_tokens=False)["input_ids"]
            assert len(answer) < task.GEN_LENGTH, doc
            if task is synth_code:  # the generator's tokenizer-free bound really bounds
                assert len(answer) <= synth_code.token_bound(doc["code"]) + 1, doc["code"]
