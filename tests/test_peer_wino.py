"""`wino`: token- and NFE-exact against the authors' loop at batch 1, re-masks that fire, rows that
stay independent in a padded batch, and Dream
(the stock lm-eval entry point: tests/test_peers_b_lm_eval.py).

Oracle: `tests.reference_peers_b.wino_generate`, `decoding_wino` re-written on a naive forward
that takes the official code's explicit [T, T] mask (shadow block appended). The model is a tiny
LLaDA with peaked confidences, so steps draft several tokens and the shadow re-masks some.
"""

from __future__ import annotations

import pytest

from dllm_eval.schedulers import get_scheduler
from tests.dream_helpers import D_EOS, D_MASK, peaky_dream
from tests.dream_helpers import prompt as dream_prompt
from tests.helpers import EOS, MASK, decode_batch_and_rows, peaky_model, random_prompt
from tests.reference_peers_b import wino_generate


@pytest.fixture(scope="module")
def model():
    return peaky_model(seed=1)


def _remasks(trace: dict) -> int:
    return sum(e["positions"] for e in trace["events"] if e["type"] == "wino_remask")


@pytest.mark.parametrize(("gen_length", "block_length", "tau1", "tau2"),
                         [(32, 16, 0.6, 0.9), (32, 32, 0.6, 0.9), (24, 8, 0.4, 0.7)])
@pytest.mark.parametrize("seed", [0, 3])
def test_matches_the_authors_loop_at_batch_1(model, seed, gen_length, block_length, tau1, tau2):
    x = random_prompt(6, seed=seed)
    ref, ref_nfe, ref_remasks = wino_generate(model.state_dict(), model.config, x, gen_length, block_length, MASK,
                                              threshold=tau1, threshold_back=tau2)
    out = get_scheduler("wino", gen_length=gen_length, block_length=block_length, threshold=tau1,
                        threshold_back=tau2).generate(model, x)
    assert out.tokens.tolist() == ref[:, 6:].tolist()
    assert out.traces[0]["nfe"] == ref_nfe
    assert _remasks(out.traces[0]) == ref_remasks > 0, "narrow-out must re-mask something"
    assert max(s["committed"] for s in out.traces[0]["steps"]) > 1, "wide-in must draft several tokens"


def test_a_padded_batch_decodes_like_its_rows_alone(model):
    rows = [random_prompt(n, seed=s)[0].tolist() for n, s in ((9, 11), (4, 12), (6, 13))]
    batch = decode_batch_and_rows("wino", model, rows, EOS, gen_length=32, block_length=16)
    assert len({t["nfe"] for t in batch.traces}) > 1, "rows should finish blocks at different steps"


def test_on_dream_rows_stay_independent_and_the_shadow_remasks():
    rows = [dream_prompt(9, seed=1)[0].tolist(), dream_prompt(5, seed=2)[0].tolist()]
    batch = decode_batch_and_rows("wino", peaky_dream(seed=2), rows, D_EOS, gen_length=24, block_length=8, threshold=0.5)
    assert not (batch.tokens == D_MASK).any()
    assert any(_remasks(t) for t in batch.traces)
