"""What CUDA graphs rely on, checked on a CPU: the forwards `models.graphs` may capture never read
a tensor's value on the host (a read stalls the GPU, and inside a capture it is an error).

A `TorchFunctionMode` refuses every host read a forward could make (`.item()`, `.tolist()`,
`bool()`/`int()` of a tensor, `nonzero`, boolean-mask indexing, ...), with the host-side sanity
checks off as on a GPU (`models.cache.host_checks`). Every family's forward with a contiguous window given as a `range` must pass; a family
that declares ``graph_tensor_windows`` (LLaDA) must also pass with per-row [B, W] and scattered
1-D windows.
"""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from dllm_eval.models.cache import KVCache
from dllm_eval.schedulers.blocks import RowStep, per_row_window
from tests.dream_helpers import D_MASK, peaky_dream
from tests.helpers import MASK, peaky_model, random_prompt

LENGTH = 24


READS = frozenset({"item", "tolist", "__bool__", "__int__", "__index__", "__float__", "nonzero", "numpy", "unique",
                   "masked_select", "argwhere"})


class NoHostReads(TorchFunctionMode):
    """Raises on any operation that needs a tensor's value on the host."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in READS:
            raise AssertionError(f"host read in a capturable forward: {name}")
        if name in ("__getitem__", "__setitem__") and len(args) > 1:
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            if any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index):
                raise AssertionError(f"host read in a capturable forward: boolean-mask {name}")
        return func(*args, **(kwargs or {}))


def test_the_guard_catches_host_reads():
    t = torch.tensor([1, 0, 2])
    for read in (lambda: t.tolist(), lambda: bool(t[0]), lambda: int(t[2]), lambda: t.nonzero(), lambda: t[t > 0],
                 lambda: range(5)[t[0]]):
        with pytest.raises(AssertionError, match="host read"), NoHostReads():
            read()
    with NoHostReads():  # device-side indexing is fine
        t.gather(0, torch.tensor([2, 0])), t[torch.tensor([0, 2])], torch.where(t > 0, t, -t)


@pytest.fixture(autouse=True)
def as_on_a_gpu(monkeypatch):
    """Host-side sanity checks run on a CPU only (`models.cache.host_checks`): switch them off, as
    on a GPU, so what is checked is the forward itself."""
    from dllm_eval.models import dream, llada

    for module in (dream, llada):
        if hasattr(module, "host_checks"):
            monkeypatch.setattr(module, "host_checks", lambda device: False)


def family(name: str):
    return (peaky_model(dtype=torch.float32), MASK) if name == "llada" else (peaky_dream(dtype=torch.float32), D_MASK)


def filled(model, mask_id: int):
    """A left-padded batch of 3 with a filled cache, as a block decode has it after its first step."""
    ids = torch.cat([random_prompt(LENGTH, 60 + i) for i in range(3)])
    ids[:, 14:] = mask_id
    mask = torch.ones(3, LENGTH, dtype=torch.long)
    mask[1, :4] = 0
    c = model.config
    cache = KVCache(c.n_layers, 3, c.effective_n_kv_heads, LENGTH, c.head_dim, model.dtype, model.device)
    cache.tick()
    model(ids, attention_mask=mask, cache=cache, write=True)
    return ids, mask, cache


@pytest.mark.parametrize("name", ["llada", "dream"])
def test_range_window_steps_read_nothing_on_the_host(name):
    model, mask_id = family(name)
    ids, mask, cache = filled(model, mask_id)
    with torch.inference_mode(), NoHostReads():
        cache.tick()
        model(ids[:, 16:24], window=range(16, 24), attention_mask=mask, cache=cache, attend="cache", write=True,
              logits_positions=slice(0, 8))
        model(ids[:, 16:], window=range(16, LENGTH), attention_mask=mask, cache=cache, attend="prefix",
              logits_positions=slice(0, 8))
        model(ids, attention_mask=mask, cache=cache, write=True, logits_positions=slice(16, 24))


@pytest.mark.parametrize("name", ["llada", "dream"])
def test_tensor_window_steps_read_nothing_where_the_family_says_so(name):
    model, mask_id = family(name)
    ids, mask, cache = filled(model, mask_id)
    steps = [RowStep(tuple(range(16, 24)), 16, 24), RowStep((6, 7, 12, 19, 20), 19, 21), RowStep(None, 16, 24)]
    window, valid = per_row_window(steps, LENGTH, ids.device)
    at = torch.zeros(3, 4, dtype=torch.long)

    def run():
        cache.tick()
        model(ids.gather(1, window), window=window, window_valid=valid, attention_mask=mask, cache=cache,
              attend="cache", write=True, logits_positions=at)
        scattered = torch.tensor([6, 7, 12, 19, 20])
        model(ids[:, scattered], window=scattered, attention_mask=mask, cache=cache, attend="cache", write=True)

    if getattr(type(model), "graph_tensor_windows", False):
        with torch.inference_mode(), NoHostReads():
            run()
    else:  # a family that reads tensor windows on the host must not claim otherwise (Dream does read)
        with torch.inference_mode(), pytest.raises(AssertionError, match="host read"), NoHostReads():
            run()
