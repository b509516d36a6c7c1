"""DRS (seed 000): allocation arithmetic, proportional vs uniform, v2's early finish and NFE bound.

The scripted fake model (tests/fake_model.py) fixes every token's confidence, so each block's
ambiguity is known in advance and the allocations can be checked to the step.
"""

from __future__ import annotations

import random

import pytest
import torch

from dllm_eval.errors import UserError
from dllm_eval.schedulers import get_scheduler
from dllm_eval.schedulers.drs import largest_remainder  # importing it registers drs, drs_uniform
from tests.fake_model import ScriptedModel, prompt_tensor, table_script

SURE, UNSURE = 0.99, 0.5
PROMPT = (1, 2, 3)


def blocks_table(ambiguous_per_block: list[int], block: int = 8) -> list[tuple[int, float]]:
    """(token, conf) per position: in each block the first k positions are unsure (0.5)."""
    out = []
    for b, k in enumerate(ambiguous_per_block):
        for i in range(block):
            out.append((b * block + i, UNSURE if i < k else SURE))
    return out


def context_script(ambiguous_per_block: list[int], block: int = 8):
    """Unsure positions propose a token that depends on how many masks the model sees in their
    block, so re-predicting them one at a time or all at once gives different tokens."""
    table = blocks_table(ambiguous_per_block, block)

    def script(prompt, g, seen):
        token, conf = table[g]
        if conf == UNSURE:
            lo = g // block * block
            masks = sum(1 for t in seen[lo:lo + block] if t == 63) - 1
            token = 40 + masks
        return token, conf

    return script


def run(name: str, script, gen_length: int = 32, prompts=(PROMPT,), **params):
    model = ScriptedModel(script, gen_length)
    ids, mask = prompt_tensor(*prompts)
    out = get_scheduler(name, gen_length=gen_length, **params).generate(model, ids, mask)
    return out, model


def events(trace: dict, kind: str) -> list[dict]:
    return [e for e in trace["events"] if e["type"] == kind]


# -- allocation arithmetic -------------------------------------------------------------------------


def test_largest_remainder_conserves_the_budget_and_follows_the_ratios():
    assert largest_remainder(12, [1, 3, 0, 2]) == [2, 6, 0, 4]
    assert largest_remainder(5, [3, 1]) == [4, 1]  # 3.75, 1.25 -> the larger remainder wins
    assert largest_remainder(10, [1, 1, 1]) == [4, 3, 3]  # equal remainders: the earlier block
    assert largest_remainder(7, [0, 0]) == [0, 0]
    assert largest_remainder(0, [1, 2]) == [0, 0]
    rng = random.Random(0)
    for _ in range(200):
        weights = [rng.randint(0, 9) for _ in range(rng.randint(1, 8))]
        budget = rng.randint(0, 50)
        shares = largest_remainder(budget, weights)
        assert sum(shares) == (budget if sum(weights) else 0)
        for w, s in zip(weights, shares):
            exact = budget * w / max(1, sum(weights))
            assert abs(s - exact) < 1 and (w > 0 or s == 0)


# -- drs vs drs_uniform --------------------------------------------------------------------------


def test_proportional_and_uniform_allocations_follow_the_ambiguity_ratios_and_outputs_differ():
    script = context_script([1, 3, 0, 2])
    params = dict(block_length=8, t_base=4, refine_budget=12)
    prop, _ = run("drs", script, **params)
    unif, _ = run("drs_uniform", script, **params)
    (pa,), (ua,) = events(prop.traces[0], "allocation"), events(unif.traces[0], "allocation")
    assert pa["ambiguous_tokens"] == ua["ambiguous_tokens"] == [1, 3, 0, 2]
    assert pa["ambiguity"] == [1 / 8, 3 / 8, 0, 2 / 8]
    assert pa["steps"] == [2, 6, 0, 4]  # 12 * (1, 3, 0, 2) / 6
    assert ua["steps"] == [4, 4, 0, 4]  # 12 / 3 ambiguous blocks
    # Every allocated step is spent (rounds repeat while tokens stay below tau), NFE = T_used + budget.
    for out, alloc in ((prop, pa), (unif, ua)):
        refine = {e["block"]: e for e in events(out.traces[0], "refine")}
        assert {b: e["spent"] for b, e in refine.items()} == {b: s for b, s in enumerate(alloc["steps"]) if s}
        assert out.traces[0]["nfe"] == 4 * 4 + 12 == out.traces[0]["metrics"]["t_used"] + 12
    # Block 1 gets 6 steps (two one-at-a-time rounds) vs 4 (a round, then all 3 at once): the
    # context-dependent re-predictions differ there, and only there.
    diff = (prop.tokens != unif.tokens)[0].nonzero().flatten().tolist()
    assert diff and all(8 <= g < 16 for g in diff)


