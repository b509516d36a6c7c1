"""The `dream` scheduler against a re-implementation of Dream's diffusion_generate loop."""

from __future__ import annotations

import pytest
import torch

from dllm_eval.errors import UserError
from dllm_eval.frontend import left_pad
from dllm_eval.schedulers import get_scheduler
from dllm_eval.schedulers.dream import filter_top_p
from tests.dream_helpers import D_EOS, D_MASK, peaky_dream, prompt
from tests.reference_dream import diffusion_generate, naive_logits_fn


@pytest.fixture(scope="module")
def model():
    return peaky_dream(seed=1)


def run_both(model, x, *, gen_length, steps, seed=0, **kw):
    torch.manual_seed(seed)
    ref, ref_nfe = diffusion_generate(naive_logits_fn(model), x.clone(), mask_id=D_MASK, max_new_tokens=gen_length,
                                      steps=steps, **kw)
    sched = get_scheduler("dream", gen_length=gen_length, steps=steps, **kw)
    out = sched.generate(model, x, generator=torch.Generator().manual_seed(seed))
    return out, ref[:, x.shape[1]:], ref_nfe


@pytest.mark.parametrize("alg", ["origin", "maskgit_plus", "topk_margin", "entropy"])
@pytest.mark.parametrize("steps", [16, 6, 1])
def test_greedy_batch1_token_exact_and_nfe(model, alg, steps):
    x = prompt(9, seed=2)
    out, ref, ref_nfe = run_both(model, x, gen_length=16, steps=steps, alg=alg, seed=5)
    assert out.tokens.tolist() == ref.tolist()
    assert out.batch_nfe == ref_nfe == steps == out.traces[0]["nfe"]
    assert not (out.tokens == D_MASK).any()


def test_steps_equal_gen_length_first_step_commits_nothing(model):
    out, _, _ = run_both(model, prompt(5, seed=3), gen_length=16, steps=16, alg="entropy")
    committed = [s["committed"] for s in out.traces[0]["steps"]]
    assert len(committed) == 15 and committed[-1] == 2 and sum(committed) == 16


@pytest.mark.parametrize("alg", ["maskgit_plus", "entropy", "origin"])
def test_sampling_with_filters_matches_reference_rng_order(model, alg):
    x = prompt(7, seed=4)
    out, ref, _ = run_both(model, x, gen_length=12, steps=5, alg=alg, temperature=0.7, top_p=0.9, top_k=20, seed=11)
    assert out.tokens.tolist() == ref.tolist()


def test_alg_temp_position_sampling_matches_reference(model):
    x = prompt(7, seed=6)
    out, ref, _ = run_both(model, x, gen_length=12, steps=4, alg="topk_margin", alg_temp=0.5, seed=3)
    assert out.tokens.tolist() == ref.tolist()


def test_top_p_keeps_the_token_that_crosses_and_uses_finite_minimum():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    out = filter_top_p(logits, 0.6)  # 0.5 < 0.6, 0.5 + 0.3 crosses: keep both
    floor = torch.finfo(logits.dtype).min
    assert out[0, :2].tolist() == logits[0, :2].tolist()
    assert out[0, 2:].tolist() == [floor, floor]


@pytest.mark.parametrize("count", ["per_row", "batch_mean"])
@pytest.mark.parametrize("alg", ["entropy", "maskgit_plus"])
def test_padded_batch_equals_rows_alone(model, alg, count):
    rows = [prompt(n, seed=20 + n)[0].tolist() for n in (4, 9, 6)]
    ids, mask = left_pad(rows, D_EOS)
    sched = get_scheduler("dream", gen_length=12, steps=5, alg=alg, count=count)
    batch = sched.generate(model, ids, attention_mask=mask)
    for r, row in enumerate(rows):
        alone = sched.generate(model, torch.tensor([row]))
        assert batch.tokens[r].tolist() == alone.tokens[0].tolist()
        assert batch.traces[r]["nfe"] == alone.traces[0]["nfe"] == 5


def test_bad_params_are_one_line_errors():
    with pytest.raises(UserError, match="alg"):
        get_scheduler("dream", alg="confidence_threshold")
    with pytest.raises(UserError, match="no blocks"):
        get_scheduler("dream", gen_length=64, block_length=32)
    with pytest.raises(UserError, match="count"):
        get_scheduler("dream", count="mean")
