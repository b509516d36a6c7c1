"""`klass` (KLASS): token, per-step and NFE parity with a re-implementation of the authors'
`stable_confident_decode` (tests/reference_peers.py), a hand-worked trace that shows the KL buffer
carrying over between blocks, and batch independence."""

from __future__ import annotations

import pytest
import torch

from dllm_eval.schedulers import get_scheduler
from tests import reference_peers as ref
from tests.fake_model import MASK as FAKE_MASK
from tests.fake_model import ScriptedModel, table_script
from tests.helpers import MASK, assert_batch_equals_rows_alone, peaky_model, random_prompt

PROMPT = (1, 2, 3)
# Context-free confidences, the same in each 8-token block: the distributions never change, so
# every KL after a position's first sighting is 0.
CONFS = [0.95, 0.8, 0.7, 0.5, 0.9, 0.4, 0.65, 0.3]


def fixed_model(gen: int) -> ScriptedModel:
    return ScriptedModel(table_script({PROMPT: [(10 + g, CONFS[g % 8]) for g in range(gen)]}), gen)


def counts(out, row: int = 0) -> list[int]:
    return [s["committed"] for s in out.traces[row]["steps"]]


# Hand-worked, H = 2, tau 0.6, one fallback token per step (steps = gen_length):
# block 0, step 0: KL vs the all-zero start is huge -> top-1 (pos 0, .95); step 1: history
# [huge, 0] -> top-1 (pos 4, .9); step 2: [0, 0], ready = conf > .6: pos 1, 2, 6 -> 3 at once;
# then .5, .4, .3 one per step. Block 1: step 0 has one in-block KL (0: the block was scored at
# block 0's last step) -> guard, top-1 (pos 8); step 1: [0, 0] -> pos 9, 10, 12, 14 at once; then
# three fallbacks. Had the buffer been reset per block, block 1 would repeat block 0's pattern.
HAND = [1, 1, 3, 1, 1, 1, 1, 4, 1, 1, 1]  # block 0: six steps, block 1: five


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_hand_worked_trace_with_the_buffer_carried_across_blocks(cache):
    model = fixed_model(16)
    out = get_scheduler("klass", gen_length=16, block_length=8, cache=cache).generate(model, torch.tensor([PROMPT]))
    assert counts(out) == HAND
    assert out.traces[0]["nfe"] == len(HAND)
    assert out.traces[0]["metrics"]["klass_stable_steps"] == 2
    x, nfe, log = ref.klass_decode(ref.scripted_forward(model), torch.tensor([PROMPT]), 16, 16, 8, FAKE_MASK)
    assert torch.equal(out.tokens, x[:, 3:]) and nfe == len(HAND) and [c for _, c in log] == HAND


def drifting_script(gen: int, block: int = 8):
    """Even positions are steady (fixed token, conf by a table); odd ones are confident (0.97 and
    down, no ties, so no top-k tie order is tested) but their token follows how many masks the model sees in their block, so their KL is large each
    time a neighbour is committed: they are committed only by the fallback."""
    steady = [0.9, 0.7, 0.5, 0.62]

    def script(prompt, g, seen):
        if g % 2 == 0:
            return 10 + g % 40, steady[(g // 2) % 4]
        lo = g // block * block
        return 20 + sum(1 for t in seen[lo:lo + block] if t == FAKE_MASK), 0.97 - 0.001 * g

    return script


@pytest.mark.parametrize(("gen", "block", "history", "kl"), [(16, 8, 2, 0.015), (24, 8, 3, 0.015), (16, 16, 1, 0.5)])
def test_matches_the_authors_loop_on_a_context_dependent_script(gen, block, history, kl):
    model = ScriptedModel(drifting_script(gen, block), gen)
    prompt = torch.tensor([PROMPT])
    x, nfe, log = ref.klass_decode(ref.scripted_forward(model), prompt, gen, gen, block, FAKE_MASK,
                                   kl_threshold=kl, kl_history_length=history)
    out = get_scheduler("klass", gen_length=gen, block_length=block, history_length=history,
                        kl_threshold=kl).generate(model, prompt)
    assert torch.equal(out.tokens, x[:, 3:])
    assert out.traces[0]["nfe"] == nfe and counts(out) == [c for _, c in log]
    stable_steps = sum(1 for ready, _ in log if ready)
    assert out.traces[0]["metrics"].get("klass_stable_steps", 0) == stable_steps > 0
    assert max(c for _, c in log) > 1  # a stable commit of several tokens at once


@pytest.fixture(scope="module")
def model():
    return peaky_model()


GEN = 32
SETTINGS = [
    {"block_length": 16},  # the authors' thresholds: the fallback does nearly all the work here
    {"block_length": 16, "conf_threshold": 0.3, "kl_threshold": 0.5},
    {"block_length": 8, "conf_threshold": 0.2, "kl_threshold": 1.0, "history_length": 1},
    {"block_length": 32, "conf_threshold": 0.3, "kl_threshold": 0.5, "history_length": 3},
]


@pytest.mark.parametrize("params", SETTINGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_tokens_and_nfe_match_the_authors_loop_on_a_random_llada(model, params, seed):
    prompt = random_prompt(10, seed)
    x, nfe, log = ref.klass_decode(ref.naive(model), prompt, GEN, GEN, params["block_length"], MASK,
                                   conf_threshold=params.get("conf_threshold", 0.6),
                                   kl_threshold=params.get("kl_threshold", 0.015),
                                   kl_history_length=params.get("history_length", 2))
    out = get_scheduler("klass", gen_length=GEN, **params).generate(model, prompt)
    assert torch.equal(out.tokens, x[:, 10:])
    assert out.traces[0]["nfe"] == nfe and counts(out) == [c for _, c in log]


def test_the_random_llada_settings_reach_the_stable_branch(model):
    _, nfe, log = ref.klass_decode(ref.naive(model), random_prompt(10, 0), GEN, GEN, 16, MASK,
                                   conf_threshold=0.3, kl_threshold=0.5)
    assert any(ready for ready, _ in log) and nfe < GEN


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
def test_padded_batch_equals_rows_alone(model, cache):
    sched = get_scheduler("klass", gen_length=GEN, block_length=16, cache=cache, conf_threshold=0.3, kl_threshold=0.5)
    together = assert_batch_equals_rows_alone(sched, model)
    assert len({t["nfe"] for t in together.traces}) > 1
    assert any(t["metrics"].get("klass_stable_steps") for t in together.traces)


def test_a_block_left_incomplete_by_the_schedule_is_finished_one_token_per_step():
    """steps < gen_length: stable commits can fall behind a 2-per-step quota; the authors' loop
    would leave masks after steps/num_blocks steps, here the block is finished."""
    model = fixed_model(8)
    out = get_scheduler("klass", gen_length=8, block_length=8, steps=4).generate(model, torch.tensor([PROMPT]))
    # step 0, 1: quota 2 each (0 and 4; then 1 and 2); step 2: ready 6 (.65) only; step 3: quota 2
    # (3, 5); step 4, past the schedule: 7
    assert counts(out) == [2, 2, 1, 2, 1]
