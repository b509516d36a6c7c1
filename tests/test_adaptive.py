"""Adaptive scheduling (seed 001): block sizing, entropy-driven tau, the tiered cache, ablations.

Mechanisms are checked on the scripted fake model (tests/fake_model.py), whose confidences and
entropies are set per position and whose cache reads are logged with their stamps; the tiered
cache's exactness is checked on the real LLaDA model in float64.
"""

from __future__ import annotations

import random

import pytest
import torch

from dllm_eval.errors import UserError
from dllm_eval.models.llada import KVCache, LLaDAConfig, build_model
from dllm_eval.schedulers import get_scheduler
from dllm_eval.schedulers.adaptive import tiered_window  # importing it registers adaptive and its variants
from tests.fake_model import ScriptedModel, entropy_of, prompt_tensor, table_script

PROMPT = (1, 2, 3)
VARIANTS = ("adaptive", "adaptive_block", "adaptive_threshold", "tiered_cache", "adaptive_static")


def run(name: str, script, gen_length: int, prompts=(PROMPT,), **params):
    model = ScriptedModel(script, gen_length)
    ids, mask = prompt_tensor(*prompts)
    out = get_scheduler(name, gen_length=gen_length, **params).generate(model, ids, mask)
    return out, model


def const(conf: float, gen_length: int, spread: int | None = None):
    row = [(g % 50, conf) if spread is None else (g % 50, conf, spread) for g in range(gen_length)]
    return table_script({PROMPT: row})


def events(trace: dict, kind: str) -> list[dict]:
    return [e for e in trace["events"] if e["type"] == kind]


# -- dynamic block size ----------------------------------------------------------------------------


def test_block_size_grows_under_high_confidence():
    out, _ = run("adaptive_block", const(0.99, 128), 128)
    m = out.traces[0]["metrics"]
    assert m["block_sizes"] == [16, 19, 23, 28, 34, 8]  # x1.2 per block, the last clipped to the region
    assert [e["decision"] for e in events(out.traces[0], "block_size")] == ["up"] * 5
    assert m["avg_block_size"] == pytest.approx(128 / 6)
    out, _ = run("adaptive_block", const(0.99, 640), 640)
    sizes = out.traces[0]["metrics"]["block_sizes"]
    assert max(sizes) == 64 and sizes[-2] == 64  # clamped at max_block_size


def test_block_size_shrinks_under_low_confidence_and_follows_a_change():
    out, _ = run("adaptive_block", const(0.3, 64), 64)
    sizes = out.traces[0]["metrics"]["block_sizes"]
    assert sizes[:5] == [16, 13, 10, 8, 8] and min(sizes[:-1]) == 8  # clamped at min_block_size
    assert {e["decision"] for e in events(out.traces[0], "block_size")} == {"down"}
    # Easy first half, hard second half: grows, then shrinks.
    table = [(g % 50, 0.99 if g < 96 else 0.3) for g in range(192)]
    out, _ = run("adaptive_block", table_script({PROMPT: table}), 192)
    sizes = out.traces[0]["metrics"]["block_sizes"]
    peak = sizes.index(max(sizes))
    assert max(sizes) > 16 and sizes[:peak + 1] == sorted(sizes[:peak + 1])
    assert sizes[peak:-1] == sorted(sizes[peak:-1], reverse=True) and sizes[-2] < max(sizes)


def test_block_size_holds_inside_the_dead_band():
    out, _ = run("adaptive_block", const(0.85, 64, spread=1), 64)
    assert out.traces[0]["metrics"]["block_sizes"] == [16, 16, 16, 16]
    assert out.traces[0]["metrics"]["adaptations"] == 0


# -- adaptive threshold ----------------------------------------------------------------------------


def test_tau_rises_with_high_entropy_and_stops_at_its_ceiling():
    out, _ = run("adaptive_threshold", const(0.2, 32), 32)
    taus = events(out.traces[0], "tau")
    assert [round(e["new"], 6) for e in taus] == [0.84, 0.882, 0.9261, 0.95]
    assert all(e["entropy"] == pytest.approx(entropy_of(0.2)) and e["entropy"] > 2.0 for e in taus)
    assert out.traces[0]["metrics"]["tau_range"] == [0.8, 0.95]


