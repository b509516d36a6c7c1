"""Fused projections (compile=inductor): one matmul for q/k/v and one for gate/up, with the
checkpoint's parameters left as views of the fused weights (no second copy)."""

from __future__ import annotations

import pytest
import torch

from dllm_eval.frontend import load_front_end
from dllm_eval.models import fusion
from dllm_eval.models.fusion import fuse_linears


def test_fused_linears_compute_each_layer_and_share_its_storage():
    gen = torch.Generator().manual_seed(0)
    layers = [torch.nn.Linear(8, n, bias=True) for n in (8, 4, 4)]
    for layer in layers:
        torch.nn.init.normal_(layer.weight, generator=gen)
        torch.nn.init.normal_(layer.bias, generator=gen)
    x = torch.randn(3, 5, 8, generator=gen)
    want = [layer(x) for layer in layers]
    weight, bias = fuse_linears(*layers)
    got = torch.nn.functional.linear(x, weight, bias).split((8, 4, 4), dim=-1)
    for a, b in zip(want, got, strict=True):
        torch.testing.assert_close(a, b)
    # each layer's parameters are views into the fused tensors: an in-place load reaches both
    layers[1].weight.data.fill_(2.0)
    assert torch.equal(weight[8:12], torch.full((4, 8), 2.0))
    assert layers[2].bias.data_ptr() == bias[12:].data_ptr()


@pytest.mark.parametrize("embedded", ["tiny_llada", "tiny_dream"])
def test_fused_model_gives_the_plain_logits_and_keeps_its_state_dict(embedded):
    model = load_front_end(embedded, device="cpu", compile="none").model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(0, 200, (2, 24), generator=torch.Generator().manual_seed(1))
    want = model(ids)
    model.fuse_projections()
    separate = []  # calls of the separate q and gate layers
    for module in model.modules():
        for name in ("q_proj", "ff_proj", "gate_proj"):
            if hasattr(module, name):
                getattr(module, name).register_forward_hook(lambda *_: separate.append(1))
    assert torch.equal(model(ids), want)  # outside fusion.enabled() the separate layers run
    assert separate
    separate.clear()
    with fusion.enabled(elementwise=False, projections=True):
        torch.testing.assert_close(model(ids), want, rtol=1e-5, atol=1e-5)
    assert not separate  # ... and inside it the fused matmuls
    after = model.state_dict()
    assert list(after) == list(before)  # the checkpoint's names, in its order
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_a_piece_past_the_recompile_limit_runs_unfused_instead_of_failing(monkeypatch):
    """A long run that meets more shapes than torch.compile allows keeps going with the plain
    function (same math) and says so once, instead of a hard error hours in."""
    from dllm_eval.models.llada import rms_norm

    plain = rms_norm.__wrapped__

    def over_the_limit(*args):
        raise torch._dynamo.exc.FailOnRecompileLimitHit("recompile limit reached")

    monkeypatch.setitem(fusion._compiled, plain, over_the_limit)
    x, w = torch.randn(2, 3, 8), torch.rand(8)
    with fusion.enabled(), pytest.warns(UserWarning, match="rms_norm met more shapes"):
        got = rms_norm(x, w, 1e-5)
    torch.testing.assert_close(got, plain(x, w, 1e-5), rtol=0, atol=0)
    assert fusion._compiled[plain] is plain  # from now on, unfused
