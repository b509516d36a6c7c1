"""`dllm-eval bench` pieces that run on a CPU: the random-weight rule, the token-match share and
the CPU quick-check workload end to end (the GPU workloads run on the device machine)."""

from __future__ import annotations

import argparse
import json
import math

import pytest
import torch

from dllm_eval.benchmarks import bench
from dllm_eval.errors import UserError
from dllm_eval.models.llada import LLaDAConfig


def test_same_tokens_counts_whole_prompts():
    a = [torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6]), torch.tensor([7, 8, 9])]
    b = [torch.tensor([1, 2, 3]), torch.tensor([4, 5, 0]), torch.tensor([7, 8, 9])]
    assert bench.same_tokens([bench.token_hash(x) for x in a], [bench.token_hash(x) for x in b]) == 2 / 3


def test_random_weights_follow_the_random_checkpoint_rule():
    config = LLaDAConfig(d_model=256, n_heads=4, n_kv_heads=4, n_layers=8, mlp_hidden_size=512, vocab_size=300,
                         embedding_size=300, mask_token_id=299)
    model = bench.random_llada_on_device(config, "cpu", torch.float32, seed=3)
    params = dict(model.named_parameters())
    assert torch.equal(params["model.transformer.blocks.0.attn_norm.weight"], torch.ones(256))
    residual = 0.02 / math.sqrt(2 * 8)
    assert abs(float(params["model.transformer.blocks.3.attn_out.weight"].std()) - residual) < 0.05 * residual
    assert abs(float(params["model.transformer.blocks.3.ff_out.weight"].std()) - residual) < 0.05 * residual
    assert abs(float(params["model.transformer.blocks.3.q_proj.weight"].std()) - 0.02) < 0.001
    assert abs(float(params["model.transformer.ff_out.weight"].std()) - 0.02) < 0.001


def test_cpu_workload_writes_rows_and_targets_and_resumes(tmp_path):
    out = tmp_path / "bench.md"
    args = argparse.Namespace(workload="cpu", modes=None, rows="fast_dllm dual q80@1@16",
                              gsm8k_prompts=0, reference=None, fidelity=False, out=out,
                              experimental="", resume=False)
    assert bench.run(args) == 0
    text = out.read_text()
    assert "| fast_dllm dual q80 | none | 16 | 1 |" in text and "Partial" not in text
    assert "## Targets" in text and "adaptive at batch 8" not in text  # no batch-8 rows were asked for
    first = json.loads(out.with_suffix(".json").read_text())["rows"][0]

    # --resume keeps the measured row (its very numbers) and measures only the new one
    args.rows, args.resume = "fast_dllm dual q80@1@16;fast_dllm dual q80@2@16", True
    assert bench.run(args) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert [(r["batch"], r["prompt"]) for r in rows] == [(1, 16), (2, 16)]
    assert rows[0] == first
    assert "| fast_dllm dual q80 | none | 16 | 2 |" in out.read_text()

    args.experimental = "fused-projections"  # another configuration: its numbers must not be mixed in
    with pytest.raises(UserError, match="--resume"):
        bench.run(args)


def test_an_unknown_experimental_switch_is_refused_in_one_line(tmp_path, monkeypatch):
    from dllm_eval.models import graphs

    monkeypatch.setattr(graphs, "EXPERIMENTAL", dict(graphs.EXPERIMENTAL))
    args = argparse.Namespace(workload="cpu", modes=None, rows=None, gsm8k_prompts=0, reference=None, fidelity=False,
                              out=tmp_path / "x.md", experimental="warp-drive", resume=False)
    with pytest.raises(UserError, match=r"warp-drive.*tensor-window-graphs"):
        bench.run(args)
    assert not (tmp_path / "x.md").exists()


def test_step_targets_read_the_step_as_inductor_runs_it():
    """Hand-made step times: the targets judge compile=inductor's variant (fused elementwise; the
    fused projections only once switched on), not the fastest variant shown."""
    steps = [bench.StepTime("graphs", 1, 9.0, 4.0, 1.0), bench.StepTime("graphs + fused elementwise", 1, 7.9, 4.0, 1.0),
             bench.StepTime("inductor (both)", 1, 7.0, 4.0, 1.0),
             bench.StepTime("graphs + fused elementwise", 32, 28.0, 6.0, 20.0),
             bench.StepTime("inductor (both)", 32, 25.0, 6.0, 20.0)]
    text = "\n".join(bench.targets([], [], None, None, (1.0, 1.0), steps))
    assert "| dual-cache step at batch 1 <= 2.0x the HBM floor | 7.90 ms (graphs + fused elementwise" in text
    assert "1.98x | met |" in text  # 7.9 / 4.0
    assert "| dual-cache step at batch 32 <= 1.3x its compute floor | 28.00 ms" in text
    assert "1.40x | not met |" in text  # 28 / 20
    rendered = bench.render(bench.Measured("m", (1e9, 1e9), matches=[("graphs", "fast_dllm", 1.0, 64),
                                                                      ("inductor", "adaptive", 0.953, 64)], steps=steps),
                            torch.device("cpu"))
    assert "| inductor | adaptive | 95.3% | 64 |" in rendered
    assert "| inductor (both) | 32 | 25.00 | 6.00 | 4.17 | 20.00 | 1.25 |" in rendered


