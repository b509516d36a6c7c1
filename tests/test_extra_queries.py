"""The model interface's extra queries (`ExtraQueries`): appended tokens with their own attention
mask, run in the canvas's full forward, on both families.

Oracle: a naive forward of each row over [canvas | extras] (Dream: [canvas | extras | scorers])
with an explicit [T, T] mask and explicit RoPE positions built here (tests/reference_peers_b.py).
"""

from __future__ import annotations

import pytest
import torch

from dllm_eval.models.cache import ExtraQueries
from tests.dream_helpers import D_EOS, peaky_dream
from tests.helpers import EOS, peaky_model
from tests.reference_peers_b import dream_masked_forward, llada_masked_forward

L, E = 12, 5


def _case(seed: int, vocab: int, pad_id: int):
    """A left-padded batch of 2 canvases (row 1 has 3 pads), 5 extras with random masks."""
    gen = torch.Generator().manual_seed(seed)
    canvas = torch.randint(0, 250, (2, L), generator=gen)
    mask = torch.ones(2, L, dtype=torch.long)
    canvas[1, :3], mask[1, :3] = pad_id, 0
    positions = torch.randint(3, L, (2, E), generator=gen)
    sees = torch.rand(2, E, L + E, generator=gen) < 0.6
    sees[:, :, L - 1] = True  # every extra sees at least one real key
    return canvas, mask, ExtraQueries(torch.randint(0, 250, (2, E), generator=gen), positions, sees)


def _rope_positions(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def _allowed(row_valid: torch.Tensor, sees: torch.Tensor, scorers: int = 0) -> torch.Tensor:
    """[T, T] for [canvas L | extras E | scorers]: canvas rows see the real canvas, extras and
    scorers what `sees` says (real keys only); nobody sees a scorer."""
    t = L + E + scorers
    allowed = torch.zeros(t, t, dtype=torch.bool)
    allowed[:L, :L] = row_valid
    valid = torch.cat((row_valid, torch.ones(E, dtype=torch.bool)))
    allowed[L:L + E, :L + E] = sees & valid
    if scorers:
        allowed[L + E:, :L + E] = sees & valid
    return allowed


def test_llada_extras_match_a_naive_forward_with_an_explicit_mask():
    model = peaky_model(seed=3)
    sd = model.state_dict()
    canvas, mask, extra = _case(0, 300, EOS)
    out = model(canvas, attention_mask=mask, extra=extra, logits_positions=slice(4, 10))
    assert out.shape[:2] == (2, 6 + E)
    plain = model(canvas, attention_mask=mask, logits_positions=slice(4, 10))
    torch.testing.assert_close(out[:, :6], plain)  # the canvas never sees the extras
    pos = _rope_positions(mask)
    for b in range(2):
        ids = torch.cat((canvas[b], extra.ids[b]))
        rope = torch.cat((pos[b], pos[b, extra.positions[b]]))
        ref = llada_masked_forward(sd, model.config, ids, rope, _allowed(mask[b].bool(), extra.sees[b]))
        torch.testing.assert_close(out[b, :6], ref[4:10])
        torch.testing.assert_close(out[b, 6:], ref[L:])


def test_dream_extras_are_scored_from_the_state_one_position_earlier():
    """Dream's head scores p from the hidden state at p - 1: extra j's logits come from a query
    carrying the canvas token at positions[j] - 1, at that position, with extra j's mask."""
    model = peaky_dream(seed=3)
    sd = model.state_dict()
    canvas, mask, extra = _case(1, 300, D_EOS)
    out = model(canvas, attention_mask=mask, extra=extra)
    torch.testing.assert_close(out[:, :L], model(canvas, attention_mask=mask))
    pos = _rope_positions(mask)
    for b in range(2):
        prev = extra.positions[b] - 1
        ids = torch.cat((canvas[b], extra.ids[b], canvas[b, prev]))
        rope = torch.cat((pos[b], pos[b, extra.positions[b]], pos[b, prev]))
        raw = dream_masked_forward(sd, model.config, ids, rope, _allowed(mask[b].bool(), extra.sees[b], scorers=E))
        torch.testing.assert_close(out[b, :L], torch.cat((raw[:1], raw[:L - 1])))  # the canvas's own shift
        torch.testing.assert_close(out[b, L:], raw[L + E:])


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_an_extra_copying_a_position_and_seeing_the_canvas_gets_its_logits(family):
    """The alignment contract: the twin of canvas position p, seeing exactly the canvas, is scored
    as p is (on Dream that is the shifted logit); hiding p from it changes the score."""
    model = peaky_model(seed=1) if family == "llada" else peaky_dream(seed=1)
    canvas, mask, _ = _case(2, 300, EOS if family == "llada" else D_EOS)
    positions = torch.tensor([[3, 5, 8, 11, 4]] * 2)
    sees = torch.zeros(2, E, L + E, dtype=torch.bool)
    sees[:, :, :L] = True
    twins = ExtraQueries(canvas.gather(1, positions), positions, sees)
    out = model(canvas, attention_mask=mask, extra=twins)
    torch.testing.assert_close(out[:, L:], out[:, :L].gather(1, positions[..., None].expand(-1, -1, out.shape[-1])))
    blind = sees.clone()
    blind[torch.arange(2)[:, None], torch.arange(E)[None], positions] = False
    hidden = model(canvas, attention_mask=mask, extra=ExtraQueries(twins.ids, positions, blind))
    assert not torch.allclose(hidden[:, L:], out[:, L:])


def test_extras_refuse_a_cache():
    from dllm_eval.models.cache import KVCache

    model = peaky_model(seed=0)
    canvas, mask, extra = _case(0, 300, EOS)
    cache = KVCache.for_model(model, 2, L)
    with pytest.raises(ValueError, match="without a KVCache"):
        model(canvas, attention_mask=mask, cache=cache, write=True, extra=extra)
