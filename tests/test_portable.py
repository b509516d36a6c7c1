"""Machine paths out of what a run commits (`dllm_eval.portable`), on hand-made strings."""

from __future__ import annotations

from pathlib import Path

import pytest

from dllm_eval.models import EMBEDDED_MODEL_DIR
from dllm_eval.portable import portable, portable_record


def test_paths_become_names_and_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    here = tmp_path.resolve()
    text = (f"{here}/.venv/bin/python3 -m dllm_eval.lm_eval_cli --model_args pretrained={EMBEDDED_MODEL_DIR} "
            f"--output_path {here}/results/x/raw --include_path {here}")
    assert portable(text) == (f"python -m dllm_eval.lm_eval_cli --model_args pretrained={EMBEDDED_MODEL_DIR.name} "
                              "--output_path results/x/raw --include_path .")
    assert portable("/usr/bin/python -c 1") == "python -c 1"
    assert portable("/opt/elsewhere/data.json") == "/opt/elsewhere/data.json"  # not ours: left as it is


def test_the_filesystem_root_as_working_directory_rewrites_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir("/")
    assert portable("/opt/elsewhere/data.json") == "/opt/elsewhere/data.json"


def test_records_are_rewritten_in_every_string(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    here = str(tmp_path.resolve())
    record = {"cwd": here, "n": 3, "cells": [{"command": f"{here}/bin/python -m x"}], "t": (here, None)}
    assert portable_record(record) == {"cwd": ".", "n": 3, "cells": [{"command": "python -m x"}], "t": [".", None]}


def test_portable_strips_machine_paths() -> None:
    import sys

    text = f"{sys.executable} -m dllm_eval.lm_eval_cli --model_args pretrained={EMBEDDED_MODEL_DIR},x=1 " \
           f"--include_path {Path.cwd() / 'tasks'}"
    out = portable(text)
    assert out == "python -m dllm_eval.lm_eval_cli --model_args pretrained=tiny_llada,x=1 --include_path tasks"
