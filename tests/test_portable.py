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
    # the embedded models of another checkout (a run made in a clone): their names
    assert portable("pretrained=/work/cc/dllm_eval/assets/tiny_dream,x=1") == "pretrained=tiny_dream,x=1"


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


def test_report_commands_read_relative_to_the_run_folder_wherever_it_was_made() -> None:
    """A run made under /tmp on a leased machine (and one made under results/ here): cell commands
    read raw/..., the matrix call --results-dir .., and text from other folders is left alone."""
    from dllm_eval.analysis.report import run_relative

    for made in ("/tmp/runs/gpu/tiny_dream", "results/example"):
        cmds = [f"python -m x --model_args trace_dir={made}/raw/a/seed1/traces --output_path {made}/raw/a/seed1",
                f"python -m x --output_path {made}/raw/b/seed1"]
        assert [run_relative(c, cmds) for c in cmds] == [
            "python -m x --model_args trace_dir=raw/a/seed1/traces --output_path raw/a/seed1",
            "python -m x --output_path raw/b/seed1"]
        parent = made.rsplit("/", 1)[0]
        argv = f"dllm-eval eval-all --run {made.rsplit('/', 1)[1]} --results-dir {parent} --config /opt/m.yaml"
        assert run_relative(argv, cmds) == f"dllm-eval eval-all --run {made.rsplit('/', 1)[1]} --results-dir .. --config /opt/m.yaml"
    # cells written to two different folders: no single run folder, nothing rewritten
    mixed = ["x --output_path /a/raw/l/seed1", "x --output_path /b/raw/l/seed1"]
    assert run_relative(mixed[0], mixed) == mixed[0]
