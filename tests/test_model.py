"""The LLaDA forward pass and KV cache against independent oracles."""

from __future__ import annotations

import json

import pytest
import torch

from dllm_eval.models.llada import (
    LLADA_8B_CONFIG,
    KVCache,
    LLaDAConfig,
    default_dtype,
    load_llada,
    parameter_count,
    save_llada,
)
from tests.helpers import MASK, peaky_model, random_prompt
from tests.reference_impl import naive_forward


@pytest.fixture(scope="module")
def model():
    return peaky_model()


def test_forward_matches_naive_reimplementation(model):
    x = random_prompt(24, seed=1)
    x[0, 10:18] = MASK
    ours = model(x)
    ref, _ = naive_forward(model.state_dict(), model.config, x)
    assert torch.allclose(ours, ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("start", [1, 7, 16, 23])
def test_prefix_cache_equals_full_forward_on_window(model, start):
    x = random_prompt(24, seed=2)
    x[0, 12:] = MASK
    full = model(x)
    cache = KVCache.for_model(model, 1, 24)
    model(x, cache=cache, write=True)
    window = torch.arange(start, 24)
    out = model(x[:, start:], window=window, cache=cache, attend="prefix")
    assert torch.allclose(out, full[:, start:], atol=1e-12, rtol=0)


def test_dual_cache_first_step_equals_full_forward(model):
    x = random_prompt(32, seed=3)
    x[0, 16:] = MASK
    full = model(x)
    cache = KVCache.for_model(model, 1, 32)
    model(x, cache=cache, write=True)
    for lo, hi in [(16, 24), (24, 32), (3, 5)]:
        out = model(x[:, lo:hi], window=torch.arange(lo, hi), cache=cache, attend="cache", write=True)
        assert torch.allclose(out, full[:, lo:hi], atol=1e-12, rtol=0)


def test_dual_cache_matches_reference_replace_position_semantics(model):
    """After tokens change, the window attends to stale context by design: equal to the
    reference's in-place replace_position computation, not to a fresh full forward."""
    x = random_prompt(32, seed=4)
    x[0, 16:] = MASK
    _, past = naive_forward(model.state_dict(), model.config, x)
    cache = KVCache.for_model(model, 1, 32)
    model(x, cache=cache, write=True)
    x[0, 16:20] = torch.tensor([5, 6, 7, 8])
    replace = torch.zeros_like(x, dtype=torch.bool)
    replace[:, 16:24] = True
    ref, _ = naive_forward(model.state_dict(), model.config, x[:, 16:24], past_key_values=past, replace_position=replace)
    ours = model(x[:, 16:24], window=torch.arange(16, 24), cache=cache, attend="cache", write=True)
    assert torch.allclose(ours, ref, atol=1e-10, rtol=0)
    assert not torch.allclose(ours, model(x)[:, 16:24], atol=1e-6)


def test_non_contiguous_window_refresh_records_staleness(model):
    x = random_prompt(20, seed=5)
    cache = KVCache.for_model(model, 1, 20)
    model(x, cache=cache, write=True)
    assert (cache.stamp == 0).all()
    cache.tick()
    window = torch.tensor([2, 3, 9, 15])
    out = model(x[:, window], window=window, cache=cache, attend="cache", write=True)
    assert torch.allclose(out, model(x)[:, window], atol=1e-12, rtol=0)  # nothing changed: fresh == full
    assert cache.stamp[0, window].tolist() == [1, 1, 1, 1]
    assert (cache.stamp[0, [0, 1, 4, 19]] == 0).all()


def test_left_padded_batch_equals_rows_alone(model):
    a, b = random_prompt(12, seed=6)[0], random_prompt(7, seed=7)[0]
    batch = torch.full((2, 12), 257)
    batch[0], batch[1, 5:] = a, b
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :5] = 0
    out = model(batch, attention_mask=mask)
    assert torch.allclose(out[0], model(a[None])[0], atol=1e-12)
    assert torch.allclose(out[1, 5:], model(b[None])[0], atol=1e-12)


def test_save_load_roundtrip_shards_and_index(tmp_path, model):
    files = save_llada(model, tmp_path, dtype=torch.float64, max_shard_bytes=200_000)
    assert len(files) > 1
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {f.name for f in files}
    config = json.loads((tmp_path / "config.json").read_text())
    assert set(LLADA_8B_CONFIG) <= set(config)
    assert config["model_type"] == "llada"
    loaded = load_llada(tmp_path, dtype=torch.float64)
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_llada_8b_shape_parameter_count():
    config = LLaDAConfig.from_dict(LLADA_8B_CONFIG)
    assert parameter_count(config) == 8_015_581_184  # reference 3.2; bf16 bytes match the hub index


def test_default_dtype_bf16_on_gpu_fp32_on_cpu():
    assert default_dtype("cpu") == torch.float32
    assert default_dtype("cuda") == torch.bfloat16


