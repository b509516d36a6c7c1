"""The interleaved timing pass: rotation, pairing by batch, and an end-to-end run on the embedded model."""

from __future__ import annotations

from pathlib import Path

import pytest

from dllm_eval.timing import (
    CANVAS,
    KEPT,
    TimedBatch,
    canvas_length,
    paired_throughput,
    read_rows,
    rotation,
    summary_table,
    write_rows,
)

REPO = Path(__file__).resolve().parents[1]


def test_rotation_puts_every_configuration_first_equally_often():
    labels = ["a", "b", "c"]
    orders = [rotation(labels, b) for b in range(6)]
    assert orders[:3] == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]
    for label in labels:
        assert sorted(o.index(label) for o in orders) == [0, 0, 1, 1, 2, 2]


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
    assert [r.label for r in rows if r.batch == 1] == ["aa", "t03", "base"]  # rotated
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
