"""Fast-dLLM's Dream block loop (tests/reference_dream.fastdllm_block_generate), kept as the
oracle for `fast_dllm` on Dream. Here: it runs, and a minimal loop through `DreamModel`'s
cache interface with ``align="fastdllm"`` reproduces its tokens and NFE, which shows the model
interface carries everything that path needs (the scheduler integration comes later).

Finding: in this loop the in-window shift never matters. The window's first slot is the block's
first slot, which the block's full forward has already committed, so its (self-scored) logit is
never used; the loop gives the same tokens with ``align="exact"``. The align choice matters for
schedulers whose cached window starts at a slot that is still masked."""

from __future__ import annotations

import pytest
import torch

from dllm_eval.models.cache import KVCache
from tests.dream_helpers import D_MASK, peaky_dream, prompt
from tests.reference_dream import fastdllm_block_generate


@pytest.fixture(scope="module")
def model():
    return peaky_dream(seed=2)


def threshold_loop_through_model(model, input_ids, *, gen_length, block_length, threshold, dual_cache):
    """Batch 1, greedy, confidence_threshold: the Fast-dLLM schedule on our forward."""
    x = torch.cat((input_ids, torch.full((1, gen_length), D_MASK)), dim=1)
    length, plen = x.shape[1], input_ids.shape[1]
    cache = KVCache.for_model(model, 1, length)
    nfe = 0
    for start in range(plen, length, block_length):
        end = start + block_length
        logits = model(x, cache=cache, write=True)  # full forward: both aligns agree
        nfe += 1
        x[0, start] = torch.softmax(logits[0, start], -1).argmax()  # the block's first slot, unconditionally
        while True:
            window = torch.arange(start, end if dual_cache else length)
            logits = model(x[:, window], window=window, cache=cache, attend="cache" if dual_cache else "prefix",
                           write=dual_cache, align="fastdllm", logits_positions=slice(0, block_length))
            nfe += 1
            masked = x[0, start:end] == D_MASK
            conf, tokens = torch.softmax(logits[0], -1).max(-1)
            conf = torch.where(masked, conf, torch.full_like(conf, float("-inf")))
            n = int(masked.sum())
            values, index = torch.topk(conf, n)
            keep = values >= threshold
            keep[:1] = True
            x[0, start + index[keep]] = tokens[index[keep]]
            if not bool((x[0, start:end] == D_MASK).any()):
                break
    return x[:, plen:], nfe


@pytest.mark.parametrize("dual_cache", [False, True])
@pytest.mark.parametrize("threshold", [0.9, 0.3])
def test_fastdllm_threshold_loop_matches_model_interface(model, dual_cache, threshold):
    x = prompt(8, seed=1)
    ref, ref_nfe = fastdllm_block_generate(model, x.clone(), mask_id=D_MASK, gen_length=16, block_length=8, steps=2,
                                           threshold=threshold, dual_cache=dual_cache)
    ours, nfe = threshold_loop_through_model(model, x, gen_length=16, block_length=8, threshold=threshold,
                                             dual_cache=dual_cache)
    assert ours.tolist() == ref[:, 8:].tolist()
    assert nfe == ref_nfe
    assert not (ref == D_MASK).any()
    assert 2 + 2 <= ref_nfe <= 2 + 2 * 8  # one full forward per block, at least one cached call each


@pytest.mark.parametrize("dual_cache", [False, True])
def test_fastdllm_other_algs_run_the_entropy_rule(model, dual_cache):
    """Any alg other than confidence_threshold is the entropy rule: same tokens for two names."""
    x = prompt(6, seed=3)
    runs = [fastdllm_block_generate(model, x.clone(), mask_id=D_MASK, gen_length=16, block_length=8, steps=8,
                                    alg=alg, dual_cache=dual_cache) for alg in ("entropy", "maskgit_plus")]
    (a, nfe_a), (b, nfe_b) = runs
    assert a.tolist() == b.tolist() and nfe_a == nfe_b
    assert not (a == D_MASK).any()
    # steps_per_block = 4: the block's full forward commits one, then 3 cached steps finish the block
    assert nfe_a == 2 * (1 + 3)
