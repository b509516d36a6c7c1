"""One model call per step for the whole batch, however its rows diverge (issue 11, item 2).

Adaptive and DRS rows pick their own blocks, windows and phases. A batch must not split into row
groups: every step is one call over every row (per-row windows where rows differ), so the batch
takes exactly as many calls as its slowest row's NFE, while each row still decodes as it would
alone (its tokens, NFE and events; the batch-equality tests in test_adaptive/test_drs check that
on the same scripts). Checked on the scripted fake model, which logs every call.
"""

from __future__ import annotations

import random

import pytest
import torch

from dllm_eval.models.cache import KVCache
from dllm_eval.schedulers import get_scheduler
from dllm_eval.schedulers.base import DecodeState
from dllm_eval.schedulers.blocks import BlockRunner, RowStep, per_row_window
from tests.fake_model import ScriptedModel, prompt_tensor
from tests.test_drs import context_script

PROMPTS = ((1, 2, 3), (4, 5), (6, 7, 8, 9))


@pytest.fixture(autouse=True)
def whole_batch_steps(monkeypatch):
    """These tests are about the GPU policy: every row in every call, also on this CPU."""
    monkeypatch.setattr("dllm_eval.schedulers.blocks.CPU_ROWS", "batch")


@pytest.mark.parametrize("name", sorted(__import__("dllm_eval.schedulers", fromlist=["SCHEDULERS"]).SCHEDULERS))
def test_every_scheduler_decodes_rows_as_alone_with_whole_batch_steps(name):
    """The GPU path (whole-batch calls, idle rows' writes masked) on the CPU: a padded batch
    equals its rows decoded alone for every registered scheduler (the default CPU path, which
    carries only the rows that need a step, is what the other batch-equality tests check)."""
    from tests.helpers import assert_batch_equals_rows_alone, peaky_model

    assert_batch_equals_rows_alone(get_scheduler(name, gen_length=32, **_block(name)), peaky_model())


def _block(name: str) -> dict:
    from dllm_eval.schedulers import param_fields

    return {"block_length": 16} if param_fields(name).get("block_length") is not None else {}


def adaptive_script():
    rng = random.Random(2)
    tables = {PROMPTS[0]: [(g % 50, 0.99) for g in range(96)],
              PROMPTS[1]: [(g % 50, rng.choice([0.99, 0.6, 0.3, 0.2])) for g in range(96)],
              PROMPTS[2]: [(g % 50, rng.choice([0.99, 0.99, 0.5])) for g in range(96)]}

    def script(prompt, g, seen):  # context-dependent, so a wrong cache shows up in the tokens
        token, conf = tables[prompt][g]
        return (token + (1 if g and seen[g - 1] == 63 else 0)) % 60, conf

    return script


def drs_script():
    scripts = {PROMPTS[0]: context_script([1, 3, 0, 2]), PROMPTS[1]: context_script([0, 2, 4, 1]),
               PROMPTS[2]: context_script([4, 0, 0, 3])}
    return lambda prompt, g, seen: scripts[prompt](prompt, g, seen)


CASES = [
    ("adaptive", adaptive_script, 96, {}),
    ("tiered_cache", adaptive_script, 96, {}),
    ("adaptive_threshold", adaptive_script, 96, {}),
    ("drs", drs_script, 32, dict(block_length=8, t_base=4, refine_budget=12)),
    ("drs_v2", drs_script, 32, dict(block_length=8, refine_budget=7)),
    ("drs_v2", drs_script, 32, dict(block_length=8, t_base=2, refine_budget=5)),
]


@pytest.mark.parametrize("name,script,gen_length,params", CASES)
def test_calls_equal_the_largest_row_nfe_when_rows_diverge(name, script, gen_length, params):
    model = ScriptedModel(script(), gen_length)
    ids, mask = prompt_tensor(*PROMPTS)
    out = get_scheduler(name, gen_length=gen_length, **params).generate(model, ids, mask)
    nfe = [t["nfe"] for t in out.traces]
    plans = {tuple(s["block"] for s in t["steps"]) for t in out.traces}  # the block of each commit
    assert len(set(nfe)) > 1 or len(plans) > 1, "the rows should diverge for this test to mean anything"
    assert all(call.batch == len(PROMPTS) for call in model.calls)  # every row in every call
    assert len(model.calls) == out.batch_nfe == max(nfe)
    for row, prompt in enumerate(PROMPTS):  # and each row is still what it is alone
        alone = get_scheduler(name, gen_length=gen_length, **params).generate(
            ScriptedModel(script(), gen_length), *prompt_tensor(prompt))
        assert torch.equal(out.tokens[row], alone.tokens[0]) and nfe[row] == alone.traces[0]["nfe"]


