"""The decode step served by CUDA graphs (`models.graphs`): the mode switch everywhere, and on a
GPU the same tokens as the eager step for every scheduler, on both embedded models."""

from __future__ import annotations

import pytest
import torch

from dllm_eval.errors import UserError
from dllm_eval.models.graphs import COMPILE_MODES, resolve_compile_mode
from dllm_eval.models.registry import family_of
from tests.helpers import peaky_model


def test_auto_is_eager_on_cpu_and_graphs_on_gpu():
    assert resolve_compile_mode("auto", "cpu") == "none"
    assert resolve_compile_mode(None, "cpu") == "none"
    assert resolve_compile_mode("auto", "cuda") == "graphs"
    assert resolve_compile_mode("inductor", "cuda:0") == "inductor"


def test_auto_picks_inductor_for_a_billion_parameters_on_gpu_only():
    assert resolve_compile_mode("auto", "cuda", parameters=8_000_000_000) == "inductor"
    assert resolve_compile_mode("auto", "cuda", parameters=1_000_000_000) == "inductor"
    assert resolve_compile_mode("auto", "cuda", parameters=999_999_999) == "graphs"
    assert resolve_compile_mode("auto", "cpu", parameters=8_000_000_000) == "none"
    assert resolve_compile_mode("graphs", "cuda", parameters=8_000_000_000) == "graphs"  # an explicit mode stays


@pytest.mark.parametrize("mode", ["graphs", "inductor"])
def test_graph_modes_on_cpu_are_refused_in_one_line(mode):
    with pytest.raises(UserError, match="needs a CUDA device"):
        resolve_compile_mode(mode, "cpu")


def test_unknown_mode_names_the_choices():
    with pytest.raises(UserError) as err:
        resolve_compile_mode("fast", "cpu")
    assert all(m in str(err.value) for m in COMPILE_MODES)


def test_family_is_read_through_a_serving_wrapper():
    class Wrapper:  # what GraphedModel exposes to the registry
        def __init__(self, model):
            self.served_model = model

    assert family_of(Wrapper(peaky_model())).name == "llada"


def test_adapter_refuses_graphs_on_cpu_before_loading(tmp_path):
    from dllm_eval.lm_eval_model import DiffusionLM

    with pytest.raises(UserError, match="compile=graphs needs a CUDA device"):
        DiffusionLM(scheduler="fast_dllm", compile="graphs", device="cpu")


def test_adapter_refuses_a_missing_data_dir_before_loading(monkeypatch, tmp_path):
    """A set-but-missing DLLM_EVAL_DATA_DIR fails at construction in one line, not after a whole
    run's decoding when its record is written (as it once did on the GPU machine)."""
    from dllm_eval.lm_eval_model import DiffusionLM

    monkeypatch.setenv("DLLM_EVAL_DATA_DIR", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="is not a directory"):
        DiffusionLM(scheduler="fast_dllm", device="cpu")


