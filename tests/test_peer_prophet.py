"""`prophet`: token- and NFE-exact against the authors' loop at batch 1 for every answer window,
early exits that fill later blocks, rows that stay independent in a padded batch (full forwards
and the prefix cache), and Dream
(the stock lm-eval entry point: tests/test_peers_b_lm_eval.py).

Oracle: `tests.reference_peers_b.prophet_generate`, Prophet's `generate` re-written on the naive
LLaDA forward, with the window given as a function of the canvas. The model is a tiny LLaDA with
peaked logits, whose top-2 gaps (about 1-10) clear the thresholds within the run.
"""

from __future__ import annotations

import pytest

from dllm_eval.errors import UserError
from dllm_eval.schedulers import get_scheduler
from tests.dream_helpers import D_EOS, D_MASK, peaky_dream
from tests.dream_helpers import prompt as dream_prompt
from tests.helpers import EOS, MASK, decode_batch_and_rows, peaky_model, random_prompt
from tests.reference_peers_b import fixed_window, prophet_generate

WINDOWS = {
    "next:5": lambda x, plen: (x[0, plen:] == MASK).nonzero().flatten().add(plen).tolist()[:5],
    "next:32": lambda x, plen: (x[0, plen:] == MASK).nonzero().flatten().add(plen).tolist(),
    "all": lambda x, plen: list(range(plen, x.shape[1])),
    "20:5": fixed_window(20, 5),
    "3:4": fixed_window(3, 4),
}


@pytest.fixture(scope="module")
def model():
    return peaky_model(seed=1)


def _exit(trace: dict) -> dict | None:
    return next((e for e in trace["events"] if e["type"] == "prophet_exit"), None)


@pytest.mark.parametrize("window", sorted(WINDOWS))
@pytest.mark.parametrize(("steps", "thresholds"), [(32, (7.5, 5.0, 2.5)), (16, (7.5, 3.5, 2.5)), (32, (3.2, 3.0, 2.8))])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_the_authors_loop_at_batch_1(model, seed, steps, thresholds, window):
    x = random_prompt(6, seed=seed)
    ref, ref_nfe, ref_exit = prophet_generate(model.state_dict(), model.config, x, steps, 32, 8, MASK,
                                              WINDOWS[window], thresholds)
    early, mid, late = thresholds
    out = get_scheduler("prophet", steps=steps, gen_length=32, block_length=8, answer_window=window,
                        early_threshold=early, mid_threshold=mid, late_threshold=late).generate(model, x)
    assert out.tokens.tolist() == ref[:, 6:].tolist()
    assert out.traces[0]["nfe"] == ref_nfe
    assert (_exit(out.traces[0]) or {}).get("step") == ref_exit


def test_an_early_exit_fills_the_later_blocks_in_one_step(model):
    exits = 0
    for seed in range(4):
        out = get_scheduler("prophet", gen_length=32, block_length=8).generate(model, random_prompt(6, seed=seed))
        event = _exit(out.traces[0])
        if event and event["block"] < 3:  # later blocks were still all masked
            exits += 1
            last = out.traces[0]["steps"][-1]
            assert last["committed"] >= 8 and out.traces[0]["nfe"] == event["step"] < 32
    assert exits, "some prompt must exit before the last block"


@pytest.mark.parametrize("cache", ["none", "prefix"])
def test_a_padded_batch_decodes_like_its_rows_alone(model, cache):
    rows = [random_prompt(n, seed=s)[0].tolist() for n, s in ((9, 11), (4, 12), (9, 13))]
    batch = decode_batch_and_rows("prophet", model, rows, EOS, gen_length=32, block_length=8, cache=cache,
                                  mid_threshold=3.5)
    assert all(_exit(t) for t in batch.traces)
    assert len({t["nfe"] for t in batch.traces}) > 1, "rows should exit at different steps"


def test_on_dream_rows_stay_independent_and_exit_early():
    rows = [dream_prompt(9, seed=1)[0].tolist(), dream_prompt(5, seed=2)[0].tolist()]
    batch = decode_batch_and_rows("prophet", peaky_dream(seed=2), rows, D_EOS, gen_length=24, block_length=8,
                                  early_threshold=4.0, mid_threshold=3.0, late_threshold=2.0)
    assert not (batch.tokens == D_MASK).any()
    assert any(_exit(t) for t in batch.traces)


@pytest.mark.parametrize(("kw", "message"), [
    (dict(cache="dual"), "cache must be"),
    (dict(cache="prefix", answer_window="all"), "answer_window=next:k"),
    (dict(answer_window="next:0"), "answer_window must be"),
    (dict(answer_window="last"), "answer_window must be"),
    (dict(steps=7), "steps=7"),
])
def test_bad_settings_fail_early(kw, message):
    with pytest.raises(UserError, match=message):
        get_scheduler("prophet", gen_length=32, block_length=8, **kw)

