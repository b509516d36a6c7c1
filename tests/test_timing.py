"""The interleaved timing pass: rotation, pairing by batch, and an end-to-end run on the embedded model."""

from __future__ import annotations

from pathlib import Path

import pytest

from dllm_eval.timing import (
    CANVAS,
    KEPT,
    TimedBatch,
    canvas_length,
    crossover_order,
    paired_throughput,
    read_rows,
    summary_table,
    write_rows,
)

REPO = Path(__file__).resolve().parents[1]


def test_crossover_order_is_williams_design_balanced_for_position_and_predecessor():
    """Checked by counting, for K = 2..7: over one cycle (K batches, 2K for odd K) every label sits
    at every position equally often and directly follows every other label equally often (a
    cyclic shift passes the first count and fails the second: each label has one predecessor)."""
    from collections import Counter

    assert crossover_order(list("abcd"), 0) == list("abdc")  # 0, 1, K-1, 2 (hand-computed)
    assert crossover_order(list("abcd"), 1) == list("bcad")
    for k in range(2, 8):
        labels = [f"c{i}" for i in range(k)]
        cycle = k if k % 2 == 0 else 2 * k
        orders = [crossover_order(labels, b) for b in range(cycle)]
        assert all(sorted(o) == labels for o in orders)
        positions = Counter((o.index(lab), lab) for o in orders for lab in labels)
        assert set(positions.values()) == {cycle // k}
        follows = Counter((o[i], o[i + 1]) for o in orders for i in range(k - 1))
        assert len(follows) == k * (k - 1) and set(follows.values()) == {cycle // k}
        assert crossover_order(labels, cycle) == orders[0]


class _FakeFront:
    """Records every decode: (batch's first context, label, timed?) via the generate calls."""

    def __init__(self, device: str) -> None:
        import torch

        self.model = type("M", (), {"device": torch.device(device)})()
        self.calls: list[tuple[str, float]] = []

    def generate(self, contexts, scheduler, stops, generator=None):
        from types import SimpleNamespace

        self.calls.append((contexts[0], scheduler.params.threshold))
        return SimpleNamespace(gen_tokens=[3] * len(contexts),
                               output=SimpleNamespace(traces=[{"nfe": 2}] * len(contexts)))


@pytest.mark.parametrize("warm", [True, False])
def test_warm_each_batch_decodes_every_batch_untimed_with_every_configuration_first(warm):
    from dllm_eval.timing import interleaved_timing

    front = _FakeFront("cpu")
    reqs = [(i, f"doc{i}", {"until": [], "max_gen_toks": 32}, None) for i in range(4)]
    configs = {"a": ("fast_dllm", {"threshold": 0.9}), "b": ("fast_dllm", {"threshold": 0.5})}
    rows = interleaved_timing(front, {"t": reqs}, configs, batch_size=2, warm_each_batch=warm)
    assert len(rows) == 4  # two batches x two configurations timed, whatever the warm-up
    per_batch = 4 if warm else 2
    # the first two calls are the one-off warm-up on batch 0; then each batch: (untimed round +) timed round
    assert front.calls[:2] == [("doc0", 0.9), ("doc0", 0.5)]
    assert [c[0] for c in front.calls[2:]] == ["doc0"] * per_batch + ["doc2"] * per_batch
    assert {(r.batch, r.label, r.position) for r in rows} == {(0, "a", 0), (0, "b", 1), (1, "b", 0), (1, "a", 1)}


def test_warm_each_batch_defaults_to_on_for_cuda_models_only(monkeypatch):
    import torch

    from dllm_eval.timing import interleaved_timing

    cpu_generator = torch.Generator
    monkeypatch.setattr(torch, "Generator", lambda device=None: cpu_generator(device="cpu"))  # no CUDA here

    reqs = [(0, "doc0", {"until": [], "max_gen_toks": 32}, None)]
    configs = {"a": ("fast_dllm", {"threshold": 0.9})}
    cpu = _FakeFront("cpu")
    interleaved_timing(cpu, {"t": reqs}, configs, batch_size=1)
    assert len(cpu.calls) == 2  # one-off warm-up + the timed decode
    gpu = _FakeFront("cuda")  # only the device type is read; nothing runs on a GPU
    interleaved_timing(gpu, {"t": reqs}, configs, batch_size=1)
    assert len(gpu.calls) == 3  # + the batch's untimed round


def test_canvas_length_rounds_up_to_whole_blocks():
    assert canvas_length(100, 32) == 128 and canvas_length(64, 32) == 64 and canvas_length(1, 32) == 32
    assert canvas_length(100, None) == 100 and canvas_length(100, 32, fixed=48) == 48


def test_paired_throughput_cancels_drift_shared_by_a_batch():
    """A machine that slows down batch by batch slows both sides of each pair: the paired ratio
    stays at the true 1.25x, where comparing run totals taken at different times would not."""
    rows = []
    for b in range(30):
        drift = 1.0 + 0.05 * b
        rows.append(TimedBatch("t", b, "base", b % 2, 1.0 * drift, 100, 10, [b]))
        rows.append(TimedBatch("t", b, "fast", 1 - b % 2, 0.8 * drift, 100, 8, [b]))
    res = paired_throughput(rows, "fast", "base")
    assert res.statistic == pytest.approx(1.25, rel=1e-9)
    assert res.low == pytest.approx(1.25, rel=1e-6) and res.high == pytest.approx(1.25, rel=1e-6)
    assert "1.250x" in summary_table(rows, "base")


def test_canvas_tokens_per_second_is_the_inverse_wall_time_ratio_whatever_the_answers_hold():
    """Three batches of 4 rows on a 64-token canvas (256 positions each). `fast` takes half the
    wall time of `base` on every batch: canvas tokens/s ratio (256*3/4.5) / (256*3/9) = 2 exactly.
    Its kept answers are a quarter as long and all empty in batch 2, so the kept-token ratio is
    (25+25+0)/4.5 / (300/9) = 1/3, and batch 2 has no kept-token ratio at all (2 units, not 3)."""
    base_wall, fast_wall = [2.0, 4.0, 3.0], [1.0, 2.0, 1.5]
    rows = []
    for b in range(3):
        rows.append(TimedBatch("t", b, "base", 0, base_wall[b], 100, 10, [4 * b + i for i in range(4)],
                               canvas_tokens=256, empty=0))
        rows.append(TimedBatch("t", b, "fast", 1, fast_wall[b], 0 if b == 2 else 25, 5, [4 * b + i for i in range(4)],
                               canvas_tokens=256, empty=4 if b == 2 else 0))
    canvas = paired_throughput(rows, "fast", "base", unit=CANVAS)
    assert canvas.statistic == pytest.approx(2.0, rel=1e-12) and canvas.n == 3
    assert canvas.low == pytest.approx(2.0, rel=1e-9) and canvas.high == pytest.approx(2.0, rel=1e-9)
    kept = paired_throughput(rows, "fast", "base", unit=KEPT)
    assert kept.statistic == pytest.approx((50 / 4.5) / (300 / 9), rel=1e-12) and kept.n == 2
    table = summary_table(rows, "base")
    fast_pooled = next(x for x in table.splitlines() if x.startswith("| all (pooled) | `fast`"))
    # kept 50/4.5 = 11.1 tokens/s, canvas 768/4.5 = 170.7 tokens/s, 4 of 12 answers empty
    assert "| 11.1 |" in fast_pooled and "| 170.7 | 2.000x [2.000, 2.000] |" in fast_pooled and fast_pooled.endswith("| 33% |")


def test_rows_without_canvas_tokens_give_no_canvas_ratio():
    """A timing.json written before canvas tokens were recorded: no canvas ratio (None), never one
    made up from the kept tokens; the kept-token ratio is still there."""
    rows = [TimedBatch("t", b, lab, 0, w, 100, 8, [b]) for b in range(4) for lab, w in (("base", 1.0), ("fast", 0.5))]
    assert paired_throughput(rows, "fast", "base", unit=CANVAS) is None
    assert paired_throughput(rows, "fast", "base").statistic == pytest.approx(2.0)
    with pytest.raises(ValueError, match="throughput unit"):
        rows[0].tokens("bytes")


@pytest.mark.slow
def test_interleaved_timing_end_to_end_on_the_embedded_model(tmp_path):
    from dllm_eval.frontend import load_front_end
    from dllm_eval.models import EMBEDDED_MODEL_DIR
    from dllm_eval.timing import build_requests, interleaved_timing

    front = load_front_end(EMBEDDED_MODEL_DIR, device="cpu")
    requests = {"synth_math": build_requests("synth_math", str(REPO / "tasks" / "synth"), 8)}
    assert [r[0] for r in requests["synth_math"]] == list(range(8))
    assert [r[3] for r in requests["synth_math"]] == [1, 2, 3, 4, 1, 2, 3, 4]  # the docs' own tiers
    configs = {"base": ("fast_dllm", {"threshold": 0.9}), "aa": ("fast_dllm", {"threshold": 0.9}),
               "t03": ("fast_dllm", {"threshold": 0.3})}
    rows = interleaved_timing(front, requests, configs, batch_size=2)
    assert len(rows) == 4 * 3
    assert [r.label for r in rows if r.batch == 1] == ["aa", "t03", "base"]  # crossover order, batch 1
    # tier-homogeneous: batch b holds the two documents of tier b + 1
    assert {(r.batch, tuple(r.docs), r.tier) for r in rows if r.label == "base"} == {
        (0, (0, 4), 1), (1, (1, 5), 2), (2, (2, 6), 3), (3, (3, 7), 4)}
    by = {(r.batch, r.label): r for r in rows}
    assert all(by[(b, "aa")].gen_tokens == by[(b, "base")].gen_tokens for b in range(4))  # same decode
    assert sum(by[(b, "t03")].nfe for b in range(4)) < sum(by[(b, "base")].nfe for b in range(4))
    path = tmp_path / "timing.json"
    write_rows(rows, path, {"baseline": "base"})
    meta, back = read_rows(path)
    assert meta["baseline"] == "base" and back == rows


@pytest.mark.slow
def test_eval_all_timing_pass_writes_timing_json_for_the_runs_labels(tmp_path):
    import argparse

    from dllm_eval import matrix

    cfg = tmp_path / "m.yaml"
    cfg.write_text(f"""
settings:
  tasks: [synth_math]
  include_path: {REPO / 'tasks' / 'synth'}
  timing: {{limit: {{cpu: 4}}, batch: 2, skip: [slow]}}
baseline: base
configs:
  base: {{scheduler: fast_dllm, params: {{threshold: 0.9}}, role: baseline}}
  aa: {{scheduler: fast_dllm, params: {{threshold: 0.9}}, role: control_aa, control_of: base}}
  slow: {{scheduler: llada}}
""")
    mf = matrix.load_matrix_config(cfg)
    settings = {"labels": ["base", "aa", "slow"], "device": "cpu", "tasks": ["synth_math"],
                "include_path": str(REPO / "tasks" / "synth")}
    args = argparse.Namespace(model=None, lm_eval_cmd=None, no_timing=False)
    assert matrix.timing_pass(args, mf, settings, tmp_path)
    meta, rows = read_rows(tmp_path / "timing.json")
    assert meta["labels"] == ["base", "aa"] and meta["batch"] == 2 and meta["gen_length"] is None
    assert all(r.canvas_tokens == 64 * len(r.docs) and 0 <= r.empty <= len(r.docs) for r in rows)  # synth_math: 64
    # 4 documents of tiers 1-4: tier-homogeneous batches hold one document each
    assert sorted({(r.label, r.batch) for r in rows}) == [(lab, b) for lab in ("aa", "base") for b in range(4)]
    assert not matrix.timing_pass(args, mf, settings, tmp_path)  # already there: kept
    # a cell finished after the file was written (a committed run cloned, then rerun): timed again
    import os

    marker = tmp_path / "raw" / "base" / "seed1" / ".done.json"
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")
    os.utime(tmp_path / "timing.json", (1, 1))
    assert matrix.timing_pass(args, mf, settings, tmp_path)
    assert not matrix.timing_pass(args, mf, settings, tmp_path)
    # a sweep point: --gen-length fixes every configuration's canvas (synth_math's own is 64)
    long_dir = tmp_path / "gen128"
    assert matrix.timing_pass(argparse.Namespace(model=None, lm_eval_cmd=None, no_timing=False, gen_length=128),
                              mf, settings, long_dir)
    meta128, rows128 = read_rows(long_dir / "timing.json")
    assert meta128["gen_length"] == 128
    assert all(r.canvas_tokens == 128 * len(r.docs) for r in rows128)
    nfe = {r.batch: r.nfe for r in rows if r.label == "base"}
    nfe128 = {r.batch: r.nfe for r in rows128 if r.label == "base"}
    assert all(nfe128[b] > nfe[b] for b in nfe)  # four blocks of 32 to decode instead of two


class _Sentinel(Exception):
    pass


def test_both_timing_passes_load_their_model_through_the_one_eager_front_end(monkeypatch, tmp_path):
    """`eager_front_end` loads with compile="none" on every device, and eval-all's timing pass goes
    through it (replaced here by a stub that stops the pass before any decoding)."""
    import argparse

    from dllm_eval import frontend, matrix, timing

    seen = {}

    def fake_load(model, device="cpu", compile="auto", **kw):
        seen.update(model=model, device=device, compile=compile)
        return "front"

    monkeypatch.setattr(frontend, "load_front_end", fake_load)
    assert timing.eager_front_end("tiny_llada", "cuda:0") == "front"
    assert seen == {"model": "tiny_llada", "device": "cuda:0", "compile": "none"}

    def stop(model, device):
        seen["eager"] = (model, device)
        raise _Sentinel

    monkeypatch.setattr(timing, "eager_front_end", stop)
    cfg = tmp_path / "m.yaml"
    cfg.write_text("""
settings:
  tasks: [synth_math]
  timing: {limit: {cpu: 4}, batch: 2}
baseline: base
configs:
  base: {scheduler: fast_dllm, params: {threshold: 0.9}, role: baseline}
""")
    mf = matrix.load_matrix_config(cfg)
    settings = {"labels": ["base"], "device": "cpu", "tasks": ["synth_math"], "include_path": "tasks"}
    with pytest.raises(_Sentinel):
        matrix.timing_pass(argparse.Namespace(model="m", lm_eval_cmd=None, no_timing=False), mf, settings, tmp_path)
    assert seen["eager"] == ("m", "cpu")