SCHEDULERS = ["fast_dllm", "fast_dllm_prefix", "fast_dllm_nocache", "llada", "adaptive", "tiered_cache", "drs_v2",
              "eb_sampler", "klass", "wino", "prophet"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("tensor_window_graphs", [False, True])
@pytest.mark.parametrize("embedded", ["tiny_llada", "tiny_dream"])
def test_graphs_give_the_eager_tokens_on_the_embedded_models(embedded, tensor_window_graphs, monkeypatch):
    """fp32 on the GPU: replayed graphs run the same kernels as the eager step, so greedy tokens
    and NFE must be identical; the test also checks that graphs were really replayed, and, with
    the tensor-window switch on, that LLaDA's per-row windows were among them."""
    from dllm_eval.frontend import load_front_end
    from dllm_eval.models import graphs

    monkeypatch.setitem(graphs.EXPERIMENTAL, "tensor-window-graphs", tensor_window_graphs)
    from dllm_eval.schedulers import get_scheduler
    from dllm_eval.synth import synth_math

    eager = load_front_end(embedded, device="cuda", dtype=torch.float32, chat=False, compile="none")
    graphed = load_front_end(embedded, device="cuda", dtype=torch.float32, chat=False, compile="graphs")
    docs = synth_math.test_docs()[:16]
    ids, mask = eager.encode([synth_math.doc_to_text(d) for d in docs], 64)
    ids, mask = ids.cuda(), mask.cuda()
    replays = 0
    for name in SCHEDULERS:
        sched = get_scheduler(name, gen_length=64)
        want = sched.generate(eager.model, ids, mask)
        for _ in range(3):  # first decode captures, later ones replay
            got = sched.generate(graphed.model, ids, mask)
            assert torch.equal(got.tokens, want.tokens), name
            assert [t["nfe"] for t in got.traces] == [t["nfe"] for t in want.traces], name
        replays = graphed.model.replays
    assert replays > 0 and graphed.model.captures > 0
    tensor_windows = [k for k in graphed.model.graphs if dict(k)["window"] and dict(k)["window"][0] == "tensor"]
    if embedded == "tiny_llada" and tensor_window_graphs:  # diverging adaptive/drs rows ran as graphs
        assert tensor_windows
    else:  # switched off, or Dream (its tensor-window forward reads shapes on the host): eager
        assert not tensor_windows


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graphs_give_the_eager_tokens_in_bf16():
    """bf16, the dtype users run: a replay runs the eager kernels, so the tokens stay identical."""
    from dllm_eval.frontend import load_front_end
    from dllm_eval.schedulers import get_scheduler
    from dllm_eval.synth import synth_math

    eager = load_front_end("tiny_llada", device="cuda", dtype=torch.bfloat16, chat=False, compile="none")
    graphed = load_front_end("tiny_llada", device="cuda", dtype=torch.bfloat16, chat=False, compile="graphs")
    docs = synth_math.test_docs()[:32]
    ids, mask = eager.encode([synth_math.doc_to_text(d) for d in docs], 64)
    ids, mask = ids.cuda(), mask.cuda()
    for name in ("fast_dllm", "adaptive", "drs_v2"):
        sched = get_scheduler(name, gen_length=64)
        want = sched.generate(eager.model, ids, mask).tokens
        for _ in range(3):
            got = sched.generate(graphed.model, ids, mask).tokens
        assert torch.equal(got, want), name


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_fused_elementwise_pieces_match_the_plain_ones(monkeypatch):
    """compile=inductor swaps RMSNorm, RoPE and the SiLU gate for fused kernels and fuses the
    projections: same values up to fp32 rounding, and the tokens of a decode equal eager mode's
    on (nearly) every row, per-row windows (adaptive) included."""
    from dllm_eval.frontend import load_front_end
    from dllm_eval.models import fusion
    from dllm_eval.models.llada import apply_rope, rms_norm, rope_cos_sin, silu_gate
    from dllm_eval.schedulers import get_scheduler
    from dllm_eval.synth import synth_math

    gen = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(3, 40, 64, device="cuda", generator=gen)
    w = torch.randn(64, device="cuda", generator=gen)
    cos, sin = rope_cos_sin(torch.arange(40, device="cuda").expand(3, 40), 16, 10000.0)
    t = torch.randn(3, 4, 40, 16, device="cuda", generator=gen)
    plain = (rms_norm(x, w, 1e-5), apply_rope(t, cos, sin), silu_gate(x, x.flip(-1)))
    with fusion.enabled():
        fused = (rms_norm(x, w, 1e-5), apply_rope(t, cos, sin), silu_gate(x, x.flip(-1)))
    for a, b in zip(plain, fused):
        assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)

    from dllm_eval.models import graphs

    monkeypatch.setitem(graphs.EXPERIMENTAL, "fused-projections", True)
    monkeypatch.setitem(graphs.EXPERIMENTAL, "tensor-window-graphs", True)
    eager = load_front_end("tiny_llada", device="cuda", dtype=torch.float32, chat=False, compile="none")
    fused_model = load_front_end("tiny_llada", device="cuda", dtype=torch.float32, chat=False, compile="inductor")
    docs = synth_math.test_docs()[:32]
    ids, mask = eager.encode([synth_math.doc_to_text(d) for d in docs], 64)
    for name in ("fast_dllm", "adaptive"):
        sched = get_scheduler(name, gen_length=64)
        want = sched.generate(eager.model, ids.cuda(), mask.cuda()).tokens
        for _ in range(3):
            got = sched.generate(fused_model.model, ids.cuda(), mask.cuda()).tokens
        same = (got == want).all(dim=1).float().mean().item()
        assert same >= 0.9, (name, same)
    assert fused_model.model.model.model.transformer.blocks[0].qkv is not None  # projections fused