def test_compute_floor_targets_are_judged_at_the_sustained_rate_and_state_the_burst_ratio():
    """floors[1] is the sustained matmul rate; a burst rate 1.25x higher puts the same step 1.25x
    further from its (lower) floor, stated next to the verdict, which the sustained floor decides."""
    steps = [bench.StepTime("graphs + fused elementwise", 32, 26.0, 6.0, 20.0)]
    text = "\n".join(bench.targets([], [], None, None, (1.0, 8e14), steps, burst_rate=1e15))
    assert "26.00 ms (graphs + fused elementwise, timed alone) vs floor 20.00 ms: 1.30x (1.62x at the burst rate) | met |" \
        in text
    assert "burst" not in "\n".join(bench.targets([], [], None, None, (1.0, 8e14), steps))
    rendered = bench.render(bench.Measured("m", (1e12, 8e14), steps=steps, burst_rate=1e15), torch.device("cpu"))
    assert "matmul rate in the model's dtype 800 TFLOP/s sustained" in rendered and "1e+03 TFLOP/s burst" in rendered


def test_matmul_rates_on_cpu_are_one_measurement():
    sustained, burst = bench.matmul_rates(torch.device("cpu"), torch.float32)
    assert sustained == burst > 0


@pytest.mark.parametrize(("name", "kind"), [
    ("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64", "matmul"),
    ("nvjet_hsh_128x256_64x4_2x1_v_bz_coopA_TNN", "matmul"),
    ("pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128, 64, 64, 4>>", "attention"),
    ("fmha_cutlassF_bf16_aligned_64x64_rf_sm80", "attention"),  # memory-efficient attention, not a GEMM
    ("triton_red_fused__to_copy_add_mean_mul_pow_rsqrt_0", "fused elementwise (inductor)"),
    ("void at::native::index_elementwise_kernel<128, 4>", "copy / index"),
    ("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add<float>>", "other elementwise"),
    ("aten::mm", "matmul"),
    ("void at::native::cunn_SoftMaxForward<8, double, double, double, at::native::SoftMaxForwardEpilogue>",
     "selection (softmax, argmax, sort)"),
    ("void at::native::reduce_kernel<512, 1, at::native::ReduceOp<c10::BFloat16, at::native::ArgMaxOps>>",
     "selection (softmax, argmax, sort)"),
])
def test_kernel_names_sort_into_kinds(name, kind):
    assert bench.kernel_kind(name) == kind


def test_kernel_profile_accounts_for_every_kernel_on_cpu():
    """The per-kind lines of each profiled call add up to its "all kernels" line, and the floors
    stated there are the call's own (call_cost of that shape)."""
    from dllm_eval.frontend import load_front_end
    from dllm_eval.models import EMBEDDED_MODEL_DIR

    base = load_front_end(EMBEDDED_MODEL_DIR, device="cpu", compile="none").model
    shares = bench.kernel_profile(base, torch.device("cpu"), (1e11, 1e12), reps=1)
    calls = {k.call for k in shares}
    assert len(calls) == 2
    for call in calls:
        total, *kinds = [k for k in shares if k.call == call]
        assert total.kind == "all kernels"
        assert {k.kind for k in kinds} >= {"matmul", "attention"}
        assert total.ms == pytest.approx(sum(k.ms for k in kinds), rel=1e-6)
        assert "x the floor" in total.top


@pytest.mark.gpu
def test_compile_seconds_is_the_first_steps_extra_time_on_gpu():
    """compile=inductor's one-off cost, as the bench states it: positive (the first step compiles)
    and the fused pieces are compiled afterwards (a second measurement costs about nothing)."""
    from dllm_eval.frontend import load_front_end
    from dllm_eval.models import EMBEDDED_MODEL_DIR, fusion

    fusion._compiled.clear()
    base = load_front_end(EMBEDDED_MODEL_DIR, device="cuda", compile="none").model
    first = bench.compile_seconds(base, torch.device("cuda"))
    assert first > 0.5
    assert fusion._compiled
    assert bench.compile_seconds(base, torch.device("cuda")) < first / 5
