"""`dllm-eval bench` pieces that run on a CPU: the random-weight rule, the token-match share and
the CPU quick-check workload end to end (the GPU workloads run on the device machine)."""

from __future__ import annotations

import argparse
import math

import torch

from dllm_eval.benchmarks import bench
from dllm_eval.models.llada import LLaDAConfig


def test_same_tokens_counts_whole_prompts():
    a = [torch.tensor([1, 2, 3]), torch.tensor([4, 5, 6]), torch.tensor([7, 8, 9])]
    b = [torch.tensor([1, 2, 3]), torch.tensor([4, 5, 0]), torch.tensor([7, 8, 9])]
    assert bench.same_tokens(a, b) == 2 / 3


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


def test_cpu_workload_writes_rows_and_targets(tmp_path):
    out = tmp_path / "bench.md"
    args = argparse.Namespace(workload="cpu", modes=None, rows="fast_dllm dual q80@1@16",
                              gsm8k_prompts=0, reference=None, fidelity=False, out=out,
                              experimental="")
    assert bench.run(args) == 0
    text = out.read_text()
    assert "| fast_dllm dual q80 | none | 16 | 1 |" in text
    assert "## Targets" in text and "adaptive at batch 8" not in text  # no batch-8 rows were asked for


def test_an_unknown_experimental_switch_is_refused_in_one_line(tmp_path, monkeypatch):
    import pytest

    from dllm_eval.errors import UserError
    from dllm_eval.models import graphs

    monkeypatch.setattr(graphs, "EXPERIMENTAL", dict(graphs.EXPERIMENTAL))
    args = argparse.Namespace(workload="cpu", modes=None, rows=None, gsm8k_prompts=0, reference=None, fidelity=False,
                              out=tmp_path / "x.md", experimental="warp-drive")
    with pytest.raises(UserError, match=r"warp-drive.*tensor-window-graphs"):
        bench.run(args)
    assert not (tmp_path / "x.md").exists()
