"""Per-cell records (`dllm_eval.cell_record`): file hashes against hashlib, the hash cache, and the
report's refusal to compare cells whose records differ outside the scheduler settings."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import sys
from pathlib import Path

import pytest

from dllm_eval import cli
from dllm_eval.analysis.loading import load_run
from dllm_eval.analysis.synthetic import write_fake_matrix_run
from dllm_eval.cell_record import compare_records, file_sha256, hash_files, record_differences
from dllm_eval.errors import UserError

FAKE = f"{shlex.quote(sys.executable)} -m dllm_eval.analysis.synthetic"


def test_file_sha256_matches_hashlib_and_is_cached_by_path_size_mtime(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLLM_EVAL_CACHE_DIR", str(tmp_path / "cache"))
    f = tmp_path / "w.bin"
    data = os.urandom(5 * (1 << 20) + 17)  # more than one 4 MiB read
    f.write_bytes(data)
    assert file_sha256(f) == hashlib.sha256(data).hexdigest()
    cache = json.loads((tmp_path / "cache" / "hashes.json").read_text())
    assert cache[str(f.resolve())]["size"] == len(data)
    # the second call reads the cache: a planted value comes back while (size, mtime) match ...
    cache[str(f.resolve())]["sha256"] = "planted"
    (tmp_path / "cache" / "hashes.json").write_text(json.dumps(cache))
    assert file_sha256(f) == "planted"
    # ... and a changed file (new mtime) is hashed again
    f.write_bytes(b"abc")
    os.utime(f, ns=(1, 1))
    assert file_sha256(f) == hashlib.sha256(b"abc").hexdigest()
    assert file_sha256(f, cache=False) == hashlib.sha256(b"abc").hexdigest()


def test_hash_files_picks_the_patterns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DLLM_EVAL_CACHE_DIR", str(tmp_path / "cache"))
    ck = tmp_path / "ck"
    ck.mkdir()
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "config.json", "tokenizer.json"):
        (ck / name).write_text(name)
    got = hash_files(ck, ("*.safetensors",))
    assert got == {n: hashlib.sha256(n.encode()).hexdigest()
                   for n in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors")}


def test_record_differences_ignore_only_the_scheduler_settings() -> None:
    a = {"dtype": "float32", "weights": {"m.safetensors": "aa"}, "scheduler": "fast_dllm", "seed": 1,
         "scheduler_args": {"threshold": 0.9}, "trace_dir": "x"}
    b = {**a, "scheduler": "drs", "seed": 2, "scheduler_args": {"block_length": 32}, "trace_dir": "y"}
    assert record_differences(a, b) == []
    c = {**b, "weights": {"m.safetensors": "bb"}}
    assert record_differences(a, c) == [("weights.m.safetensors", "aa", "bb")]
    with pytest.raises(UserError, match=r"cells base/seed1 and other/seed1 differ in weights\.m\.safetensors: 'aa' vs 'bb'"):
        compare_records({"base/seed1": a, "other/seed1": c})


def _cfg(tmp_path: Path, extra_params: str = "") -> Path:
    (tmp_path / "tasks").mkdir(exist_ok=True)
    p = tmp_path / "m.yaml"
    p.write_text(f"""
settings:
  tasks: [synth_math]
  seeds: [1]
  limit: {{cpu: 30}}
  batch: 8
  include_path: {tmp_path / "tasks"}
report: {{alpha: 0.05, min_effect: 0.05}}
baseline: base
configs:
  base: {{scheduler: fast_dllm, params: {{cache: dual, threshold: 0.9}}, role: baseline}}
  other: {{scheduler: drs, params: {{block_length: 32{extra_params}}}}}
""")
    return p


@pytest.mark.parametrize("extra", ["", ", dtype: bfloat16"])
def test_eval_all_writes_records_and_the_report_refuses_cells_that_differ(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], extra: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("dllm_eval.analysis.report.N_RESAMPLES", 99)
    argv = ["eval-all", "--config", str(_cfg(tmp_path, extra)), "--device", "cpu", "--run", "r", "--lm-eval-cmd", FAKE]
    rc = cli.main(argv)
    run = tmp_path / "results" / "r"
    recs = {lab: json.loads((run / "raw" / lab / "seed1" / "record.json").read_text()) for lab in ("base", "other")}
    assert recs["base"]["scheduler"] == "fast_dllm" and recs["other"]["scheduler"] == "drs"
    err = capsys.readouterr().err
    if not extra:  # identical records apart from the scheduler: the report is written
        assert rc == 0 and (run / "report.md").is_file()
        assert "no record" not in (run / "report.md").read_text()
        return
    assert rc == 1 and not (run / "report.md").exists()
    assert "no report: cells base/seed1 and other/seed1 differ in dtype: 'float32' vs 'bfloat16'" in err
    assert cli.main(["report", str(run)]) == 2
    assert "differ in dtype: 'float32' vs 'bfloat16'" in capsys.readouterr().err


def test_weights_hash_difference_is_refused_and_old_runs_load_with_a_note(tmp_path: Path) -> None:
    run = write_fake_matrix_run(tmp_path / "r", {"base": {"scheduler": "fast_dllm"}, "x": {"scheduler": "drs"}},
                                tasks=("synth_math",), limit=20, baseline="base")
    load_run(run)  # the fake runner's records agree
    rec = dict(next(u for u in load_run(run).units if u.label == "x").record or {})
    rec["weights"] = {"model.safetensors": "0" * 64}
    (run / "raw" / "x" / "seed1234" / "record.json").write_text(json.dumps(rec))
    with pytest.raises(UserError, match=r"differ in weights\.model\.safetensors: '[0-9a-f]{64}' vs '0{64}'"):
        load_run(run)
    # an older run: no record anywhere -> a note, not a refusal
    (run / "raw" / "x" / "seed1234" / "record.json").unlink()
    for p in run.rglob("results_*.json"):
        res = json.loads(p.read_text())
        del res["config"]["dllm_eval"]["record"]
        p.write_text(json.dumps(res))
    notes = load_run(run).notes
    assert any("2 cell(s) have no record" in n and "base/seed1234" in n for n in notes)
