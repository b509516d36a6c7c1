"""Selection rules on hand-made confidence vectors (ties, the factor quirk, the quota schedule)."""

from __future__ import annotations

import math

import pytest
import torch

from dllm_eval.schedulers.base import (
    factor_count,
    num_transfer_tokens,
    propose,
    select_factor,
    select_quota,
    select_threshold,
)
from tests.reference_impl import get_transfer_index_dynamic

NEG = -math.inf


def conf(*values: float) -> torch.Tensor:
    return torch.tensor([values], dtype=torch.float64)


def chosen(mask: torch.Tensor) -> list[int]:
    return mask[0].nonzero().flatten().tolist()


def test_quota_schedule_spreads_the_remainder_first():
    masked = torch.tensor([[True] * 10, [True] * 3 + [False] * 7])
    assert num_transfer_tokens(masked, 4).tolist() == [[3, 3, 2, 2], [1, 1, 1, 0]]
    assert num_transfer_tokens(masked, 1).tolist() == [[10], [3]]


def test_quota_takes_top_k_and_never_a_committed_position():
    c = conf(0.5, 0.9, NEG, 0.1)
    assert chosen(select_quota(c, torch.tensor([2]))) == [0, 1]
    assert chosen(select_quota(c, torch.tensor([4]))) == [0, 1, 3]  # k beyond the masks left


def test_quota_ties_follow_topk():
    c = conf(0.7, 0.7, 0.7, 0.2)
    expected = sorted(torch.topk(c[0], 2).indices.tolist())
    assert chosen(select_quota(c, torch.tensor([2]))) == expected


def test_threshold_keeps_all_above_and_always_the_best():
    masked = torch.tensor([[True, True, True, False]])
    assert chosen(select_threshold(conf(0.95, 0.3, 0.91, NEG), masked, 0.9)) == [0, 2]
    assert chosen(select_threshold(conf(0.5, 0.3, 0.6, NEG), masked, 0.9)) == [2]  # forced argmax
    assert chosen(select_threshold(conf(0.9, 0.3, 0.6, NEG), masked, 0.9)) == [0]  # >= is inclusive
    assert chosen(select_threshold(conf(NEG, NEG, NEG, NEG), torch.zeros(1, 4, dtype=torch.bool), 0.9)) == []


@pytest.mark.parametrize(
    ("values", "factor", "expected"),
    [
        ([0.99, 0.7, 0.6], 1.0, 3),  # quirk: the failing last token is committed anyway
        ([0.99, 0.5, 0.4, 0.3], 1.0, 1),  # 0.5 < 1 - 1/3
        ([0.99, 0.9, 0.8, 0.1, 0.05], 1.0, 3),  # 0.1 < 1 - 1/5
        ([0.2], 1.0, 1),  # a single mask is always committed
        ([1.0, 1.0, 1.0], 1.0, 3),
        ([0.9, 0.8, 0.5, 0.4, 0.3], 2.0, 3),  # f=2: thresholds 0.33, 0.5, 0.6: 0.4 < 0.6 stops at 3
        ([0.9, 0.667, 0.2], 1.0, 3),  # 0.667 >= 0.6667 passes, then the last fails: quirk again
    ],
)
def test_factor_rule_hand_cases(values, factor, expected):
    assert factor_count(values, factor) == expected


def test_factor_selection_matches_reference_on_random_vectors():
    gen = torch.Generator().manual_seed(0)
    for trial in range(200):
        n = 1 + trial % 12
        c = torch.rand((1, n + 3), generator=gen, dtype=torch.float64) ** 0.3
        masked = torch.ones_like(c, dtype=torch.bool)
        masked[0, -3:] = False
        c = torch.where(masked, c, torch.full_like(c, NEG))
        # The reference derives confidences from logits; feed it logits whose softmax max is ours.
        ours = select_factor(c, masked, 1.0)
        ref_count = factor_count(sorted(c[0, :n].tolist(), reverse=True), 1.0)
        assert int(ours.sum()) == ref_count
        assert set(chosen(ours)) == set(torch.topk(c[0], ref_count).indices.tolist())


def test_factor_rule_matches_reference_function_from_logits():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn((1, 10, 30), generator=gen, dtype=torch.float64) * 3
    mask = torch.tensor([[True] * 7 + [False] * 3])
    x = torch.zeros((1, 10), dtype=torch.long)
    _, ref = get_transfer_index_dynamic(logits, mask, x, 1.0)
    proposal = propose(logits, mask)
    assert torch.equal(select_factor(proposal.confidence, mask, 1.0), ref)


