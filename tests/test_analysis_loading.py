"""Loading lm-eval output folders into the tidy table, and every bad input the loader must refuse."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from dllm_eval.analysis.loading import load_run
from dllm_eval.analysis.synthetic import write_fake_matrix_run, write_fake_run
from dllm_eval.errors import UserError

BASE = {"scheduler": "fast_dllm", "cache": "dual", "threshold": 0.9, "block_length": 32}
FAST = {"scheduler": "fast_dllm", "cache": "dual", "threshold": 0.3, "block_length": 32}


def _run(tmp_path: Path, **kw) -> Path:
    configs = kw.pop("configs", {"base": BASE, "t03": FAST})
    return write_fake_matrix_run(tmp_path / "run", configs, baseline="base", limit=kw.pop("limit", 24), **kw)


def _samples(root: Path, label: str, task: str) -> Path:
    return next((root / "raw" / label).rglob(f"samples_{task}_*.jsonl"))


def test_tidy_table_has_one_row_per_label_seed_task_doc_filter(tmp_path: Path) -> None:
    root = _run(tmp_path, seeds=(1, 2))
    run = load_run(root)
    t = run.table
    # synth_math has 2 filters, synth_code 1: (2 + 1) * 24 docs * 2 labels * 2 seeds
    assert len(t) == 3 * 24 * 2 * 2
    assert run.tasks == ["synth_math", "synth_code"]
    assert run.filters["synth_math"] == ["strict-match", "flexible-extract"]
    assert run.primary_filter == {"synth_math": "strict-match", "synth_code": "create_test"}
    assert run.metric == {"synth_math": "exact_match", "synth_code": "pass@1"}
    assert set(run.configs) == {"base", "t03"}
    assert run.configs["base"].role == "baseline" and run.configs["base"].seeds == [1, 2]
    assert run.configs["t03"].scheduler == "fast_dllm"
    sub = t.where(label="base", task="synth_math", filter="strict-match", seed=1)
    assert len(sub) == 24
    assert sorted(sub["doc_id"]) == list(range(24))
    assert np.all(np.isin(sub["correct"], [0.0, 1.0]))
    assert np.all(np.isin(sub["tier"], [1, 2, 3, 4]))
    assert np.all(sub["nfe"] >= 1) and np.all(sub["gen_tokens"] >= 0)
    assert np.all(sub["cost_s"] > 0) and np.all(sub["latency_s"] >= sub["cost_s"])
    assert all(isinstance(m, dict) and "cache_hit_rate" in m for m in sub["trace_metrics"])
    assert run.notes == []
    assert run.has_tiers == {"synth_math": True, "synth_code": True}


def test_plain_lm_eval_output_folders_without_matrix(tmp_path: Path) -> None:
    """Two runs made by hand with lm_eval --output_path A/seed7 and B/seed7; traces in the default place."""
    for label, ma in (("A", BASE), ("B", FAST)):
        write_fake_run(tmp_path / label / "seed7", model_args={**ma, "seed": 7}, tasks=["synth_code"], limit=10, seed=7)
    run = load_run(tmp_path)
    assert set(run.configs) == {"A", "B"}
    assert run.configs["A"].seeds == [7]
    assert np.all(np.isfinite(run.table["nfe"]))  # found in <output_path>/traces/


def test_label_from_scheduler_when_folder_has_none(tmp_path: Path) -> None:
    write_fake_run(tmp_path, model_args={**BASE, "pretrained": "org/model"}, tasks=["plain_qa"], limit=5)
    run = load_run(tmp_path)
    assert list(run.configs) == ["fast_dllm"]
    assert run.has_tiers == {"plain_qa": False}
    assert np.all(np.isnan(run.table["tier"]))


def test_unfinished_matrix_cell_is_skipped_with_a_note(tmp_path: Path) -> None:
    root = _run(tmp_path)
    (root / "raw" / "t03" / "seed1234" / ".done.json").unlink()
    run = load_run(root)
    assert set(run.configs) == {"base"}
    assert any("skipped raw/t03/seed1234" in n for n in run.notes)


def test_missing_traces_are_noted_not_dropped(tmp_path: Path) -> None:
    root = _run(tmp_path)
    tr = root / "raw" / "t03" / "seed1234" / "traces" / "traces_synth_code.jsonl"
    lines = tr.read_text().splitlines()
    tr.write_text("\n".join(lines[:-3]) + "\n")
    run = load_run(root)
    sub = run.table.where(label="t03", task="synth_code")
    assert len(sub) == 24  # the samples are all there
    assert int(np.isnan(sub["nfe"]).sum()) == 3
    assert any("3 of 24 documents have no trace row" in n for n in run.notes)


def test_duplicate_trace_rows_are_noted(tmp_path: Path) -> None:
    root = _run(tmp_path)
    tr = root / "raw" / "base" / "seed1234" / "traces" / "traces_synth_code.jsonl"
    tr.write_text(tr.read_text() + tr.read_text().splitlines()[0] + "\n")
    run = load_run(root)
    assert any("1 duplicate trace rows" in n for n in run.notes)


# ---------------------------------------------------------------- bad inputs: clear errors
def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="is not a folder"):
        load_run(tmp_path / "nope")


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"no lm-eval results \(results_\*\.json\)"):
        load_run(tmp_path)


def test_all_cells_unfinished(tmp_path: Path) -> None:
    root = _run(tmp_path, done=False)
    with pytest.raises(UserError, match="no finished runs"):
        load_run(root)


def test_mismatched_document_sets(tmp_path: Path) -> None:
    root = _run(tmp_path)
    write_fake_run(root / "raw" / "t03" / "seed1234", model_args=FAST, tasks=["synth_math", "synth_code"], limit=30,
                   date_id="2026-01-01T00-00-00.000000", trace_dir=root / "raw" / "t03" / "seed1234" / "traces")
    # (the writer appends, exactly like lm-eval would with the same date id)
    with pytest.raises(UserError, match="a second line for doc 0"):
        load_run(root)
    import shutil

    shutil.rmtree(root / "raw" / "t03" / "seed1234")
    cell = root / "raw" / "t03" / "seed1234"
    write_fake_run(cell, model_args=FAST, tasks=["synth_math", "synth_code"], limit=30, trace_dir=cell / "traces")
    (cell / ".done.json").write_text("{}")
    with pytest.raises(UserError, match=r"has 30 documents but 'base' \(seed 1234\) has 24.*same --limit"):
        load_run(root)


def test_doc_hash_mismatch(tmp_path: Path) -> None:
    root = _run(tmp_path)
    path = _samples(root, "t03", "synth_code")
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[5]["doc_hash"] = "0" * 64
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(UserError, match="task synth_code, doc 5: doc_hash differs"):
        load_run(root)


def test_missing_filter(tmp_path: Path) -> None:
    root = _run(tmp_path)
    path = _samples(root, "t03", "synth_math")
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    path.write_text("\n".join(json.dumps(r) for r in rows if r["filter"] != "flexible-extract") + "\n")
    with pytest.raises(UserError, match=r"has filters \['strict-match'\] but"):
        load_run(root)


def test_corrupt_samples_jsonl(tmp_path: Path) -> None:
    root = _run(tmp_path)
    path = _samples(root, "base", "synth_code")
    lines = path.read_text().splitlines()
    lines[3] = lines[3][: len(lines[3]) // 2]  # cut off mid-line, as an interrupted write would
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=rf"{path.name}:4: not valid JSON.*corrupt"):
        load_run(root)


def test_corrupt_trace_jsonl(tmp_path: Path) -> None:
    root = _run(tmp_path)
    tr = root / "raw" / "base" / "seed1234" / "traces" / "traces_synth_math.jsonl"
    tr.write_text(tr.read_text() + "{not json\n")
    with pytest.raises(UserError, match=r"traces_synth_math\.jsonl:25: not valid JSON"):
        load_run(root)


def test_corrupt_results_json(tmp_path: Path) -> None:
    root = _run(tmp_path)
    res = next((root / "raw" / "base").rglob("results_*.json"))
    res.write_text(res.read_text()[:100])
    with pytest.raises(UserError, match=rf"{res.name}: not valid JSON"):
        load_run(root)


def test_missing_samples_file(tmp_path: Path) -> None:
    root = _run(tmp_path)
    _samples(root, "base", "synth_code").unlink()
    with pytest.raises(UserError, match="rerun lm_eval with --log_samples"):
        load_run(root)


def test_metric_out_of_range_and_unknown_metric(tmp_path: Path) -> None:
    root = _run(tmp_path)
    with pytest.raises(UserError, match="no metric 'bleu'"):
        load_run(root, metric="bleu")
    path = _samples(root, "base", "synth_code")
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    rows[0]["pass@1"] = 7.5
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(UserError, match=r"outside 0\.\.1"):
        load_run(root)


def test_table_csv_export(tmp_path: Path) -> None:
    run = load_run(_run(tmp_path))
    out = tmp_path / "t.csv"
    run.table.to_csv(out)
    lines = out.read_text().splitlines()
    assert len(lines) == len(run.table) + 1
    assert lines[0].startswith("label,seed,task,doc_id,filter")
    assert not math.isnan(float(lines[1].split(",")[6]))
