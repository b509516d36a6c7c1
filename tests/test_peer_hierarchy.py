"""`hierarchy` (dInfer HierarchyDecoder): the rule on hand-made confidences, token and NFE parity
with a re-implementation of dInfer's loop (tests/reference_peers.py), and batch independence."""

from __future__ import annotations

import math

import pytest
import torch

from dllm_eval.errors import UserError
from dllm_eval.schedulers import get_scheduler
from dllm_eval.schedulers.base import Proposal
from tests import reference_peers as ref
from tests.fake_model import MASK as FAKE_MASK
from tests.fake_model import ScriptedModel, table_script
from tests.helpers import MASK, assert_batch_equals_rows_alone, peaky_model, random_prompt

NEG = -math.inf
GEN, BLOCK = 32, 16


@pytest.fixture(scope="module")
def model():
    return peaky_model()


def chosen(name: str, confidence: list[float], **params) -> list[int]:
    conf = torch.tensor([confidence], dtype=torch.float64)
    masked = conf != NEG
    sched = get_scheduler(name, gen_length=8, block_length=8, **params)
    return sched.select(Proposal(torch.zeros_like(masked, dtype=torch.long), conf), masked, 0)[0].nonzero().flatten().tolist()


def test_each_masked_run_commits_its_best_token_above_tau_low():
    # runs [0, 1], [3], [5, 6, 7]; bests 0.5 (> 0.4), 0.35 (not), 0.6 (also the top-1)
    assert chosen("hierarchy", [0.5, 0.45, NEG, 0.35, NEG, 0.2, 0.6, 0.55]) == [0, 6]


def test_ties_within_a_run_commit_all_tied_and_the_top1_is_the_first_maximum():
    assert chosen("hierarchy", [0.6, NEG, 0.5, 0.5]) == [0, 2, 3]
    assert chosen("hierarchy", [0.3, 0.3, NEG, 0.3]) == [0]  # nothing clears tau_low: first argmax only


def test_tau_high_adds_every_token_above_it_and_the_top1_is_always_committed():
    conf = [0.85, 0.82, 0.1, NEG, 0.05]
    assert chosen("hierarchy", conf) == [0]  # run [0..2]: best 0.85; run [4]: 0.05 fails tau_low
    assert chosen("hierarchy_80_50", conf) == [0, 1]  # 0.82 > 0.8; 0.05 < 0.5
    assert chosen("hierarchy_90_70", [0.1, 0.2, NEG]) == [1]  # the top-1 despite tau_low 0.7


# Hand-computed trace of one 8-token block with fixed confidences, tau_low 0.4, no tau_high:
# step 0: one run -> pos 3 (0.95); step 1: runs [0-2] [4-7] -> 0, 5; step 2: runs [1-2] [4] [6-7]
# -> 1 (0.45), 7 (0.55), 4 fails; step 3: nothing clears tau_low -> top-1 4; step 4: 2; step 5: 6.
CONFS = [0.5, 0.45, 0.3, 0.95, 0.35, 0.6, 0.2, 0.55]
PROMPT = (1, 2, 3)


def scripted(gen: int) -> ScriptedModel:
    table = [(10 + g, CONFS[g % 8]) for g in range(gen)]
    return ScriptedModel(table_script({PROMPT: table}), gen)


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_run_commits_fire_and_match_the_dinfer_loop_on_a_scripted_model(cache):
    model = scripted(16)
    prompt = torch.tensor([PROMPT])
    out = get_scheduler("hierarchy", gen_length=16, block_length=8, cache=cache).generate(model, prompt)
    counts = [s["committed"] for s in out.traces[0]["steps"]]
    assert counts == [1, 2, 2, 1, 1, 1] * 2
    x, nfe, ref_counts = ref.dinfer_hierarchy(ref.scripted_forward(model), prompt, 16, 8, FAKE_MASK)
    assert ref_counts == counts and out.traces[0]["nfe"] == nfe == 12
    assert torch.equal(out.tokens, x[:, 3:])


SETTINGS = [
    {},
    {"threshold": 0.8, "low_threshold": 0.5},
    {"threshold": 0.9, "low_threshold": 0.7},
    {"threshold": 0.5, "low_threshold": 0.2},
    {"low_threshold": None},
]


@pytest.mark.parametrize("params", SETTINGS)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tokens_and_nfe_match_dinfer_on_a_random_llada(model, params, seed):
    prompt = random_prompt(10, seed)
    x, nfe, counts = ref.dinfer_hierarchy(ref.naive(model), prompt, GEN, BLOCK, MASK,
                                          threshold=params.get("threshold"), low_threshold=params.get("low_threshold", 0.4))
    out = get_scheduler("hierarchy", gen_length=GEN, block_length=BLOCK, **params).generate(model, prompt)
    assert torch.equal(out.tokens, x[:, 10:])
    assert out.traces[0]["nfe"] == nfe
    assert [s["committed"] for s in out.traces[0]["steps"]] == counts


def test_the_random_llada_cases_are_not_all_top1(model):
    """On the peaky random model the parallel branch fires too, so the parity above means something."""
    _, nfe, counts = ref.dinfer_hierarchy(ref.naive(model), random_prompt(10, 0), GEN, BLOCK, MASK, low_threshold=0.2)
    assert max(counts) > 1 and nfe < GEN


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_padded_batch_equals_rows_alone(model, cache):
    sched = get_scheduler("hierarchy", gen_length=GEN, block_length=BLOCK, cache=cache, low_threshold=0.2)
    together = assert_batch_equals_rows_alone(sched, model)
    assert len({t["nfe"] for t in together.traces}) > 1  # the rows finish at different steps


@pytest.mark.parametrize("name", ["hierarchy", "eb_sampler", "klass"])
def test_a_bad_cache_mode_fails_before_decoding(name):
    with pytest.raises(UserError, match="cache must be one of"):
        get_scheduler(name, cache="triple")