def test_confidence_softmax_precision_is_an_option():
    logits = torch.tensor([[[2.0, 1.0, 0.5]]], dtype=torch.bfloat16)
    masked = torch.ones(1, 1, dtype=torch.bool)
    low = propose(logits, masked, softmax_dtype="model").confidence
    high = propose(logits, masked, softmax_dtype="float64").confidence
    assert low.dtype == torch.bfloat16 and high.dtype == torch.float64
    assert abs(float(low) - float(high)) < 1e-2


def test_confidence_eos_eot_inf_shipped_vs_fixed():
    eos, eot = 0, 1
    logits = torch.tensor([[[5.0, 1.0, 0.0], [1.0, 5.0, 0.0]]], dtype=torch.float64)
    masked = torch.ones(1, 2, dtype=torch.bool)
    shipped = propose(logits, masked, eos_id=eos, eot_id=eot, confidence_eos_eot_inf="shipped")
    fixed = propose(logits, masked, eos_id=eos, eot_id=eot, confidence_eos_eot_inf="fixed")
    assert shipped.tokens.tolist() == [[0, 1]]  # proposals are never changed
    assert shipped.confidence[0, 0] > 0.9  # the bug: EOS confidence is not suppressed
    assert shipped.confidence[0, 1] == 0.0  # EOT's is
    assert fixed.confidence[0].tolist() == [0.0, 0.0]


def test_logits_eos_inf_forbids_eos():
    logits = torch.tensor([[[5.0, 1.0, 0.0]]], dtype=torch.float64)
    out = propose(logits, torch.ones(1, 1, dtype=torch.bool), eos_id=0, logits_eos_inf=True)
    assert out.tokens.item() == 1


def test_gumbel_sampling_is_exact_in_distribution():
    logits = torch.log(torch.tensor([[[0.6, 0.3, 0.1]]], dtype=torch.float64)).expand(1, 20000, 3)
    gen = torch.Generator().manual_seed(0)
    tokens = propose(logits, torch.ones(1, 20000, dtype=torch.bool), temperature=1.0, generator=gen).tokens
    freq = torch.bincount(tokens[0], minlength=3).double() / 20000
    assert torch.allclose(freq, torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64), atol=0.015)


# -- the vectorised rules equal the per-row loops they replaced (naive oracles, ties included) -------


def naive_quota(confidence, k):
    keep = torch.zeros(confidence.shape, dtype=torch.bool)
    for row, kk in enumerate(k.tolist()):
        if kk > 0:
            keep[row, torch.topk(confidence[row], kk).indices] = True
    return keep & (confidence != NEG)


def naive_threshold(confidence, masked, threshold):
    keep = torch.zeros(confidence.shape, dtype=torch.bool)
    for row, n in enumerate(masked.sum(dim=1).tolist()):
        if n:
            values, index = torch.topk(confidence[row], n)
            chosen = values >= threshold
            chosen[0] = True
            keep[row, index[chosen]] = True
    return keep


def naive_factor(confidence, masked, factor):
    keep = torch.zeros(confidence.shape, dtype=torch.bool)
    for row, n in enumerate(masked.sum(dim=1).tolist()):
        if n:
            values = torch.sort(confidence[row][masked[row]], descending=True).values.tolist()
            keep[row, torch.topk(confidence[row], factor_count(values, factor)).indices] = True
    return keep


@pytest.mark.parametrize("levels", [4, 1000])  # 4: ties everywhere; 1000: few ties
def test_vectorised_rules_equal_per_row_topk_loops(levels):
    gen = torch.Generator().manual_seed(levels)
    for trial in range(300):
        rows, width = 1 + trial % 7, 1 + trial % 41
        c = (torch.randint(1, levels + 1, (rows, width), generator=gen).double() / levels) ** 0.3
        masked = torch.rand((rows, width), generator=gen) < 0.7
        masked[0] = trial % 5 != 0  # sometimes a row with nothing masked, sometimes all masked
        c = torch.where(masked, c, NEG)
        k = torch.randint(0, width + 1, (rows,), generator=gen)
        assert torch.equal(select_quota(c, k), naive_quota(c, k)), trial
        for tau in (0.5, 0.9, 1.0):
            assert torch.equal(select_threshold(c, masked, tau), naive_threshold(c, masked, tau)), (trial, tau)
        for factor in (0.5, 1.0, 2.0):
            assert torch.equal(select_factor(c, masked, factor), naive_factor(c, masked, factor)), (trial, factor)