def test_equal_ambiguities_give_equal_allocations_and_identical_outputs():
    script = context_script([2, 0, 2, 2])
    params = dict(block_length=8, t_base=4, refine_budget=9)
    prop, _ = run("drs", script, **params)
    unif, _ = run("drs_uniform", script, **params)
    assert events(prop.traces[0], "allocation")[0]["steps"] == events(unif.traces[0], "allocation")[0]["steps"]
    assert torch.equal(prop.tokens, unif.tokens)


def test_coarse_pass_takes_t_base_steps_per_block_and_t_total_sets_the_budget():
    script = table_script({PROMPT: blocks_table([1, 3, 0, 2])})
    out, model = run("drs", script, block_length=8, t_base=4, t_total=22)
    (alloc,) = events(out.traces[0], "allocation")
    assert alloc["t_used"] == 16 and alloc["budget"] == 6 and sum(alloc["steps"]) == 6
    assert out.traces[0]["nfe"] <= 22
    # Coarse pass: a full forward then 3 dual-cache block steps, per block.
    coarse = model.calls[:16]
    assert [c.attend for c in coarse] == (["window"] + ["cache"] * 3) * 4
    assert all(len(c.window) == 8 for c in coarse if c.attend == "cache")
    # Each refined block starts with a full forward (fresh KV for the whole draft).
    assert sum(1 for c in model.calls[16:] if c.attend == "window") == sum(1 for s in alloc["steps"] if s)


def test_drs_hit_rate_is_the_served_fraction_of_attended_positions():
    script = table_script({PROMPT: blocks_table([1, 3, 0, 2])})
    out, model = run("drs", script, block_length=8, t_base=4, refine_budget=4)
    length = 3 + 32
    served = sum(length - len(c.window) for c in model.calls if c.attend == "cache")
    assert out.traces[0]["metrics"]["cache_hit_rate"] == pytest.approx(served / (length * len(model.calls)))


# -- drs_v2 ----------------------------------------------------------------------------------------


def test_v2_finishes_early_on_an_easy_input():
    script = table_script({PROMPT: [(g % 50, SURE) for g in range(64)]})
    v2, _ = run("drs_v2", script, gen_length=64)
    fast, _ = run("fast_dllm", script, gen_length=64)
    assert v2.traces[0]["nfe"] == 2  # one forward per block, no refinement
    assert v2.traces[0]["nfe"] <= fast.traces[0]["nfe"]
    assert torch.equal(v2.tokens, fast.tokens)
    assert not events(v2.traces[0], "refine")


def test_v2_coarse_pass_is_fast_dllm_and_refines_hardest_first_within_budget():
    amb = [1, 3, 0, 2]
    script = context_script(amb)
    base, _ = run("drs_v2", script, block_length=8, refine_budget=0)
    fast_top, _ = run("fast_dllm", script, block_length=8, block_check="top")
    fast, _ = run("fast_dllm", script, block_length=8)
    assert torch.equal(base.tokens, fast_top.tokens) and base.traces[0]["nfe"] == fast_top.traces[0]["nfe"]
    for budget in (3, 7, 40):
        v2, _ = run("drs_v2", script, block_length=8, refine_budget=budget)
        t = v2.traces[0]
        (plan,) = events(t, "refine_plan")
        assert plan["order"] == [1, 3, 0]  # most ambiguous first; the clean block never
        spent = t["metrics"]["t_refine_spent"]
        assert spent <= budget and t["nfe"] == base.traces[0]["nfe"] + spent
        assert t["nfe"] <= fast.traces[0]["nfe"] + budget
        refined = [e["block"] for e in events(t, "refine")]
        assert refined == plan["order"][:len(refined)]
    # A small budget goes to the hardest block only.
    v2, _ = run("drs_v2", script, block_length=8, refine_budget=3)
    assert [e["block"] for e in events(v2.traces[0], "refine")] == [1]


