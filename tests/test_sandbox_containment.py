"""Issue 15's containment pieces, one at a time: the judge/program value codec, top-level assert
splitting, the seccomp filter, stale-workspace sweeping after an interrupted harness, and the
isolation floor. The end-to-end attacks are in test_hostile_sandbox.py."""

from __future__ import annotations

import fcntl
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dllm_eval.errors import UserError
from dllm_eval.scoring import available_isolation_levels, check_asserts, isolation_banner, run_program
from dllm_eval.scoring._runner import decode, encode
from dllm_eval.scoring.lmeval import execute_records
from dllm_eval.scoring.sandbox import (
    MIN_ISOLATION_ENV,
    WORKSPACE_PREFIX,
    split_top_level_asserts,
    sweep_stale_workspaces,
)
from dllm_eval.scoring.seccomp_filter import compiled_filter

REPO = Path(__file__).resolve().parents[1]
LEVELS = available_isolation_levels()


# ---------------------------------------------------------------- codec


@pytest.mark.parametrize("value", [
    None, True, 0, -7, 1 << 80, -(1 << 70), 1.5, math.inf, "héllo", b"\x00\xff", bytearray(b"ab"), 3 + 4j,
    [1, [2, (3, {4: "x", (5, 6): {7}})]], frozenset({1, 2}), {}, (), [],
])
def test_plain_values_survive_the_round_trip_exactly(value):
    back = decode(encode(value, {}), lambda key: pytest.fail("no handle expected"))
    assert back == value and type(back) is type(value)


def test_nan_round_trips():
    assert math.isnan(decode(encode(float("nan"), {}), None))


@pytest.mark.parametrize("data", [{"a": 1}, [], [7], ["zz", 1], ["d", [1]], ["h", "1"], ["b", 5], ["i", 3]])
def test_decode_rejects_anything_but_the_tagged_format(data):
    with pytest.raises(ValueError):
        decode(data, lambda key: key)


def test_subclasses_travel_as_their_plain_base_and_other_objects_as_handles():
    from collections import Counter, OrderedDict

    class Sneaky(int):
        def __eq__(self, other):
            return True

    handles: dict = {}
    assert decode(encode(Counter("aab"), handles), None) == {"a": 2, "b": 1}
    assert type(decode(encode(OrderedDict(a=1), handles), None)) is dict
    assert decode(encode(Sneaky(3), handles), None) == 3 and handles == {}
    obj = object()
    tagged = encode(obj, handles)
    assert tagged[0] == "h" and handles[tagged[1]] is obj
    with pytest.raises(TypeError):
        encode(obj, None)  # the judge never sends its own objects


def test_an_eq_that_always_returns_true_no_longer_passes():
    program = "class Yes:\n    def __eq__(self, other):\n        return True\ndef f():\n    return Yes()\n"
    assert not check_asserts(program, ["assert f() == 1"]).passed


def test_arguments_mutated_in_place_are_written_back():
    program = "def sort_in_place(a):\n    a.sort()\n"
    assert check_asserts(program, ["x = [3, 1, 2]\nsort_in_place(x)\nassert x == [1, 2, 3]"]).passed


def test_program_exceptions_keep_their_type_in_the_tests():
    program = "def f(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n"
    test = "try:\n    f(-1)\nexcept ValueError as e:\n    assert 'negative' in str(e)\nelse:\n    assert False"
    assert check_asserts(program, [test]).passed


# ---------------------------------------------------------------- run_program's asserts


def test_top_level_asserts_are_split_out_in_order_with_line_numbers():
    source = "import os\nx = 1\nassert x == 1\n\n@staticmethod\ndef f():\n    assert False\nassert f\n"
    segments = split_top_level_asserts(source)
    assert [kind for kind, _ in segments] == ["exec", "assert", "exec", "assert"]
    assert segments[1][1] == "\n\nassert x == 1\n"  # line 3 stays line 3
    assert split_top_level_asserts("def (:\n") == [("exec", "def (:\n")]


def test_a_program_that_forges_its_completion_still_fails_its_top_level_assert():
    forged = "import os\nfor fd in range(64):\n    try:\n        os.write(fd, b'DONE 0\\n')\n    except OSError:\n        pass\n"
    assert not run_program(forged + "assert 1 == 2\n").passed
    assert run_program("x = [1]\nx.append(2)\nassert x == [1, 2]\n").passed


# ---------------------------------------------------------------- seccomp


def test_the_filter_is_built_and_holds_one_pid_placeholder():
    import struct

    from dllm_eval.scoring._runner import PID_SENTINEL

    bpf = compiled_filter()
    constants = [struct.unpack_from("=HBBI", bpf, i)[3] for i in range(0, len(bpf), 8)]
    assert len(bpf) % 8 == 0 and PID_SENTINEL in constants


