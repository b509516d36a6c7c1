"""`dllm-eval random-checkpoint --arch dream`: the hub's on-disk layout, loadable by the registry."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from dllm_eval import checkpoints
from dllm_eval.errors import UserError
from dllm_eval.models.cache import KVCache
from dllm_eval.models.dream import DREAM_7B_CONFIG, parameter_count
from dllm_eval.models.registry import load_model
from dllm_eval.models.tokenizer import load_tokenizer


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    checkpoints.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_dream_random_checkpoint_layout_and_load(tmp_path):
    out = tmp_path / "ckpt"
    args = parse("--arch", "dream", "--out", str(out), "--d-model", "64", "--layers", "2", "--heads", "4",
                 "--kv-heads", "2", "--mlp", "96", "--vocab", "320", "--seed", "3", "--shard-mb", "0")
    checkpoints.write_random_checkpoint(args)
    names = sorted(p.name for p in out.iterdir())
    shards = [n for n in names if n.endswith(".safetensors")]
    assert len(shards) > 1 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert set(names) - set(shards) == {"config.json", "generation_config.json", "model.safetensors.index.json",
                                        "vocab.json", "merges.txt", "tokenizer_config.json",
                                        "special_tokens_map.json"}
    config = json.loads((out / "config.json").read_text())
    assert set(DREAM_7B_CONFIG) <= set(config)
    assert config["auto_map"] == DREAM_7B_CONFIG["auto_map"] and config["architectures"] == ["DreamModel"]
    assert (config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"],
            config["num_key_value_heads"], config["intermediate_size"], config["vocab_size"]) == (64, 2, 4, 2, 96, 320)
    assert config["torch_dtype"] == "bfloat16"
    tok = load_tokenizer(out)
    assert tok.mask_token_id == config["mask_token_id"] and tok.eos_token_id == config["eos_token_id"]
    assert tok.decode(tok("what is 2+2?")["input_ids"]) == "what is 2+2?"
    model = load_model(out, dtype=torch.float32)
    assert type(model).__name__ == "DreamModel" and model.config.mask_token_id == tok.mask_token_id
    x = torch.tensor([tok("hello there")["input_ids"] + [tok.mask_token_id] * 4])
    cache = KVCache.for_model(model, 1, x.shape[1])
    assert model(x, cache=cache, write=True).shape == (1, x.shape[1], 320)
    # the same seed writes the same weights
    again = tmp_path / "again"
    checkpoints.write_random_checkpoint(parse("--arch", "dream", "--out", str(again), "--d-model", "64", "--layers",
                                              "2", "--heads", "4", "--kv-heads", "2", "--mlp", "96", "--vocab",
                                              "320", "--seed", "3"))
    other = load_model(again, dtype=torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), other.state_dict().values()))


def test_dream_7b_shape_config():
    args = parse("--shape", "dream-7b", "--out", "unused")
    assert checkpoints.resolve_arch(args) == "dream"
    config = checkpoints.make_config(args)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads,
            config.intermediate_size, config.vocab_size) == (3584, 28, 28, 4, 18944, 152064)
    assert parameter_count(config) == 7_615_616_512


def test_kv_heads_for_llada_and_arch_shape_conflict():
    config = checkpoints.make_config(parse("--arch", "llada", "--out", "x", "--heads", "4", "--kv-heads", "2"))
    assert (config.n_heads, config.effective_n_kv_heads) == (4, 2)
    with pytest.raises(UserError, match="dream-7b"):
        checkpoints.resolve_arch(parse("--arch", "llada", "--shape", "dream-7b", "--out", "x"))
    with pytest.raises(UserError, match="kv-heads"):
        checkpoints.make_config(parse("--arch", "dream", "--out", "x", "--heads", "4", "--kv-heads", "3"))


def test_dream_vocab_too_small_is_one_line(tmp_path):
    with pytest.raises(UserError, match="--vocab 100"):
        checkpoints.write_random_checkpoint(parse("--arch", "dream", "--out", str(tmp_path / "c"), "--vocab", "100"))
