"""The Dream forward pass, its logit shift and its KV cache against independent oracles."""

from __future__ import annotations

import json

import pytest
import torch

from dllm_eval.errors import UserError
from dllm_eval.models.cache import KVCache
from dllm_eval.models.dream import (
    DREAM_7B_CONFIG,
    DreamConfig,
    load_dream,
    parameter_count,
    save_dream,
)
from dllm_eval.models.registry import FAMILIES, load_model
from tests.dream_helpers import D_MASK, peaky_dream, prompt
from tests.reference_dream import naive_forward, shift


@pytest.fixture(scope="module")
def model():
    return peaky_dream()


def test_forward_matches_naive_qwen2_with_shift(model):
    x = prompt(24, seed=1)
    x[0, 10:18] = D_MASK
    ref, _ = naive_forward(model.state_dict(), model.config, x)
    for align in ("exact", "fastdllm"):  # a full forward: both conventions are the shift
        assert torch.allclose(model(x, align=align), shift(ref), atol=1e-10, rtol=0)


def test_shift_scores_position_i_from_hidden_state_i_minus_1(model):
    """Changing the token at p changes the *unshifted* logit at p only through attention; under
    the shift, the logit at p+1 is the one computed from p's hidden state. A model whose last
    layer is switched off (zero attention/MLP output) makes that exact: logits[:, i] depends
    only on token i-1."""
    m = peaky_dream(seed=3)
    for layer in m.model.layers:
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    x = prompt(10, seed=2)
    base = m(x)
    y = x.clone()
    y[0, 4] = (x[0, 4] + 1) % 250
    changed = (m(y) - base).abs().amax(-1)[0]
    assert changed.nonzero().flatten().tolist() == [5]
    # position 0 is scored by its own output
    z = x.clone()
    z[0, 0] = (x[0, 0] + 1) % 250
    assert (m(z) - base).abs().amax(-1)[0].nonzero().flatten().tolist() == [0, 1]


@pytest.mark.parametrize("start", [1, 7, 16, 23])
def test_prefix_cache_exact_equals_full_forward(model, start):
    x = prompt(24, seed=2)
    x[0, 12:] = D_MASK
    full = model(x)
    cache = KVCache.for_model(model, 1, 24)
    model(x, cache=cache, write=True)
    out = model(x[:, start:], window=torch.arange(start, 24), cache=cache, attend="prefix")
    assert torch.allclose(out, full[:, start:], atol=1e-10, rtol=0)


def test_prefix_cache_fastdllm_matches_reference_pre_rope_cache(model):
    """align='fastdllm' equals Fast-dLLM's path: pre-RoPE cache truncated at the window start,
    RoPE re-applied to every key, the shift applied inside the window."""
    x = prompt(24, seed=3)
    x[0, 12:] = D_MASK
    _, past = naive_forward(model.state_dict(), model.config, x)
    start = 14
    x[0, 12:14] = torch.tensor([5, 6])  # the prefix changed since the cache was filled: stale by design
    past = [(k[:, :start], v[:, :start]) for k, v in past]
    ref, _ = naive_forward(model.state_dict(), model.config, x[:, start:], past_key_values=past)
    cache = KVCache.for_model(model, 1, 24)
    stale = x.clone()
    stale[0, 12:14] = D_MASK
    model(stale, cache=cache, write=True)
    out = model(x[:, start:], window=torch.arange(start, 24), cache=cache, attend="prefix", align="fastdllm")
    assert torch.allclose(out, shift(ref), atol=1e-10, rtol=0)
    # the window's first slot scores itself: the unshifted own-position logit
    assert torch.allclose(out[:, 0], ref[:, 0], atol=1e-10, rtol=0)


def test_dual_cache_exact_and_fastdllm(model):
    x = prompt(32, seed=4)
    x[0, 16:] = D_MASK
    full = model(x)
    sd, cfg = model.state_dict(), model.config
    raw_full, _ = naive_forward(sd, cfg, x)
    cache = KVCache.for_model(model, 1, 32)
    model(x, cache=cache, write=True)
    for lo, hi in [(16, 24), (24, 32), (3, 5)]:
        exact = model(x[:, lo:hi], window=torch.arange(lo, hi), cache=cache, attend="cache", write=True)
        assert torch.allclose(exact, full[:, lo:hi], atol=1e-10, rtol=0)
        fast = model(x[:, lo:hi], window=torch.arange(lo, hi), cache=cache, attend="cache", align="fastdllm")
        assert torch.allclose(fast[:, 1:], full[:, lo + 1:hi], atol=1e-10, rtol=0)
        assert torch.allclose(fast[:, 0], raw_full[:, lo], atol=1e-10, rtol=0)  # own position, unshifted