@pytest.mark.parametrize("level", LEVELS)
def test_seccomp_denies_without_the_guard(level):
    probe = (
        "import errno, os\nresults = {}\n"
        "for name, call in [('mkfifo', lambda: os.mkfifo('f')), ('pidfd', lambda: os.pidfd_open(1)),\n"
        "                   ('kill', lambda: os.kill(1, 0)), ('fork', os.fork), ('setsid', os.setsid)]:\n"
        "    try:\n        call()\n        results[name] = 'allowed'\n"
        "    except OSError as exc:\n        results[name] = errno.errorcode[exc.errno]\n"
        "def get():\n    return results\n"
    )
    test = "assert get() == {n: 'EPERM' for n in ('mkfifo', 'pidfd', 'kill', 'fork', 'setsid')}, get()"
    result = check_asserts(probe, [test], isolation=level, guard=False)
    assert result.passed, result.reason
    assert "seccomp" in result.containment


# ---------------------------------------------------------------- cleanup after an interrupted harness


def test_sweep_removes_only_workspaces_whose_harness_is_gone(tmp_path):
    stale, live = tmp_path / f"{WORKSPACE_PREFIX}1-a", tmp_path / f"{WORKSPACE_PREFIX}2-b"
    for d in (stale, live):
        (d / "job-x" / "deep").mkdir(parents=True)
        (d / ".lock").touch()
    fd = os.open(live / ".lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        removed = sweep_stale_workspaces(str(tmp_path))
    finally:
        os.close(fd)
    assert removed == [str(stale)] and not stale.exists() and live.exists()


@pytest.mark.slow
def test_a_killed_harness_leaves_nothing_behind_after_the_next_start(tmp_path):
    bomb = "import os\ni = 0\nwhile True:\n    os.mkdir(f'd{i}')\n    i += 1\n"
    script = ("import sys\nfrom dllm_eval.scoring import run_program\n"
              f"print('started', flush=True)\nrun_program({bomb!r}, timeout=30, isolation='rlimits', guard=False)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp_path)}
    harness = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    assert harness.stdout.readline().strip() == "started"
    time.sleep(1.5)
    harness.send_signal(signal.SIGKILL)
    harness.wait()
    time.sleep(0.5)
    left = [p for p in tmp_path.iterdir() if p.name.startswith(WORKSPACE_PREFIX)]
    assert left, "the interrupted harness should have left its workspace (the sweep is what is tested)"
    removed = sweep_stale_workspaces(str(tmp_path))
    assert sorted(removed) == sorted(map(str, left)) and not any(tmp_path.iterdir())
    # and its sandbox did not outlive it (the lifeline)
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in out


# ---------------------------------------------------------------- isolation floor


DOC = {"task_id": "t", "prompt": "", "entry_point": "f", "test": "def check(c):\n    assert c(1) == 2\n"}
RECORDS = [[{"program": "def f(x):\n    return x + 1\n"}]]


def test_code_tasks_refuse_to_score_below_the_floor(monkeypatch):
    monkeypatch.delenv(MIN_ISOLATION_ENV, raising=False)
    with pytest.raises(UserError) as err:
        execute_records(RECORDS, [DOC], isolation="rlimits")
    message = str(err.value)
    assert "\n" not in message and "apt-get install -y bubblewrap" in message and MIN_ISOLATION_ENV in message


@pytest.mark.parametrize("how", ["env", "argument"])
def test_a_lowered_floor_is_written_into_every_sample(monkeypatch, how):
    monkeypatch.delenv(MIN_ISOLATION_ENV, raising=False)
    kwargs = {"isolation": "rlimits"}
    if how == "env":
        monkeypatch.setenv(MIN_ISOLATION_ENV, "rlimits")
    else:
        kwargs["min_isolation"] = "rlimits"
    record = execute_records(RECORDS, [DOC], **kwargs)[0][0]
    assert record["passed"] and record["isolation"] == "rlimits"
    assert "WEAK SANDBOX ISOLATION RLIMITS" in record["isolation_warning"]


def test_the_default_path_scores_at_namespaces_or_stronger(monkeypatch):
    monkeypatch.delenv(MIN_ISOLATION_ENV, raising=False)
    monkeypatch.delenv("DLLM_EVAL_SANDBOX", raising=False)
    record = execute_records(RECORDS, [DOC])[0][0]
    assert record["isolation"] in ("bwrap", "namespaces") and record["isolation_warning"] == ""


def test_isolation_banner():
    assert isolation_banner(["bwrap", "namespaces"]) is None
    banner = isolation_banner(["bwrap", "rlimits", "rlimits"])
    assert banner.startswith("WARNING: CODE SCORES") and "RLIMITS" in banner and "\n" not in banner
    assert "UNKNOWN" in isolation_banner(["none"])


def test_unknown_floor_is_a_user_error(monkeypatch):
    monkeypatch.setenv(MIN_ISOLATION_ENV, "chroot")
    with pytest.raises(UserError, match="unknown minimum isolation"):
        execute_records(RECORDS, [DOC])


@pytest.mark.slow
@pytest.mark.parametrize("level", LEVELS)
def test_all_164_humaneval_canonical_solutions_pass_at_every_level(level):
    from dllm_eval import data
    from dllm_eval.scoring import CodeJob, run_many
    from dllm_eval.scoring.lmeval import asserts_for_doc

    docs = list(data.humaneval()["test"])
    jobs = [CodeJob(d["prompt"] + d["canonical_solution"], *asserts_for_doc(d), timeout=60.0) for d in docs]
    results = run_many(jobs, isolation=level)
    assert len(docs) == 164
    assert {d["task_id"]: r.reason for d, r in zip(docs, results) if not r.passed} == {}