@pytest.mark.parametrize("name,script,gen_length,params", CASES)
def test_calls_equal_the_nfe_of_identical_rows(name, script, gen_length, params):
    model = ScriptedModel(script(), gen_length)
    ids, mask = prompt_tensor(PROMPTS[1], PROMPTS[1], PROMPTS[1])
    out = get_scheduler(name, gen_length=gen_length, **params).generate(model, ids, mask)
    assert len(model.calls) == out.batch_nfe == out.traces[0]["nfe"] == out.traces[2]["nfe"]


def test_per_row_window_pads_with_distinct_positions_outside_each_window():
    steps = [RowStep((4, 5, 9), 4, 6), None, RowStep(None, 8, 10), RowStep((2, 3), 2, 4)]
    window, valid = per_row_window(steps, 10, torch.device("cpu"))
    assert window.shape == (4, 10)  # the full forward's window is the whole canvas
    assert window[0].tolist() == list(range(10)) and valid[0].tolist() == [p in (4, 5, 9) for p in range(10)]
    assert not valid[1].any() and valid[2].all()
    short = per_row_window([RowStep((4, 5, 9), 4, 6), RowStep((2, 3), 2, 4)], 10, torch.device("cpu"))
    assert short[0].tolist() == [[4, 5, 9], [0, 2, 3]]
    assert short[1].tolist() == [[True, True, True], [False, True, True]]


def test_an_idle_row_keeps_its_cache_exactly():
    """A row that takes no step in a call runs along, but its keys, values, stamps and tokens
    are exactly as before the call (`KVCache.write_rows`)."""
    model = ScriptedModel(adaptive_script(), 96)
    ids, mask = prompt_tensor(*PROMPTS)
    state = DecodeState.start(model, ids, mask, 96)
    runner = BlockRunner(model, state, "dual")
    plen = state.prompt_len
    runner.forward_each([RowStep(None, plen, plen + 8)] * 3)  # everyone's full forward
    state.canvas[:, plen:plen + 4] = 7  # the canvas moves on
    cache: KVCache = runner.cache
    before = [t.clone() for t in (cache.keys[0], cache.stamp)]
    runner.forward_each([RowStep(tuple(range(plen, plen + 8)), plen, plen + 8), None,
                         RowStep(tuple(range(plen + 8, plen + 16)), plen + 8, plen + 16)])
    assert torch.equal(cache.keys[0][1], before[0][1]) and torch.equal(cache.stamp[1], before[1][1])
    assert not torch.equal(cache.keys[0][0], before[0][0]) and not torch.equal(cache.stamp[2], before[1][2])
    assert state.trace.row_nfe.tolist() == [2, 1, 2] and state.trace.batch_nfe == 2


@pytest.mark.parametrize("name,params", [("adaptive", {}), ("tiered_cache", {}),
                                         ("drs", dict(block_length=8, t_base=4, refine_budget=6)),
                                         ("drs_v2", dict(block_length=8, refine_budget=6))])
def test_real_model_padded_batch_takes_one_call_per_step_of_its_slowest_row(name, params):
    from tests.helpers import peaky_model, random_prompt

    model = peaky_model()
    rows = [random_prompt(n, 20 + i)[0].tolist() for i, n in enumerate([11, 4, 8, 6])]
    ids, mask = prompt_tensor(*rows)
    seen: list[int] = []
    hook = model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    try:
        out = get_scheduler(name, gen_length=48 if name in ("adaptive", "tiered_cache") else 32,
                            **params).generate(model, ids, attention_mask=mask)
    finally:
        hook.remove()
    nfe = [t["nfe"] for t in out.traces]
    assert set(seen) == {4} and len(seen) == out.batch_nfe == max(nfe)
