"""Generations are token-identical to LLaDA's and Fast-dLLM's published algorithms (greedy, batch 1),
with Fast-dLLM's June-2025 NFE; batches decode exactly like their rows alone."""

from __future__ import annotations

import pytest
import torch

from dllm_eval.schedulers import get_scheduler
from tests import reference_impl as ref
from tests.helpers import MASK, peaky_model, random_prompt

GEN, BLOCK = 32, 16


@pytest.fixture(scope="module")
def model():
    return peaky_model()


def ours(model, name, prompt, **params):
    out = get_scheduler(name, gen_length=GEN, block_length=BLOCK, **params).generate(model, prompt)
    return out.tokens, out.traces[0]["nfe"], out


@pytest.mark.parametrize("steps", [GEN, GEN // 2])
@pytest.mark.parametrize("seed", [0, 1])
def test_llada_matches_reference(model, steps, seed):
    prompt = random_prompt(10, seed)
    x, nfe = ref.llada_generate(model.state_dict(), model.config, prompt, steps, GEN, BLOCK, MASK)
    tokens, our_nfe, _ = ours(model, "llada", prompt, steps=steps)
    assert torch.equal(tokens, x[:, 10:])
    assert our_nfe == nfe == steps


def test_llada_confidence_eos_eot_inf_as_shipped_matches_reference(model):
    prompt = random_prompt(10, 3)
    eos, eot = 257, 258
    model.config.extra["eot_token_id"] = eot
    try:
        x, _ = ref.llada_generate(model.state_dict(), model.config, prompt, GEN, GEN, BLOCK, MASK,
                                  confidence_eos_eot_inf=True, eos_id=eos, eot_id=eot)
        tokens, _, _ = ours(model, "llada", prompt, confidence_eos_eot_inf="shipped")
    finally:
        model.config.extra.pop("eot_token_id")
    assert torch.equal(tokens, x[:, 10:])


CASES = [
    ("none", {"threshold": 0.9}, ref.fastdllm_generate),
    ("none", {"threshold": None, "steps": GEN}, ref.fastdllm_generate),
    ("none", {"factor": 1.0}, ref.fastdllm_generate),
    ("prefix", {"threshold": 0.9}, ref.fastdllm_prefix_cache),
    ("prefix", {"threshold": None, "steps": GEN // 2}, ref.fastdllm_prefix_cache),
    ("prefix", {"factor": 1.0}, ref.fastdllm_prefix_cache),
    ("dual", {"threshold": 0.9}, ref.fastdllm_dual_cache),
    ("dual", {"threshold": 0.5}, ref.fastdllm_dual_cache),
    ("dual", {"threshold": None, "steps": GEN}, ref.fastdllm_dual_cache),
    ("dual", {"factor": 1.0}, ref.fastdllm_dual_cache),
]


@pytest.mark.parametrize(("cache", "params", "reference"), CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_fast_dllm_matches_reference_tokens_and_june_nfe(model, cache, params, reference, seed):
    prompt = random_prompt(10, seed)
    steps = params.get("steps") or GEN
    x, nfe = reference(model.state_dict(), model.config, prompt, steps, GEN, BLOCK, MASK,
                       threshold=params.get("threshold"), factor=params.get("factor"))
    tokens, our_nfe, _ = ours(model, "fast_dllm", prompt, cache=cache, **params)
    assert torch.equal(tokens, x[:, 10:])
    assert our_nfe == nfe


def test_top_check_saves_the_june_extra_forward_with_same_tokens(model):
    prompt = random_prompt(10, 4)
    june = ours(model, "fast_dllm", prompt, cache="dual", threshold=0.0)
    top = ours(model, "fast_dllm", prompt, cache="dual", threshold=0.0, block_check="top")
    assert torch.equal(june[0], top[0])
    assert (june[1], top[1]) == (2 * GEN // BLOCK, GEN // BLOCK)  # step 0 completes every block


SETTINGS = [
    ("llada", {}),
    ("fast_dllm", {"cache": "none", "threshold": 0.9}),
    ("fast_dllm", {"cache": "prefix", "threshold": 0.7}),
    ("fast_dllm", {"cache": "dual", "threshold": 0.9}),
    ("fast_dllm", {"cache": "dual", "factor": 1.0}),
    ("fast_dllm", {"cache": "dual", "threshold": None}),
]


@pytest.mark.parametrize(("name", "params"), SETTINGS)
def test_padded_batch_equals_rows_one_by_one(model, name, params):
    lengths = [12, 5, 9]
    rows = [random_prompt(n, 10 + i)[0] for i, n in enumerate(lengths)]
    width = max(lengths)
    batch = torch.full((3, width), 257)
    mask = torch.zeros((3, width), dtype=torch.long)
    for i, row in enumerate(rows):
        batch[i, width - len(row):] = row
        mask[i, width - len(row):] = 1
    sched = get_scheduler(name, gen_length=GEN, block_length=BLOCK, **params)
    together = sched.generate(model, batch, attention_mask=mask)
    for i, row in enumerate(rows):
        alone = sched.generate(model, row[None])
        assert torch.equal(together.tokens[i], alone.tokens[0]), f"row {i}"
        assert together.traces[i]["nfe"] == alone.traces[0]["nfe"]
    assert together.batch_nfe >= max(t["nfe"] for t in together.traces)


@pytest.mark.parametrize(("name", "params"), [s for s in SETTINGS if s[1].get("threshold", 0.9) is not None and s[0] != "llada"])
def test_batch_runs_every_row_in_one_call_and_counts_only_rows_that_need_it(model, name, params, monkeypatch):
    """Rows finish blocks at different steps; with whole-batch steps (the GPU policy) the batch
    still runs as one model call per step over every row (no gathered sub-batches: fixed shapes,
    no cache copies), and each row's NFE counts only the calls it needed, so it is less than the
    batch's calls for the rows that finish early. (On a CPU the default carries only the rows that
    need the step; the other batch tests check that path.)"""
    monkeypatch.setattr("dllm_eval.schedulers.blocks.CPU_ROWS", "batch")
    prompts = torch.cat([random_prompt(10, 30 + i) for i in range(4)])
    seen: list[int] = []
    hook = model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[0]))
    try:
        out = get_scheduler(name, gen_length=GEN, block_length=BLOCK, **params).generate(model, prompts)
    finally:
        hook.remove()
    row_nfe = [t["nfe"] for t in out.traces]
    assert len(set(row_nfe)) > 1, "the rows should diverge for this test to mean anything"
    assert len(seen) == out.batch_nfe and set(seen) == {4}
    assert max(row_nfe) <= out.batch_nfe and min(row_nfe) < out.batch_nfe


@pytest.mark.parametrize("name", ["llada", "fast_dllm"])
def test_sampling_is_deterministic_under_a_seed(model, name):
    prompt = random_prompt(8, 5)
    sched = get_scheduler(name, gen_length=GEN, block_length=BLOCK, temperature=1.0)
    runs = [sched.generate(model, prompt, generator=torch.Generator().manual_seed(s)).tokens for s in (7, 7, 8)]
    assert torch.equal(runs[0], runs[1])
    assert not torch.equal(runs[0], runs[2])


def test_cfg_runs_and_changes_the_output(model):
    prompt = random_prompt(10, 6)
    plain = ours(model, "llada", prompt)[0]
    guided, nfe, _ = ours(model, "llada", prompt, cfg_scale=2.0)
    assert nfe == GEN
    assert not torch.equal(plain, guided)


def test_stop_at_eos_fills_after_first_eos_and_saves_forwards():
    model = peaky_model(seed=3)
    model.model.transformer.ff_out.weight[257].mul_(3.0)  # make EOS a frequent proposal
    prompt = random_prompt(10, 7)
    base = ours(model, "fast_dllm", prompt, cache="dual")
    early = ours(model, "fast_dllm", prompt, cache="dual", stop_at_eos=True)
    tokens = early[0][0].tolist()
    first = tokens.index(257)
    assert all(t == 257 for t in tokens[first:])
    assert early[1] < base[1]
    assert any(e["type"] == "eos_fill" for e in early[2].traces[0]["events"])
    assert base[0][0].tolist()[:first] == tokens[:first]  # here the text before EOS is unchanged


def test_trace_records_steps_and_confidences(model):
    _, nfe, out = ours(model, "fast_dllm", random_prompt(10, 8), cache="dual", threshold=0.9)
    trace = out.traces[0]
    assert sum(s["committed"] for s in trace["steps"]) == GEN
    assert all(0.0 <= s["conf_min"] <= s["conf_mean"] <= s["conf_max"] <= 1.0 for s in trace["steps"])
    assert {s["block"] for s in trace["steps"]} == {0, 1}
    assert out.wall_s > 0 and nfe == trace["nfe"]