def test_v2_cap_leaves_incomplete_blocks_that_are_finished_first():
    table = [(g, 0.6) for g in range(16)] + [(g, SURE) for g in range(16, 32)]
    script = table_script({PROMPT: table})
    out, _ = run("drs_v2", script, block_length=8, t_base=2, refine_budget=20)
    (plan,) = events(out.traces[0], "refine_plan")
    assert plan["incomplete"][:2] == [6, 6] and plan["incomplete"][2:] == [0, 0]
    assert plan["order"][:2] == [0, 1]  # still-incomplete blocks first
    assert not (out.tokens == 63).any()
    # With no budget left, an incomplete block is still finished, at one forward over the budget.
    out, _ = run("drs_v2", script, block_length=8, t_base=2, refine_budget=0)
    assert len(events(out.traces[0], "budget_overrun")) == 2
    assert not (out.tokens == 63).any()


# -- batching and parameters ----------------------------------------------------------------------


@pytest.mark.parametrize("name,params", [
    ("drs", dict(block_length=8, t_base=4, refine_budget=12)),
    ("drs_uniform", dict(block_length=8, t_base=4, refine_budget=12)),
    ("drs_v2", dict(block_length=8, refine_budget=7)),
    ("drs_v2", dict(block_length=8, t_base=2, refine_budget=5)),
])
def test_batched_rows_equal_single_row_runs(name, params):
    scripts = {(1, 2, 3): context_script([1, 3, 0, 2]), (4, 5): context_script([0, 2, 4, 1])}

    def script(prompt, g, seen):
        return scripts[prompt](prompt, g, seen)

    batch, _ = run(name, script, prompts=((1, 2, 3), (4, 5)), **params)
    for row, prompt in enumerate(((1, 2, 3), (4, 5))):
        single, _ = run(name, script, prompts=(prompt,), **params)
        assert torch.equal(batch.tokens[row], single.tokens[0])
        assert batch.traces[row]["nfe"] == single.traces[0]["nfe"]
        assert batch.traces[row]["events"] == single.traces[0]["events"]


@pytest.mark.parametrize("name,params,message", [
    ("drs", dict(t_base=0), "t_base"),
    ("drs", dict(t_total=10, refine_budget=3), "not both"),
    ("drs", dict(t_total=8, gen_length=128, block_length=32), "t_total"),
    ("drs", dict(allocation="greedy"), "allocation"),
    ("drs", dict(tau=1.5), "tau"),
    ("drs_v2", dict(threshold=0.0), "threshold"),
    ("drs_v2", dict(refine_budget=-1), "refine_budget"),
    ("drs_v2", dict(t_base=0), "t_base"),
])
def test_bad_parameters_are_user_errors(name, params, message):
    with pytest.raises(UserError, match=message):
        get_scheduler(name, **params)


@pytest.mark.parametrize("name,params", [
    ("drs", dict(t_base=4, refine_budget=6)),
    ("drs_uniform", dict(t_base=4, refine_budget=6)),
    ("drs_v2", dict(refine_budget=6)),
])
def test_real_model_padded_batch_equals_rows_alone(name, params):
    from tests.helpers import peaky_model, random_prompt

    model = peaky_model()
    rows = [random_prompt(n, 20 + i)[0] for i, n in enumerate([11, 4, 8])]
    ids, mask = prompt_tensor(*[r.tolist() for r in rows])
    sched = get_scheduler(name, gen_length=32, block_length=8, **params)
    together = sched.generate(model, ids, attention_mask=mask)
    assert not (together.tokens == model.config.mask_token_id).any()
    for i, row in enumerate(rows):
        alone = sched.generate(model, row[None])
        assert torch.equal(together.tokens[i], alone.tokens[0]), f"row {i}"
        assert together.traces[i]["nfe"] == alone.traces[0]["nfe"]
        assert together.traces[i]["events"] == alone.traces[0]["events"]
