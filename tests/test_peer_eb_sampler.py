"""`eb_sampler` (EB-Sampler, arXiv 2505.24857). There is no official code, so the oracle is
hand-computed: entropies written out below, and the commit count of every step worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from dllm_eval.schedulers import get_scheduler
from dllm_eval.schedulers.eb_sampler import entropy_bounded
from tests.fake_model import ScriptedModel, entropy_of, table_script
from tests.helpers import assert_batch_equals_rows_alone, peaky_model

NEG = -math.inf


def bounded(conf: list[list[float]], ent: list[list[float]], gamma: float) -> list[list[int]]:
    c = torch.tensor(conf, dtype=torch.float64)
    keep = entropy_bounded(c, c != NEG, torch.tensor(ent, dtype=torch.float64), gamma)
    return [row.nonzero().flatten().tolist() for row in keep]


# Confidence order: pos 1 (H 1/16), pos 0 (1/8), pos 3 (1/4), pos 2 (1); pos 4 is not masked.
# Prefix bounds (sum - running max): k=1: 0; k=2: 3/16 - 1/8 = 1/16; k=3: 7/16 - 1/4 = 3/16;
# k=4: 23/16 - 1 = 7/16. (Binary fractions, so the comparisons at the boundary are exact.)
CONF = [[0.9, 0.95, 0.5, 0.8, NEG]]
ENT = [[0.125, 0.0625, 1.0, 0.25, 0.0]]


@pytest.mark.parametrize(("gamma", "expected"), [
    (0.0, [1]), (0.0625, [0, 1]), (0.1, [0, 1]), (0.1875, [0, 1, 3]), (0.4, [0, 1, 3]),
    (0.4375, [0, 1, 2, 3]), (math.inf, [0, 1, 2, 3]),
])
def test_longest_confidence_ordered_prefix_within_the_entropy_budget(gamma, expected):
    assert bounded(CONF, ENT, gamma) == [expected]


def test_the_max_is_the_running_max_of_the_prefix_not_its_last_element():
    # order: H 0.5, 1/16, 1/16. Paper: k=3 -> 0.625 - 0.5 = 0.125 <= 0.125, all three.
    # The d2Cache copy at batch 1 drops the last element instead: k=2 -> 0.5 > 0.125, one token.
    assert bounded([[0.9, 0.8, 0.7]], [[0.5, 0.0625, 0.0625]], 0.125) == [[0, 1, 2]]


def test_rows_are_decided_alone():
    conf = [[0.9, 0.95, 0.5, 0.8, NEG], [0.9, 0.95, 0.5, 0.8, NEG], [NEG] * 5]
    ent = [ENT[0], [2.0, 0.0625, 1.0, 0.25, 0.0], [0.0] * 5]
    # row 1: order H 1/16, 2 -> k=2 bound 1/16; k=3: 2.3125 - 2 = 0.3125 > 0.2 -> [0, 1];
    # a row with no masks commits nothing
    assert bounded(conf, ent, 0.2) == [[0, 1, 3], [0, 1], []]


# Scripted positions: (confidence, spread) -> entropy in nats, by hand:
# A (0.999, 1): -.999 ln .999 - .001 ln .001 = 0.0079073
# B (0.99, 1):  -.99 ln .99 - .01 ln .01     = 0.0560015
# C (0.9, 1):   -.9 ln .9 - .1 ln .1         = 0.3250830
# D (0.6, 2):   -.6 ln .6 - 2 (.2 ln .2)     = 0.9502705
KINDS = {"A": (0.999, 1, 0.0079073), "B": (0.99, 1, 0.0560015), "C": (0.9, 1, 0.3250830), "D": (0.6, 2, 0.9502705)}
LAYOUT = "BACADBAC"
PROMPT = (1, 2, 3)

# Whole sequence, gamma 0.1. Step 0, order A1 A3 A6 B0 B5 C2 C7 D4; bounds 0, .0079, .0158,
# .0237 (.0797 - .0560), .0797, then .4608 - .3251 = .1357 > .1: 5 commits. Then C2 C7 D4 are
# one per step (second term .3251 > .1): [5, 1, 1, 1].
# gamma 0.01: step 0 A1 A3 (.0158 > .01 at k=3); step 1 A6 B0 (.0079, then .0639); then B5, C2,
# C7, D4 singly (.0560 > .01): [2, 2, 1, 1, 1, 1].
# Blocks of 4, gamma 0.1: block BACA: A1 A3 B0 C2, bounds 0, .0079, .0158, .3969 - .3251 = .0718:
# all 4. Block DBAC: A6 B5 C7 D4, bounds 0, .0079, .0639, .389 > .1: 3, then D: [4, 3, 1].
CASES = [
    ({"gamma": 0.1}, [5, 1, 1, 1]),
    ({"gamma": 0.01}, [2, 2, 1, 1, 1, 1]),
    ({"gamma": 0.0}, [1] * 8),
    ({"gamma": math.inf}, [8]),
    ({"gamma": 0.1, "semi_ar": True, "block_length": 4}, [4, 3, 1]),
]


def scripted() -> ScriptedModel:
    table = [(10 + g, KINDS[k][0], KINDS[k][1]) for g, k in enumerate(LAYOUT)]
    return ScriptedModel(table_script({PROMPT: table}), len(LAYOUT))


def test_hand_entropies_are_what_the_scripted_model_produces():
    for conf, spread, h in KINDS.values():
        assert entropy_of(conf, spread) == pytest.approx(h, abs=1e-7)


@pytest.mark.parametrize("cache", ["none", "prefix", "dual"])
@pytest.mark.parametrize(("params", "counts"), CASES)
def test_hand_computed_commits_per_step_and_nfe(params, counts, cache):
    out = get_scheduler("eb_sampler", gen_length=8, cache=cache, **params).generate(scripted(), torch.tensor([PROMPT]))
    assert [s["committed"] for s in out.traces[0]["steps"]] == counts
    assert out.traces[0]["nfe"] == len(counts)
    assert out.tokens[0].tolist() == list(range(10, 18))


def test_the_registered_variant_is_the_papers_other_row():
    out = get_scheduler("eb_sampler_g0.01", gen_length=8).generate(scripted(), torch.tensor([PROMPT]))
    assert [s["committed"] for s in out.traces[0]["steps"]] == [2, 2, 1, 1, 1, 1]


@pytest.mark.parametrize(("cache", "params"), [("none", {}), ("dual", {}), ("prefix", {"semi_ar": True, "block_length": 16})])
def test_padded_batch_equals_rows_alone_on_a_random_llada(cache, params):
    sched = get_scheduler("eb_sampler", gen_length=32, cache=cache, gamma=0.5, **params)
    together = assert_batch_equals_rows_alone(sched, peaky_model())
    assert max(s["committed"] for s in together.traces[0]["steps"]) > 1  # the entropy bound let >1 through
    assert len({t["nfe"] for t in together.traces}) > 1