def test_tau_falls_with_low_entropy_stops_at_its_floor_and_changes_what_is_committed():
    out, _ = run("adaptive_threshold", const(0.99, 64), 64)
    assert [round(e["new"], 6) for e in events(out.traces[0], "tau")] == [0.76, 0.722, 0.7]
    assert out.traces[0]["metrics"]["tau_final"] == 0.7
    # Confidence 0.85 (entropy 0.42 nats) under a starting tau of 0.9: the fixed threshold commits
    # one token per step; the adaptive one is at 0.855 for the first step (one token) and at
    # 0.812 for the second, which commits the other 15.
    params = dict(base_confidence_threshold=0.9, min_threshold=0.8, max_threshold=0.95)
    adaptive, _ = run("adaptive_threshold", const(0.85, 16, spread=1), 16, **params)
    fixed, _ = run("adaptive_static", const(0.85, 16, spread=1), 16, **params)
    assert [round(e["new"], 6) for e in events(adaptive.traces[0], "tau")] == [0.855, 0.81225]
    assert fixed.traces[0]["nfe"] == 16 and adaptive.traces[0]["nfe"] == 2


def test_tau_holds_between_the_entropy_thresholds():
    out, _ = run("adaptive_threshold", const(0.6, 32, spread=3), 32)
    assert 0.5 < entropy_of(0.6, 3) < 2.0
    assert not events(out.traces[0], "tau") and out.traces[0]["metrics"]["tau_final"] == 0.8


# -- tiered cache ----------------------------------------------------------------------------------