def test_unsupported_config_is_refused():
    with pytest.raises(ValueError, match="block_type"):
        LLaDAConfig.from_dict({**LLADA_8B_CONFIG, "block_type": "sequential"})


@pytest.mark.gpu
def test_bf16_gpu_forward_close_to_fp32():
    model = peaky_model(dtype=torch.float32).cuda()
    x = random_prompt(64, seed=8).cuda()
    ref = model(x)
    out = model.to(torch.bfloat16)(x).float()
    assert (out.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


@pytest.mark.parametrize("attend", ["cache", "prefix"])
def test_range_window_equals_tensor_window(model, attend):
    """A contiguous window passed as a host `range` (the graph-safe form) gives the same logits
    and the same cache as the same window passed as a device tensor."""
    x = random_prompt(32, seed=9)
    x[0, 16:] = MASK
    caches = []
    outs = []
    for window in (torch.arange(16, 24), range(16, 24)):
        cache = KVCache.for_model(model, 1, 32)
        model(x, cache=cache, write=True)
        cache.tick()
        ids = x[:, 16:24] if attend == "cache" else x[:, 16:]
        win = window if attend == "cache" else (range(16, 32) if isinstance(window, range) else torch.arange(16, 32))
        outs.append(model(ids, window=win, cache=cache, attend=attend, write=attend == "cache"))
        caches.append(cache)
    assert torch.equal(outs[0], outs[1])
    assert all(torch.equal(a, b) for a, b in zip(caches[0].keys, caches[1].keys))
    assert torch.equal(caches[0].stamp, caches[1].stamp)


def test_write_rows_leaves_other_rows_untouched(model):
    """Rows left out of `write_rows` keep their keys, values and stamps; written rows equal a
    batch-of-one write (what lets a whole batch run one call when only some rows need it)."""
    x = torch.cat([random_prompt(24, seed=10), random_prompt(24, seed=11)])
    x[:, 12:] = MASK
    cache = KVCache.for_model(model, 2, 24)
    model(x, cache=cache, write=True)
    before = [k.clone() for k in cache.keys], cache.stamp.clone()
    y = x.clone()
    y[:, 12:16] = torch.tensor([5, 6, 7, 8])
    cache.tick()
    cache.write_rows.copy_(torch.tensor([True, False]))
    out = model(y[:, 12:20], window=range(12, 20), cache=cache, attend="cache", write=True)
    alone = KVCache.for_model(model, 1, 24)
    model(x[:1], cache=alone, write=True)
    alone.tick()
    ref = model(y[:1, 12:20], window=range(12, 20), cache=alone, attend="cache", write=True)
    assert torch.allclose(out[0], ref[0], atol=1e-12, rtol=0)
    assert all(torch.allclose(k[0], a[0], atol=1e-12, rtol=0) for k, a in zip(cache.keys, alone.keys))
    assert all(torch.equal(k[1], b[1]) for k, b in zip(cache.keys, before[0]))
    assert cache.stamp[0, 12:20].tolist() == [1] * 8 and torch.equal(cache.stamp[1], before[1][1])


@pytest.mark.parametrize("attend", ["cache", "prefix"])
def test_a_contiguous_window_stores_through_a_slice_exactly_as_through_its_positions(attend):
    """`span` (the window as a host range) only changes how the KV is stored: the cache and the
    keys a window attends to are those of the index path, rows left out of `write_rows` included."""
    from dllm_eval.models.cache import KVCache

    gen = torch.Generator().manual_seed(0)
    caches = []
    for _ in range(2):
        c = KVCache(1, 3, 2, 12, 4, torch.float32, torch.device("cpu"))
        c.keys[0].copy_(torch.randn(3, 2, 12, 4, generator=torch.Generator().manual_seed(1)))
        c.values[0].copy_(torch.randn(3, 2, 12, 4, generator=torch.Generator().manual_seed(2)))
        c.write_rows.copy_(torch.tensor([True, False, True]))
        caches.append(c)
    k = torch.randn(3, 5, 2, 4, generator=gen).transpose(1, 2)  # strided, as the projections give it
    v = torch.randn(3, 5, 2, 4, generator=gen).transpose(1, 2)
    span = range(4, 9)
    by_index = caches[0].layer_view(0, torch.arange(4, 9), attend, True, 4)(k, v)
    by_slice = caches[1].layer_view(0, torch.arange(4, 9), attend, True, 4, span)(k, v)
    for a, b in zip(by_index, by_slice, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(caches[0].keys[0], caches[1].keys[0]) and torch.equal(caches[0].values[0], caches[1].values[0])
    assert torch.equal(caches[1].keys[0][1], torch.randn(3, 2, 12, 4, generator=torch.Generator().manual_seed(1))[1])
    assert torch.equal(caches[1].keys[0][0, :, 4:9], k[0])