def test_dual_cache_matches_reference_in_place_replace_after_tokens_change(model):
    """After tokens in the block change, the block attends to stale context elsewhere: equal to
    Fast-dLLM's in-place replace_position computation, not to a fresh full forward."""
    x = prompt(32, seed=5)
    x[0, 16:] = D_MASK
    sd, cfg = model.state_dict(), model.config
    _, past = naive_forward(sd, cfg, x)
    cache = KVCache.for_model(model, 1, 32)
    model(x, cache=cache, write=True)
    x[0, 16:20] = torch.tensor([5, 6, 7, 8])
    replace = torch.zeros_like(x, dtype=torch.bool)
    replace[:, 16:24] = True
    ref, _ = naive_forward(sd, cfg, x[:, 16:24], past_key_values=past, replace_position=replace)
    ours = model(x[:, 16:24], window=torch.arange(16, 24), cache=cache, attend="cache", write=True, align="fastdllm")
    assert torch.allclose(ours, shift(ref), atol=1e-10, rtol=0)
    assert not torch.allclose(ours, model(x, align="fastdllm")[:, 16:24], atol=1e-6)
    # the read-only extra query of align='exact' leaves position 15's cache entry untouched
    before = [k[:, :, 15].clone() for k in cache.keys]
    stamp = cache.stamp[0, 15].item()
    model(x[:, 16:24], window=torch.arange(16, 24), cache=cache, attend="cache", write=True)
    assert all(torch.equal(b, k[:, :, 15]) for b, k in zip(before, cache.keys))
    assert cache.stamp[0, 15].item() == stamp


def test_non_contiguous_window_exact(model):
    x = prompt(20, seed=6)
    full = model(x)
    cache = KVCache.for_model(model, 1, 20)
    model(x, cache=cache, write=True)
    window = torch.tensor([0, 2, 3, 9, 15])
    out = model(x[:, window], window=window, cache=cache, attend="cache", write=True)
    assert torch.allclose(out, full[:, window], atol=1e-10, rtol=0)
    assert cache.tokens[0].tolist() == x[0].tolist()


def test_exact_window_needs_the_token_before_it(model):
    x = prompt(12, seed=7)
    cache = KVCache.for_model(model, 1, 12)
    with pytest.raises(ValueError, match="never written"):
        model(x[:, 4:], window=torch.arange(4, 12), cache=cache, attend="cache")


def test_logits_positions_slice(model):
    x = prompt(16, seed=8)
    assert torch.allclose(model(x, logits_positions=slice(5, 9)), model(x)[:, 5:9], atol=1e-12, rtol=0)


def test_left_padded_batch_equals_rows_alone(model):
    a, b = prompt(12, seed=9)[0], prompt(7, seed=10)[0]
    batch = torch.full((2, 12), 257)
    batch[0], batch[1, 5:] = a, b
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :5] = 0
    out = model(batch, attention_mask=mask)
    assert torch.allclose(out[0], model(a[None])[0], atol=1e-10)
    assert torch.allclose(out[1, 6:], model(b[None])[0, 1:], atol=1e-10)  # slot 5 is scored from a pad


def test_left_padded_batch_with_cache_equals_rows_alone(model):
    a, b = prompt(16, seed=11)[0], prompt(11, seed=12)[0]
    batch = torch.full((2, 16), 257)
    batch[0], batch[1, 5:] = a, b
    mask = torch.ones(2, 16, dtype=torch.long)
    mask[1, :5] = 0
    cache = KVCache.for_model(model, 2, 16)
    model(batch, attention_mask=mask, cache=cache, write=True)
    out = model(batch[:, 10:], window=torch.arange(10, 16), attention_mask=mask, cache=cache, attend="prefix")
    assert torch.allclose(out[0], model(a[None])[0, 10:], atol=1e-10)
    assert torch.allclose(out[1], model(b[None])[0, 5:], atol=1e-10)


