"""Issue 15 item 4: a dllm_adaptive input error is one line under every lm-eval entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dllm_eval.errors import UserError, find_user_error, one_line_excepthook

REPO = Path(__file__).resolve().parents[1]


def test_hook_prints_the_first_line_of_a_wrapped_user_error(capsys):
    try:
        try:
            raise UserError("model_args threshold=2 must be in (0, 1]; pass e.g. threshold=0.9\nmore")
        except UserError as inner:
            raise RuntimeError("lm-eval wrapped it") from inner
    except RuntimeError as outer:
        one_line_excepthook(type(outer), outer, outer.__traceback__)
    err = capsys.readouterr().err
    assert err == "error: model_args threshold=2 must be in (0, 1]; pass e.g. threshold=0.9\n"


def test_other_exceptions_keep_their_traceback(monkeypatch):
    seen = []
    monkeypatch.setattr(one_line_excepthook, "previous", lambda *a: seen.append(a[0]))
    exc = KeyError("x")
    one_line_excepthook(KeyError, exc, None)
    assert seen == [KeyError] and find_user_error(exc) is None


ENTRY_POINTS = {
    "dllm-eval lm-eval": [sys.executable, "-m", "dllm_eval.lm_eval_cli"],
    "stock lm_eval": [sys.executable, "-m", "lm_eval"],
}


@pytest.mark.slow
@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
def test_unknown_scheduler_is_one_line_nonzero_and_writes_nothing(entry, tmp_path):
    out = tmp_path / "out"
    argv = [*ENTRY_POINTS[entry], "--model", "dllm_adaptive", "--model_args", "scheduler=bogus",
            "--tasks", "dllm_humaneval", "--include_path", str(REPO / "tasks" / "code"), "--limit", "1",
            "--output_path", str(out)]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in (proc.stderr + proc.stdout).splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "scheduler='bogus' is unknown; choose one of" in errors[0]
    assert not out.exists()


# ---------------------------------------------------------------- checkpoint load errors name the file
def _write_family(tmp_path: Path, family: str) -> Path:
    out = tmp_path / family
    if family == "llada":
        from dllm_eval.models.llada import LLaDAConfig, build_model, save_llada

        cfg = LLaDAConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=2, mlp_hidden_size=64, vocab_size=128,
                          embedding_size=128, mask_token_id=127, eos_token_id=126, pad_token_id=126)
        save_llada(build_model(cfg), out, max_shard_bytes=20_000)
    else:
        from dllm_eval.models.dream import build_model, save_dream
        from tests.dream_helpers import tiny_dream_config

        save_dream(build_model(tiny_dream_config()), out, max_shard_bytes=60_000)
    return out


def _load(path: Path):
    from dllm_eval.models.registry import load_model

    return load_model(path)


@pytest.mark.parametrize("family", ["llada", "dream"])
def test_broken_checkpoints_fail_in_one_line_naming_the_file(tmp_path, family):
    import json

    ckpt = _write_family(tmp_path, family)
    shards = sorted(ckpt.glob("model-*.safetensors"))
    assert len(shards) >= 2 and _load(ckpt) is not None  # intact: loads

    config = (ckpt / "config.json").read_text()
    (ckpt / "config.json").write_text(config[: len(config) // 2])
    with pytest.raises(UserError, match=r"config\.json is not valid JSON"):
        _load(ckpt)

    raw = json.loads(config)
    (ckpt / "config.json").write_text(json.dumps({**raw, "model_type": "mamba"}))
    with pytest.raises(UserError, match=r"config\.json: model_type='mamba' is not supported; supported model types"):
        _load(ckpt)

    key = "d_model" if family == "llada" else "hidden_size"
    (ckpt / "config.json").write_text(json.dumps({**raw, key: raw[key] * 2}))
    with pytest.raises(UserError, match=r"model-0000\d-of-0000\d\.safetensors: .* has shape .* but config\.json implies"):
        _load(ckpt)
    (ckpt / "config.json").write_text(config)

    data = shards[-1].read_bytes()
    shards[-1].write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=rf"{shards[-1].name} cannot be read .*truncated or corrupt"):
        _load(ckpt)
    shards[-1].unlink()
    with pytest.raises(UserError, match=rf"shard {shards[-1].name} listed in model.safetensors.index.json is missing"):
        _load(ckpt)


@pytest.mark.slow
def test_a_corrupt_config_is_one_line_under_the_stock_cli(tmp_path):
    ckpt = _write_family(tmp_path, "llada")
    (ckpt / "config.json").write_text("{not json")
    out = tmp_path / "out"
    argv = [*ENTRY_POINTS["stock lm_eval"], "--model", "dllm_adaptive", "--model_args", f"pretrained={ckpt}",
            "--tasks", "synth_math", "--include_path", str(REPO / "tasks" / "synth"), "--limit", "1",
            "--output_path", str(out)]
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                          cwd=tmp_path, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in (proc.stderr + proc.stdout).splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "config.json is not valid JSON" in errors[0]
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize(("model_args", "message"), [
    ("threshold=2", "threshold must be in [0, 1]"),
    ("pretrained=/nonexistent/ckpt", "no such directory, and not a hub id"),
    ("scheduler=fast_dllm,thresold=0.9", "thresold not understood by scheduler 'fast_dllm'"),
])
def test_bad_model_args_are_one_line_under_the_stock_cli(tmp_path, model_args, message):
    out = tmp_path / "out"
    argv = [*ENTRY_POINTS["stock lm_eval"], "--model", "dllm_adaptive", "--model_args", model_args,
            "--tasks", "synth_math", "--include_path", str(REPO / "tasks" / "synth"), "--limit", "1",
            "--output_path", str(out)]
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
                          cwd=tmp_path, timeout=300)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in (proc.stderr + proc.stdout).splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], errors
    assert not out.exists()
