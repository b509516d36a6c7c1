"""Hostile programs (tests/hostile_catalog.py): each must be contained and scored as a failure,
at every isolation level, as root and as an unprivileged user.

Around each batch the catalog's runner checks, independently of the sandbox's own report: the
canary directory is byte-for-byte unchanged, the canary process is alive, nothing appeared in
/var/tmp, /dev/shm or /usr, the loopback server saw no connection, no process of the batch is
left, the working directories were cleaned up, and an honest program still passes.

Configurations, as root: every available level with the guard on (the default) and with it off
(the Python guard is a second layer: seccomp, Landlock and the throwaway uids must hold on their
own, at rlimits too). As an unprivileged throwaway uid: every level with the guard on, run with
Debian's python3 through setpriv (skipped, with the reason, where that is impossible).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dllm_eval.scoring import available_isolation_levels
from tests.hostile_catalog import HOSTILE_TIMEOUT, QUICK_LIMIT, catalog, run_batch

# Each configuration runs the whole catalog once (~10 s): slow, but run in CI.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
LEVELS = available_isolation_levels()
NONROOT_UID = 0x5FFF0000 + os.getpid() % 4096  # owns nothing; not in the sandbox's uid range
SYSTEM_PYTHON = "/usr/bin/python3"

CONFIGS = [("root", level, True) for level in LEVELS] + [("root", level, False) for level in LEVELS] + [
    ("nonroot", level, True) for level in LEVELS
]


def _nonroot_skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "the non-root pass drops from root to a throwaway uid; this test run is not root"
    if shutil.which("setpriv") is None:
        return "setpriv (util-linux) is not installed"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"{SYSTEM_PYTHON} is missing (apt-get install python3): the venv under /root is closed to other uids"
    probe = subprocess.run([SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True)
    if probe.returncode != 0:
        return "Debian's python3-seccomp is not installed (apt-get install python3-seccomp)"
    for parent in [*reversed(REPO.parents), REPO]:
        if not os.stat(parent).st_mode & 0o001:
            return f"{parent} is not reachable by other users (mode {oct(os.stat(parent).st_mode & 0o777)})"
    return None


def _run_nonroot(level: str, guard: bool) -> dict:
    reason = _nonroot_skip_reason()
    if reason:
        pytest.skip(reason)
    argv = ["setpriv", f"--reuid={NONROOT_UID}", f"--regid={NONROOT_UID}", "--clear-groups", "--inh-caps=-all",
            "--", "env", "-i", f"PYTHONPATH={REPO}", "PATH=/usr/bin:/bin", "HOME=/tmp",
            SYSTEM_PYTHON, str(REPO / "tests" / "hostile_catalog.py"), level, "1" if guard else "0"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd="/tmp", timeout=300)
    assert proc.returncode == 0, f"the non-root batch failed to run:\n{proc.stderr[-3000:]}"
    batch = json.loads(proc.stdout.strip().splitlines()[-1])
    assert batch["uid"] == NONROOT_UID
    return batch


@pytest.fixture(scope="module", params=CONFIGS,
                ids=[f"{who}-{lvl}-{'guard' if g else 'noguard'}" for who, lvl, g in CONFIGS])
def batch(request):
    who, level, guard = request.param
    return _run_nonroot(level, guard) if who == "nonroot" else run_batch(level, guard)


HOSTILES = {h.name: h for h in catalog("/c", "/d", 1)}


def test_catalog_is_large_enough():
    assert len(HOSTILES) >= 50


@pytest.mark.parametrize("name", sorted(HOSTILES))
def test_hostile_program_is_contained(batch, name):
    hostile, result = HOSTILES[name], batch["results"][name]
    where = f"{batch['level']} (guard={batch['guard']}, uid={batch['uid']})"
    assert not result["passed"], f"{name} passed at {where}: {result}"
    assert result["status"] in hostile.statuses, f"{name} at {where}: {result['status']} ({result['reason']})"
    assert result["isolation"] == batch["level"] and result["guard"] == batch["guard"]
    if hostile.quick:
        assert result["duration_s"] < QUICK_LIMIT, f"{name} should fail on its own, took {result['duration_s']:.2f} s"
    else:  # bounded cleanup: the verdict within timeout + 2 s, whatever the program created
        assert result["duration_s"] < HOSTILE_TIMEOUT + 2.0, f"{name} took {result['duration_s']:.2f} s at {where}"
    assert batch["secret"] not in result["stdout_tail"] + result["stderr_tail"]


def test_world_outside_the_sandbox_is_untouched(batch):
    world = batch["world"]
    assert world["canary_unchanged"], "a file outside the working directory was changed"
    assert world["canary_process_alive"], "the canary process was killed"
    assert world["stdlib_unchanged"], "the interpreter's standard library was modified"
    assert world["outside_files"] == [], f"files appeared outside the working directory: {world['outside_files']}"
    assert world["connections"] == [], f"the loopback server was reached: {world['connections']}"
    assert world["leftover_processes"] == [], "sandboxed processes outlived their run"
    assert world["cleanup_done"], "working directories were not removed"
    assert world["honest_program"] == "passed", "the harness no longer scores an honest program"


def test_batch_time_is_bounded(batch):
    # ~50 programs on 2 workers, a handful of them timeouts of 1.5 s: well under a minute.
    assert batch["elapsed"] < 60


def test_nonroot_pass_really_runs_unprivileged():
    if _nonroot_skip_reason():
        pytest.skip(_nonroot_skip_reason())
    out = subprocess.run(["setpriv", f"--reuid={NONROOT_UID}", f"--regid={NONROOT_UID}", "--clear-groups",
                          SYSTEM_PYTHON, "-c", "import os; print(os.getuid(), os.access('/root', os.R_OK))"],
                         capture_output=True, text=True, cwd="/tmp")
    assert out.stdout.split() == [str(NONROOT_UID), "False"]


NONROOT_HUMANEVAL = """
import json, sys
from dllm_eval.scoring import CodeJob, run_many
level, jobs = sys.argv[1], json.load(sys.stdin)
results = run_many([CodeJob(j["program"], j["tests"], setup=j["setup"], timeout=60.0) for j in jobs], isolation=level)
print(json.dumps({"failed": [j["task_id"] for j, r in zip(jobs, results) if not r.passed],
                  "levels": sorted({r.isolation for r in results})}))
"""


@pytest.mark.parametrize("level", LEVELS)
def test_humaneval_canonical_solutions_pass_as_nonroot(level):
    """The acceptance check for an unprivileged user: all 164 canonical solutions pass at every
    level this machine offers (the root pass is tests/test_code_tasks.py)."""
    reason = _nonroot_skip_reason()
    if reason:
        pytest.skip(reason)
    from dllm_eval import data
    from dllm_eval.scoring.lmeval import asserts_for_doc

    jobs = []
    for doc in data.humaneval()["test"]:
        tests, setup = asserts_for_doc(doc)
        jobs.append({"task_id": doc["task_id"], "program": doc["prompt"] + doc["canonical_solution"], "tests": tests,
                     "setup": setup})
    argv = ["setpriv", f"--reuid={NONROOT_UID}", f"--regid={NONROOT_UID}", "--clear-groups", "--inh-caps=-all",
            "--", "env", "-i", f"PYTHONPATH={REPO}", "PATH=/usr/bin:/bin", "HOME=/tmp",
            SYSTEM_PYTHON, "-c", NONROOT_HUMANEVAL, level]
    proc = subprocess.run(argv, input=json.dumps(jobs), capture_output=True, text=True, cwd="/tmp", timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert len(jobs) == 164 and out["failed"] == [] and out["levels"] == [level]