def test_save_load_roundtrip_layout_and_registry(tmp_path, model):
    files = save_dream(model, tmp_path, dtype=torch.float64, max_shard_bytes=200_000)
    assert len(files) > 1
    assert [f.name for f in files] == [f"model-{i:05d}-of-{len(files):05d}.safetensors" for i in range(1, len(files) + 1)]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {f.name for f in files}
    assert "model.layers.0.self_attn.q_proj.bias" in index["weight_map"]
    assert "model.layers.0.self_attn.o_proj.bias" not in index["weight_map"]
    assert {"lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"} <= set(index["weight_map"])
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(DREAM_7B_CONFIG) <= set(config)
    assert config["model_type"] == "Dream" and config["architectures"] == ["DreamModel"]
    assert config["auto_map"] == {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"}
    assert (config["mask_token_id"], config["eos_token_id"], config["num_key_value_heads"]) == (D_MASK, 257, 2)
    gen = json.loads((tmp_path / "generation_config.json").read_text())
    assert gen["mask_token_id"] == D_MASK and gen["alg"] == "origin"
    for loaded in (load_dream(tmp_path, dtype=torch.float64), load_model(tmp_path, dtype=torch.float64)):
        assert type(loaded).__name__ == "DreamModel"
        for name, tensor in model.state_dict().items():
            assert torch.equal(loaded.state_dict()[name], tensor), name
        assert loaded.config.mask_token_id == D_MASK


def test_registry_dispatches_llada_and_refuses_unknown(tmp_path):
    from dllm_eval.models.llada import save_llada
    from tests.helpers import peaky_model

    save_llada(peaky_model(), tmp_path / "llada", dtype=torch.float32)
    assert type(load_model(tmp_path / "llada")).__name__ == "LLaDAModelLM"
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    with pytest.raises(UserError) as err:
        load_model(tmp_path / "other")
    message = str(err.value)
    assert "\n" not in message and "'qwen2'" in message and "'llada'" in message and "'Dream'" in message
    assert set(FAMILIES) == {"llada", "dream"}


def test_config_family_independent_names():
    c = DreamConfig.from_dict(DREAM_7B_CONFIG)
    assert (c.n_layers, c.effective_n_kv_heads, c.head_dim, c.n_heads) == (28, 4, 128, 28)
    assert (c.mask_token_id, c.eos_token_id, c.pad_token_id, c.bos_token_id) == (151666, 151643, 151643, 151643)
    assert c.rope_theta == 1e6
    assert parameter_count(c) == 7_615_616_512  # Qwen2.5-7B's count: embedding + untied head + 28 layers


def test_unsupported_config_is_refused():
    with pytest.raises(UserError, match="tie_word_embeddings"):
        DreamConfig.from_dict({**DREAM_7B_CONFIG, "tie_word_embeddings": True})
    with pytest.raises(UserError, match="rope_scaling"):
        DreamConfig.from_dict({**DREAM_7B_CONFIG, "rope_scaling": {"type": "yarn", "factor": 4.0}})


@pytest.mark.gpu
def test_bf16_gpu_forward_is_as_close_to_fp32_as_the_reference_code_in_bf16():
    """bf16 fidelity: our bf16 logits are no further from the fp32 forward (relative L2, top-1
    agreement) than the published code's computation in bf16 (the naive oracle run on bf16
    weights), on the same weights. A random peaked model is chaotic in bf16, so an absolute bar
    would test the weights, not the code."""
    from tests.reference_dream import naive_forward, shift

    m = peaky_dream(dtype=torch.float32).cuda()
    x = prompt(96, seed=8, batch=4).cuda()  # 384 positions: top-1 agreement resolves to 0.3%
    ref = m(x).double()
    ours = m.to(torch.bfloat16)(x).double()
    sd = {k: v.to(torch.bfloat16) for k, v in m.state_dict().items()}
    theirs = shift(naive_forward(sd, m.config, x)[0]).double()

    def rel(a):
        return float((a - ref).norm() / ref.norm())

    def agree(a):
        return float((a.argmax(-1) == ref.argmax(-1)).double().mean())

    print(f"bf16 vs fp32: ours rel L2 {rel(ours):.4f} top-1 {agree(ours):.3f}; "
          f"reference code rel L2 {rel(theirs):.4f} top-1 {agree(theirs):.3f}")
    assert rel(ours) <= 1.1 * rel(theirs) + 1e-3
    assert agree(ours) >= agree(theirs) - 0.03
