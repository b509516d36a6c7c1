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