def policy_check(out, model, prompt_len: int, gen_length: int, interval: int) -> int:
    """Recompute the tiered policy from the trace and check every call against it: its window
    (refreshes on schedule) and the stamps of everything it read from the cache (never older than
    the policy allows). Returns how many scheduled tier-2 refreshes were seen."""
    blocks = events(out.traces[0], "block")
    calls = model.calls
    assert calls[0].attend == "window" and calls[0].window == list(range(prompt_len + gen_length))
    assert all(c.attend == "cache" for c in calls[1:])  # no full forward after the first
    first = [sum(b["steps"] for b in blocks[:k]) for k in range(len(blocks))]  # first call of block k
    clock = [c.clock for c in calls]
    span = [range(prompt_len + b["start"], prompt_len + b["end"]) for b in blocks]
    scheduled = 0
    for k, b in enumerate(blocks):
        due = k >= 1 and k % interval == 0
        last_refresh = (k // interval) * interval  # block of the latest scheduled refresh (0: the first forward)
        for i in range(first[k], first[k] + b["steps"]):
            if i == 0:
                continue
            expect = set(span[k]) | {p for j in range(k) if blocks[j]["tier"] == 3 for p in span[j]}
            if i == first[k] and k >= 1 and blocks[k - 1]["tier"] == 2:
                expect |= set(span[k - 1])  # promotion
            if i == first[k] and due:
                expect |= {p for j in range(k) if blocks[j]["tier"] == 2 for p in span[j]}
                expect |= set(range(span[k].stop, prompt_len + gen_length))
                scheduled += 1
            assert calls[i].window == sorted(expect), (k, i)
            stamps = calls[i].stamps[0]
            for p in calls[i].served:
                if p < prompt_len:
                    assert stamps[p] == clock[0]  # tier 1: written once, by the first forward
                elif p >= span[k].stop:  # masked suffix: the latest scheduled refresh
                    assert stamps[p] >= clock[first[last_refresh]], (k, i, p)
                else:
                    j = next(j for j in range(k) if p in span[j])
                    assert blocks[j]["tier"] == 2  # tier-3 blocks are never served from the cache
                    assert stamps[p] >= clock[first[max(j + 1, last_refresh)]], (k, i, p)
    return scheduled


@pytest.mark.parametrize("interval", [1, 2, 3])
def test_tier2_refreshes_on_schedule_and_cache_is_never_staler_than_the_policy(interval):
    # Blocks 1 and 4 are uncertain (mean confidence 0.6 < 0.85): they stay in tier 3.
    table = [(g % 50, 0.6 if 16 <= g < 32 or 64 <= g < 80 else 0.99) for g in range(112)]
    out, model = run("tiered_cache", table_script({PROMPT: table}), 112, tier2_update_interval=interval)
    blocks = events(out.traces[0], "block")
    assert [b["tier"] for b in blocks] == [2, 3, 2, 2, 3, 2, 2]
    scheduled = policy_check(out, model, len(PROMPT), 112, interval)
    refreshes = events(out.traces[0], "cache_refresh")
    assert scheduled == len([e for e in refreshes if e["reason"] == "scheduled"]) == (len(blocks) - 1) // interval
    assert [e["block"] for e in refreshes if e["reason"] == "scheduled"] == list(range(interval, 7, interval))


def test_full_adaptive_run_obeys_the_tiered_policy_with_variable_blocks():
    rng = random.Random(3)
    table = [(g % 50, rng.choice([0.99, 0.99, 0.6, 0.3])) for g in range(160)]
    out, model = run("adaptive", table_script({PROMPT: table}), 160)
    assert len(set(out.traces[0]["metrics"]["block_sizes"][:-1])) > 1
    policy_check(out, model, len(PROMPT), 160, 3)


def test_tiered_windows_give_exactly_the_full_recompute_when_the_policy_says_fresh():
    """Real LLaDA, float64. A cached position is fresh when its KV was written after the canvas
    last changed. While everything served is fresh, the tiered window's logits for the active
    block equal a full recompute; after a commit the frozen and stable tiers are stale and they
    differ; after the cache is rewritten they are equal again."""
    config = LLaDAConfig(d_model=64, n_heads=4, n_kv_heads=4, n_layers=2, mlp_hidden_size=128, vocab_size=300,
                         embedding_size=300, mask_token_id=260, eos_token_id=257, pad_token_id=257)
    model = build_model(config, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    p, length = 8, 8 + 64
    canvas = torch.randint(0, 250, (1, length), generator=gen)
    canvas[0, p + 40:] = 260  # active block [32, 48) half decoded, masked suffix [48, 64)
    active, unstable, stable, suffix = (p + 32, p + 48), [(p + 16, p + 32)], [(p, p + 16)], (p + 48, length)
    windows = [tiered_window(active, unstable, [], stable, suffix), tiered_window(active, unstable, [], [], None),
               tiered_window(active, [], [(p, p + 16)], [], None)]

    def tiered_logits(cache: KVCache, window: tuple[int, ...]) -> torch.Tensor:
        w = torch.tensor(window)
        lo = window.index(active[0])
        cache.tick()
        return model(canvas[:, w], window=w, cache=cache, attend="cache", write=True,
                     logits_positions=slice(lo, lo + 16))

    def fresh(cache: KVCache, window: tuple[int, ...], changed_at: int) -> bool:
        served = sorted(set(range(length)) - set(window))
        return bool((cache.stamp[0, served] >= changed_at).all())

    cache = KVCache.for_model(model, 1, length)
    changed_at = cache.clock
    model(canvas, cache=cache, write=True)
    for window in windows:
        full = model(canvas, logits_positions=slice(*active))
        assert fresh(cache, window, changed_at)
        assert torch.equal(tiered_logits(cache, window), full)
    canvas[0, p + 40:p + 44] = torch.tensor([5, 6, 7, 8])  # a commit in the active block
    changed_at = cache.tick()
    full = model(canvas, logits_positions=slice(*active))
    for window in windows:
        assert not fresh(cache, window, changed_at)
        assert (tiered_logits(cache, window) - full).abs().max() > 1e-6
    model(canvas, cache=cache, write=True)  # rewrite every tier
    for window in windows:
        assert fresh(cache, window, changed_at)
        assert torch.equal(tiered_logits(cache, window), full)


def test_hit_rate_is_the_served_fraction_of_attended_positions():
    table = [(g % 50, 0.6 if 16 <= g < 32 else 0.99) for g in range(96)]
    for name in ("tiered_cache", "adaptive_static"):
        out, model = run(name, table_script({PROMPT: table}), 96)
        length = len(PROMPT) + 96
        served = sum(len(c.served) for c in model.calls)
        assert out.traces[0]["metrics"]["cache_hit_rate"] == pytest.approx(served / (length * len(model.calls)))


# -- early finish, equivalence, batching -------------------------------------------------------------


@pytest.mark.parametrize("name", VARIANTS)
def test_finishes_early_on_an_easy_input(name):
    out, _ = run(name, const(0.99, 128), 128)
    fast, _ = run("fast_dllm", const(0.99, 128), 128)
    assert out.traces[0]["nfe"] <= fast.traces[0]["nfe"]
    assert torch.equal(out.tokens, fast.tokens)
    if name in ("adaptive", "adaptive_block"):
        assert out.traces[0]["nfe"] < fast.traces[0]["nfe"]


def test_static_row_of_the_ablation_is_fast_dllm():
    rng = random.Random(1)
    table = [(rng.randrange(50), rng.choice([0.99, 0.95, 0.85, 0.7, 0.5, 0.3])) for _ in range(64)]
    script = table_script({PROMPT: table})
    ours, _ = run("adaptive_static", script, 64)
    fast, _ = run("fast_dllm", script, 64, block_length=16, threshold=0.8, block_check="top")
    assert torch.equal(ours.tokens, fast.tokens) and ours.traces[0]["nfe"] == fast.traces[0]["nfe"]


@pytest.mark.parametrize("name", VARIANTS)
def test_batched_rows_adapt_independently_and_equal_single_row_runs(name):
    rng = random.Random(2)
    tables = {(1, 2, 3): [(g % 50, 0.99) for g in range(96)],
              (4, 5): [(g % 50, rng.choice([0.99, 0.6, 0.3, 0.2])) for g in range(96)]}

    def script(prompt, g, seen):  # context-dependent, so a wrong cache shows up in the tokens
        token, conf = tables[prompt][g]
        return (token + (1 if g and seen[g - 1] == 63 else 0)) % 60, conf

    prompts = ((1, 2, 3), (4, 5))
    batch, _ = run(name, script, 96, prompts=prompts)
    if name in ("adaptive", "adaptive_block"):
        assert batch.traces[0]["metrics"]["block_sizes"] != batch.traces[1]["metrics"]["block_sizes"]
    for row, prompt in enumerate(prompts):
        single, _ = run(name, script, 96, prompts=(prompt,))
        assert torch.equal(batch.tokens[row], single.tokens[0])
        assert batch.traces[row]["nfe"] == single.traces[0]["nfe"]
        assert batch.traces[row]["events"] == single.traces[0]["events"]
        assert batch.traces[row]["metrics"] == single.traces[0]["metrics"]


@pytest.mark.parametrize("name", VARIANTS)
def test_metrics_carry_the_seeds_keys(name):
    out, _ = run(name, const(0.9, 32), 32)
    m = out.traces[0]["metrics"]
    assert {"avg_block_size", "cache_hit_rate", "adaptations"} <= set(m)
    assert m["nfe"] == out.traces[0]["nfe"] and 0.0 <= m["cache_hit_rate"] < 1.0


def test_stop_at_eos_ends_a_row_after_its_eos():
    table = [(g % 50, 0.99) for g in range(20)] + [(62, 0.99)] * 44
    out, _ = run("adaptive", table_script({PROMPT: table}), 64, stop_at_eos=True)
    assert (out.tokens[0, 20:] == 62).all() and not (out.tokens == 63).any()
    assert out.traces[0]["nfe"] == 2


@pytest.mark.parametrize("params,message", [
    (dict(min_block_size=32), "min_block_size"),
    (dict(max_block_size=8), "max_block_size"),
    (dict(min_threshold=0.85), "min_threshold"),
    (dict(max_threshold=1.5), "max_threshold"),
    (dict(adaptation_rate=0.0), "adaptation_rate"),
    (dict(scale_down_factor=1.2), "scale_down_factor"),
    (dict(confidence_window=0), "confidence_window"),
    (dict(entropy_threshold_low=3.0), "entropy_threshold_low"),
    (dict(safety_factor=0.9), "safety_factor"),
    (dict(tier2_update_interval=0), "tier2_update_interval"),
    (dict(tier2_stability_threshold=2.0), "tier2_stability_threshold"),
    (dict(enable_tiered_cache="yes"), "enable_tiered_cache"),
])
def test_bad_parameters_are_user_errors(params, message):
    with pytest.raises(UserError, match=message):
        get_scheduler("adaptive", **params)


def test_gen_length_need_not_be_a_multiple_of_any_block():
    out, _ = run("adaptive", const(0.99, 50), 50)
    assert sum(out.traces[0]["metrics"]["block_sizes"]) == 50


@pytest.mark.parametrize("name", VARIANTS)
def test_real_model_padded_batch_equals_rows_alone(name):
    from tests.helpers import peaky_model, random_prompt

    model = peaky_model()
    rows = [random_prompt(n, 30 + i)[0] for i, n in enumerate([11, 4, 8])]
    ids, mask = prompt_tensor(*[r.tolist() for r in rows])
    sched = get_scheduler(name, gen_length=48)
    together = sched.generate(model, ids, attention_mask=mask)
    assert not (together.tokens == model.config.mask_token_id).any()
    for i, row in enumerate(rows):
        alone = sched.generate(model, row[None])
        assert torch.equal(together.tokens[i], alone.tokens[0]), f"row {i}"
        assert together.traces[i]["nfe"] == alone.traces[0]["nfe"]
        assert together.traces[i]["metrics"] == alone.traces[0]["metrics"]


# -- taking the tiered cache apart (mechanism knobs) -------------------------------------------------


def test_tiered_cache_with_every_piece_fresh_equals_adaptive_static_token_for_token():
    """interval 1 + every finished block promoted + prompt and suffix refreshed at each block start
    is exactly the dual cache's block-start full forward: same tokens, same NFE, any batch."""
    from tests.helpers import assert_batch_equals_rows_alone, peaky_model, random_prompt

    model = peaky_model(seed=3)
    fresh = dict(tier2_update_interval=1, tier2_stability_threshold=0.0, tier1_refresh=True, suffix_refresh="block")
    kw = dict(gen_length=48, base_block_size=16, min_block_size=8, base_confidence_threshold=0.8)
    differ = 0
    for seed in range(4):
        x = random_prompt(10, seed=seed)
        a = get_scheduler("tiered_cache", **kw, **fresh).generate(model, x)
        b = get_scheduler("adaptive_static", **kw).generate(model, x)
        assert a.tokens.tolist() == b.tokens.tolist()
        assert a.traces[0]["nfe"] == b.traces[0]["nfe"]
        stale = get_scheduler("dual_stale_suffix", **kw).generate(model, x)
        differ += stale.tokens.tolist() != b.tokens.tolist()
    assert differ, "a stale masked suffix must change some decode on a peaked model"
    assert_batch_equals_rows_alone(get_scheduler("dual_stale_suffix", **kw), model)


def test_suffix_refresh_never_keeps_the_first_forwards_kv_for_the_masked_suffix():
    out, _ = run("tiered_cache", const(0.95, 64), 64, tier2_update_interval=1, tier2_stability_threshold=0.0,
                 tier1_refresh=True, suffix_refresh="never")
    refreshes = events(out.traces[0], "cache_refresh")
    assert all(e.get("suffix", [0, 0])[1] - e.get("suffix", [0, 0])[0] == 0 for e in refreshes if e["tier"] == 2)
    assert any(e["tier"] == 1 and e["reason"] == "tier1_refresh" for e in refreshes)
    with pytest.raises(UserError, match="suffix_refresh must be one of"):
        get_scheduler("tiered_cache", suffix_refresh="sometimes")
