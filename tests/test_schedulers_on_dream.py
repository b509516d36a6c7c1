"""Every scheduler on Dream: Fast-dLLM's Dream path token- and NFE-exact, the rest unchanged.

Oracle: `tests.reference_dream.fastdllm_block_generate`, a re-implementation of Fast-dLLM's
`dream/model/generation_utils_block.py` on a naive forward. The model is a tiny random Dream
with peaked confidences (`peaky_dream`), so thresholds commit several tokens per step.
"""

from __future__ import annotations

import pytest
import torch

from dllm_eval.frontend import left_pad
from dllm_eval.schedulers import SCHEDULERS, get_scheduler
from tests.dream_helpers import D_EOS, D_MASK, peaky_dream, prompt
from tests.reference_dream import fastdllm_block_generate


@pytest.fixture(scope="module")
def model():
    return peaky_dream(seed=2)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
@pytest.mark.parametrize("threshold", [0.9, 0.5, 0.2])
@pytest.mark.parametrize("seed", [1, 4])
def test_fast_dllm_on_dream_matches_fastdllm_dream_code(model, cache, threshold, seed):
    x = prompt(7, seed=seed)
    ref, ref_nfe = fastdllm_block_generate(model, x.clone(), mask_id=D_MASK, gen_length=24, block_length=8, steps=3,
                                           threshold=threshold, dual_cache=cache == "dual")
    out = get_scheduler("fast_dllm", cache=cache, threshold=threshold, gen_length=24, block_length=8).generate(model, x)
    assert out.tokens.tolist() == ref[:, 7:].tolist()
    assert out.traces[0]["nfe"] == ref_nfe
    multi = [s["committed"] for s in out.traces[0]["steps"] if s["committed"] > 1]
    if threshold <= 0.5:
        assert multi, "a low threshold must commit several tokens in some step"


def test_fast_dllm_dream_rules_commit_the_first_slot_on_the_full_forward(model):
    """The Dream path's full forward commits the block's first slot even when another slot is
    more confident; the LLaDA rules commit the most confident one instead."""
    x = prompt(7, seed=1)
    dream = get_scheduler("fast_dllm", threshold=1.0, gen_length=16, block_length=8).generate(model, x)
    first_steps = [s for s in dream.traces[0]["steps"]][:1]
    assert first_steps[0]["committed"] == 1
    llada_rules = get_scheduler("fast_dllm", threshold=1.0, rules="llada", gen_length=16, block_length=8).generate(model, x)
    assert dream.tokens.tolist() != llada_rules.tokens.tolist() or dream.traces[0]["nfe"] != llada_rules.traces[0]["nfe"]


def test_align_exact_and_fastdllm_agree_on_the_dream_path_but_differ_for_a_masked_window_start(model):
    """Fast-dLLM's in-window shift never matters on its own Dream path (the window's first slot
    was committed by the full forward), but it does for rules whose window starts at a mask."""
    x = prompt(7, seed=4)
    kw = dict(threshold=0.5, gen_length=16, block_length=8)
    a = get_scheduler("fast_dllm", align="fastdllm", **kw).generate(model, x)
    b = get_scheduler("fast_dllm", align="exact", **kw).generate(model, x)
    assert a.tokens.tolist() == b.tokens.tolist()
    differ = 0
    for seed in range(6):
        x = prompt(7, seed=seed)
        c = get_scheduler("fast_dllm", rules="llada", align="fastdllm", **kw).generate(model, x)
        d = get_scheduler("fast_dllm", rules="llada", align="exact", **kw).generate(model, x)
        differ += c.tokens.tolist() != d.tokens.tolist()
    assert differ, "with LLaDA's rules the window starts at a mask, where the in-window shift misaligns"
    auto = get_scheduler("fast_dllm", rules="llada", **kw).generate(model, x)
    assert auto.tokens.tolist() == d.tokens.tolist()  # auto = exact outside the Dream path


def test_dream_path_refuses_quota_mode(model):
    from dllm_eval.errors import UserError

    with pytest.raises(UserError, match="threshold only"):
        get_scheduler("fast_dllm", threshold=None, gen_length=16, block_length=8).generate(model, prompt(5, seed=0))


PARAMS = {"llada": dict(steps=16), "dream": dict(count="per_row", block_length=None),
          "adaptive": dict(base_block_size=8, min_block_size=4), "adaptive_block": dict(base_block_size=8, min_block_size=4),
          "adaptive_threshold": dict(base_block_size=8, min_block_size=4), "tiered_cache": dict(base_block_size=8, min_block_size=4),
          "adaptive_static": dict(base_block_size=8, min_block_size=4)}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_every_scheduler_runs_on_dream_and_a_padded_batch_equals_its_rows(model, name):
    rows = [prompt(9, seed=11)[0].tolist(), prompt(5, seed=12)[0].tolist()]
    kw = {"gen_length": 16, "block_length": 8, **PARAMS.get(name, {})}
    kw = {k: v for k, v in kw.items() if v is not None or k != "block_length"}
    ids, mask = left_pad(rows, D_EOS)
    batch = get_scheduler(name, **kw).generate(model, ids, attention_mask=mask)
    for r, row in enumerate(rows):
        alone = get_scheduler(name, **kw).generate(model, torch.tensor([row]))
        assert batch.tokens[r].tolist() == alone.tokens[0].tolist(), name
        assert batch.traces[r]["nfe"] == alone.traces[0]["nfe"], name
    assert not (batch.tokens == D_MASK).any()
