"""Per-row windows ([B, W] positions): rows of one batch recompute different positions in one
call (issue 11, item 2), in both model families, against independent oracles.

- fresh cache: a per-row window's logits equal the full forward at those positions, which is
  itself the naive re-implementation's (tests/reference_impl.py, tests/reference_dream.py);
- stale cache (tokens changed after the cache was filled): each row equals the same row decoded
  alone through the 1-D window path, and a contiguous row equals the reference's in-place
  ``replace_position`` computation (Fast-dLLM's dual cache, by its naive re-implementation);
- the cache: valid entries of writing rows are stored (stamps, tokens, keys), padding entries
  and rows left out of `KVCache.write_rows` keep exactly what they had.
"""

from __future__ import annotations

import pytest
import torch

from dllm_eval.models.cache import KVCache
from dllm_eval.schedulers.blocks import RowStep, per_row_window
from tests import reference_dream, reference_impl
from tests.dream_helpers import D_MASK, peaky_dream
from tests.helpers import MASK, peaky_model, random_prompt

LENGTH, PAD = 24, 5
WINDOWS = [RowStep(tuple(range(16, 24)), 16, 24),  # a block (contiguous)
           RowStep((6, 7, 12, 19, 20), 19, 21),  # a tiered refresh (scattered), in the padded row
           RowStep(None, 16, 24)]  # a full forward


def family(name: str):
    if name == "llada":
        return peaky_model(), MASK, reference_impl.naive_forward, (lambda logits: logits)
    return peaky_dream(), D_MASK, reference_dream.naive_forward, reference_dream.shift


def batch_and_mask(mask_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.cat([random_prompt(LENGTH, 40 + i) for i in range(3)])
    rows[:, 14:] = mask_id
    mask = torch.ones(3, LENGTH, dtype=torch.long)
    mask[1, :PAD] = 0  # row 1 is left-padded
    return rows, mask


def per_row_call(model, canvas, mask, cache, write_rows=None):
    window, valid = per_row_window(WINDOWS, LENGTH, canvas.device)
    cache.tick()
    if write_rows is not None:
        cache.write_rows.copy_(write_rows)
    out = model(canvas.gather(1, window), window=window, window_valid=valid, attention_mask=mask, cache=cache,
                attend="cache", write=True)
    cache.write_rows.fill_(True)
    return out, window, valid


@pytest.mark.parametrize("name", ["llada", "dream"])
def test_fresh_cache_per_row_windows_equal_the_full_forward_and_the_naive_one(name):
    model, mask_id, naive, shift = family(name)
    canvas, mask = batch_and_mask(mask_id)
    full = model(canvas, attention_mask=mask)
    cache = KVCache.for_model(model, 3, LENGTH)
    model(canvas, attention_mask=mask, cache=cache, write=True)
    out, window, valid = per_row_call(model, canvas, mask, cache)
    assert window.shape == (3, LENGTH)
    for b in range(3):
        assert torch.allclose(out[b][valid[b]], full[b, window[b][valid[b]]], atol=1e-10, rtol=0), b
    ref, _ = naive(model.state_dict(), model.config, canvas[:1])  # row 0 has no padding
    assert torch.allclose(out[0][valid[0]], shift(ref)[0, 16:24], atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", ["llada", "dream"])
def test_stale_cache_each_row_equals_itself_alone_and_the_reference_replace(name):
    model, mask_id, naive, shift = family(name)
    canvas, mask = batch_and_mask(mask_id)
    _, past = naive(model.state_dict(), model.config, canvas[:1])
    cache = KVCache.for_model(model, 3, LENGTH)
    model(canvas, attention_mask=mask, cache=cache, write=True)
    alone_caches = []
    for b in range(3):
        c = KVCache.for_model(model, 1, LENGTH)
        model(canvas[b:b + 1], attention_mask=mask[b:b + 1], cache=c, write=True)
        alone_caches.append(c)
    canvas[:, 16:20] = torch.tensor([5, 6, 7, 8])  # commits after the cache was filled
    canvas[1, 6] = 9
    out, window, valid = per_row_call(model, canvas, mask, cache)
    for b, step in enumerate(WINDOWS):
        w = torch.arange(LENGTH) if step.window is None else torch.tensor(step.window)
        alone = model(canvas[b:b + 1, w], window=w, attention_mask=mask[b:b + 1], cache=alone_caches[b],
                      attend="window" if step.window is None else "cache", write=True)
        assert torch.allclose(out[b][valid[b]], alone[0], atol=1e-10, rtol=0), b
        written = window[b][valid[b]]
        assert torch.allclose(cache.keys[0][b][:, written], alone_caches[b].keys[0][0][:, written], atol=1e-10, rtol=0)
    replace = torch.zeros(1, LENGTH, dtype=torch.bool)
    replace[:, 16:24] = True
    ref, _ = naive(model.state_dict(), model.config, canvas[:1, 16:24], past_key_values=past, replace_position=replace)
    exact = out[0][valid[0]]
    if name == "dream":  # the reference shifts inside the window (align="fastdllm"); slot 0 differs by design
        assert torch.allclose(exact[1:], shift(ref)[0, 1:], atol=1e-10, rtol=0)
    else:
        assert torch.allclose(exact, ref[0], atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", ["llada", "dream"])
def test_only_valid_entries_of_writing_rows_are_stored(name):
    model, mask_id, _, _ = family(name)
    canvas, mask = batch_and_mask(mask_id)
    cache = KVCache.for_model(model, 3, LENGTH)
    model(canvas, attention_mask=mask, cache=cache, write=True)
    canvas[:, 16:20] = torch.tensor([5, 6, 7, 8])
    before = [t.clone() for t in (cache.keys[1], cache.values[0], cache.stamp, cache.tokens)]
    _, window, valid = per_row_call(model, canvas, mask, cache, write_rows=torch.tensor([True, False, True]))
    keys, values, stamp, tokens = before
    assert torch.equal(cache.keys[1][1], keys[1]) and torch.equal(cache.stamp[1], stamp[1])  # idle row: untouched
    assert torch.equal(cache.values[0][1], values[1]) and torch.equal(cache.tokens[1], tokens[1])
    for b in (0, 2):
        written, padding = window[b][valid[b]], window[b][~valid[b]]
        assert (cache.stamp[b, written] == cache.clock).all() and torch.equal(cache.stamp[b, padding], stamp[b, padding])
        assert torch.equal(cache.keys[1][b][:, padding], keys[b][:, padding])
        assert not torch.equal(cache.keys[1][b][:, 16:20], keys[b][:, 16:20])
        if name == "dream":
            assert cache.tokens[b, written].tolist() == canvas[b, written].tolist()


def test_per_row_windows_need_the_cache_attend_mode():
    model, mask_id, _, _ = family("llada")
    canvas, _ = batch_and_mask(mask_id)
    cache = KVCache.for_model(model, 3, LENGTH)
    window, valid = per_row_window(WINDOWS, LENGTH, canvas.device)
    with pytest.raises(ValueError, match="per-row window"):
        model(canvas.gather(1, window), window=window, window_valid=valid, cache=cache, attend="prefix")
