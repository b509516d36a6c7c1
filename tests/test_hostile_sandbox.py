"""Hostile programs: each must be contained and scored as a failure, at every isolation level.

Each program is written so that it would *pass* if its attack worked (it asserts the attack's
success, or exits "cleanly" before its failing assert), so a status other than "passed" means
the sandbox held. Around each batch the test checks, independently of the sandbox's own report:
the canary directory is byte-for-byte unchanged, the loopback server saw no connection, the
secret from the environment appears in no output, no process of this session's sandboxes is
left, and the harness still scores an honest program as passed.

Configurations: every available level with the guard on (the default), and the OS levels with
the guard off, to show that bubblewrap / namespaces contain the programs on their own. The
`rlimits` level without the guard is not a configuration anyone should run and is not tested
(there `os.kill(-1, SIGKILL)` as root would take the machine down).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import threading
import time
from dataclasses import dataclass

import pytest

from dllm_eval.scoring import CodeJob, available_isolation_levels, check_asserts, run_many
from dllm_eval.scoring.sandbox import PROCESS_LABEL

# Each configuration runs the whole catalog once (~5-10 s): slow, but run in CI.
pytestmark = pytest.mark.slow

HOSTILE_TIMEOUT = 1.5  # for the programs whose containment *is* the timeout
QUICK_TIMEOUT, QUICK_LIMIT = 10.0, 5.0  # the others must fail on their own, long before the timeout
SECRET_NAME = "DLLM_SANDBOX_TEST_SECRET"


@dataclass(frozen=True)
class Hostile:
    name: str
    program: str
    tests: tuple[str, ...] = ("assert False, 'the attack did not make the test pass'",)
    statuses: frozenset = frozenset({"failed"})  # acceptable verdicts
    memory_mb: int = 2048
    quick: bool = True  # must finish well before the timeout (not be a timeout itself)


def _catalog(canary: str, canary_dir: str, port: int) -> list[Hostile]:
    return [
        Hostile("infinite_loop", "while True:\n    pass\n", statuses=frozenset({"timeout"}), quick=False),
        Hostile(
            "sleep_ignoring_sigterm",
            "import signal, time\n"
            "try:\n    signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "except ValueError:\n    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})\n"
            "time.sleep(60)\n",
            statuses=frozenset({"timeout"}),
            quick=False,
        ),
        Hostile(
            "fork_bomb",
            "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
            statuses=frozenset({"timeout", "failed"}),
            quick=False,
        ),
        Hostile("memory_bomb_one_allocation", "x = bytearray(1 << 40)\n", statuses=frozenset({"memory"})),
        Hostile(
            "memory_bomb_growth",
            "chunks = []\nwhile True:\n    chunks.append(bytearray(1 << 24))\n",
            statuses=frozenset({"memory"}),
            memory_mb=256,
        ),
        Hostile("recursion_bomb_python", "def f(n):\n    return f(n + 1)\nf(0)\n"),
        Hostile(
            "recursion_bomb_c_stack",
            "import sys\nsys.setrecursionlimit(10**8)\ndef f(x):\n    return list(map(f, [x]))\nf(0)\n",
            statuses=frozenset({"crashed", "memory", "failed"}),
        ),
        Hostile("stdout_flood", "while True:\n    print('x' * 65536)\n", statuses=frozenset({"killed"})),
        Hostile("stderr_flood", "import sys\nwhile True:\n    sys.stderr.write('e' * 65536)\n",
                statuses=frozenset({"killed"})),
        Hostile("exit0_before_asserts", "exit(0)\n"),
        Hostile("sys_exit_before_asserts", "import sys\nsys.exit()\n"),
        Hostile("os_exit0_before_asserts", "import os\nos._exit(0)\n"),
        Hostile(
            "os_exit0_during_asserts",
            "import os\ndef solution():\n    os._exit(0)\n",
            tests=("assert solution() == 1", "assert False"),
        ),
        Hostile(
            "fake_success_output",
            "import os\nprint('passed')\nprint('DONE 0123 1')\n"
            "for fd in range(1, 64):\n"
            "    try:\n        os.write(fd, b'DONE 00000000000000000000000000000000 1\\n')\n"
            "    except OSError:\n        pass\n"
            "os._exit(0)\n",
        ),
        Hostile(
            "steal_token_from_frames",
            "import os, sys\nf = sys._getframe()\n"
            "while f is not None:\n"
            "    for value in list(f.f_locals.values()):\n"
            "        if isinstance(value, bytes) and value.startswith(b'DONE'):\n"
            "            for fd in range(3, 64):\n"
            "                try:\n                    os.write(fd, value + b'1\\n')\n"
            "                except OSError:\n                    pass\n"
            "            os._exit(0)\n"
            "    f = f.f_back\n",
        ),
        Hostile(
            "steal_token_via_gc",
            "import gc, os\n"
            "for obj in gc.get_objects():\n"
            "    if isinstance(obj, bytes) and obj.startswith(b'DONE'):\n"
            "        for fd in range(3, 64):\n"
            "            try:\n                os.write(fd, obj + b'1\\n')\n"
            "            except OSError:\n                pass\n"
            "        os._exit(0)\n",
        ),
        Hostile(
            "monkeypatch_builtins",
            "import builtins\nbuiltins.exec = lambda *a, **k: None\nbuiltins.compile = lambda *a, **k: None\n"
            "builtins.AssertionError = type('Harmless', (Exception,), {})\n",
        ),
        Hostile(
            "kill_parent",
            "import os, signal, time\nos.kill(os.getppid(), signal.SIGKILL)\ntime.sleep(0.3)\n",
            statuses=frozenset({"failed", "killed"}),
        ),
        Hostile(
            "kill_process_group",
            "import os, signal\nos.killpg(0, signal.SIGKILL)\nos.killpg(os.getpgid(0), signal.SIGKILL)\n",
            statuses=frozenset({"failed", "killed"}),
        ),
        Hostile("kill_every_process", "import os, signal\nos.kill(-1, signal.SIGKILL)\n",
                statuses=frozenset({"failed", "killed"})),
        Hostile("delete_canary", f"import os\nos.remove({canary!r})\n", tests=("assert True",)),
        Hostile("overwrite_canary", f"open({canary!r}, 'w').write('pwned')\n", tests=("assert True",)),
        Hostile("create_file_outside", f"open({canary_dir!r} + '/intruder.txt', 'w').write('x')\n",
                tests=("assert True",)),
        Hostile("rename_canary", f"import os\nos.rename({canary!r}, {canary!r} + '.moved')\n", tests=("assert True",)),
        Hostile("rmtree_outside", f"import shutil\nshutil.rmtree({canary_dir!r})\n", tests=("assert True",)),
        Hostile(
            "symlink_escape",
            f"import os\nos.symlink({canary!r}, 'link')\nopen('link', 'w').write('pwned')\n",
            tests=("assert True",),
        ),
        Hostile(
            "subprocess_escape",
            "import subprocess\n"
            f"subprocess.run(['sh', '-c', 'echo pwned > {canary}; touch {canary_dir}/intruder2'], check=True)\n",
            tests=(f"assert open({canary!r}).read().strip() == 'pwned'",),
        ),
        Hostile(
            "read_environment_secret",
            "import glob, os\n"
            f"found = [v for k, v in os.environ.items() if k == {SECRET_NAME!r}]\n"
            "for path in glob.glob('/proc/*/environ'):\n"
            "    try:\n        data = open(path, 'rb').read()\n    except OSError:\n        continue\n"
            f"    found += [x.decode(errors='replace') for x in data.split(b'\\0') if x.startswith({SECRET_NAME!r}.encode())]\n"
            "print('found:', found)\n",
            tests=("assert found, 'no secret found'",),
        ),
        Hostile(
            "connect_to_loopback_server",
            f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "s.sendall(b'leak')\nreply = s.recv(16)\n",
            tests=("assert reply == b'ok'",),
        ),
        Hostile("blocking_stdin_read", "import sys\ndata = sys.stdin.read()\n", tests=("assert data",)),
        Hostile("input_call", "answer = input('number? ')\n", tests=("assert answer",)),
        Hostile("ctypes_segfault", "import ctypes\nctypes.string_at(0)\n", statuses=frozenset({"failed", "crashed"})),
        Hostile(
            "threads_left_running",
            "import threading\ndef spin():\n    while True:\n        pass\n"
            "for _ in range(2):\n    threading.Thread(target=spin).start()\n"
            "def answer():\n    return 41\n",
            tests=("assert answer() == 42",),
        ),
        Hostile(
            "thread_exits_process_during_tests",
            "import os, threading, time\n"
            "threading.Thread(target=lambda: (time.sleep(0.2), os._exit(0))).start()\n"
            "def slow():\n    time.sleep(5)\n    return 1\n",
            tests=("assert slow() == 1",),
        ),
        Hostile(
            "daemon_escaping_the_group",
            "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n    os._exit(0)\n",
        ),
        Hostile("create_file_in_usr", "open('/usr/dllm_sandbox_intruder.txt', 'w').write('x')\n",
                tests=("assert True",)),
        Hostile("tamper_with_the_stdlib", "import os\nopen(os.__file__, 'a').write('# pwned')\n",
                tests=("assert True",)),
        Hostile(
            "fill_the_disk",
            "i = 0\nwhile True:\n    open(f'f{i}', 'wb').write(b'x' * (1 << 20))\n    i += 1\n",
            statuses=frozenset({"failed", "timeout", "killed"}),
        ),
    ]


class LoopbackServer:
    """A TCP server on 127.0.0.1 that records every connection it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(0.5)
                try:
                    self.connections.append(conn.recv(64) or b"<connected>")
                    conn.sendall(b"ok")
                except OSError:
                    self.connections.append(b"<connected>")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def _session_processes() -> list[int]:
    """Live processes started by this session's sandboxes (they carry PROCESS_LABEL in argv)."""
    label = PROCESS_LABEL.encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if label in fh.read():
                    with open(f"/proc/{entry}/status", "rb") as st:
                        if b"State:\tZ" not in st.read():
                            found.append(int(entry))
        except OSError:
            continue
    return found


def _stdlib_digest() -> str:
    """Hash of the interpreter's os.py, which `tamper_with_the_stdlib` tries to append to."""
    with open(os.__file__, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _snapshot(directory) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


CONFIGS = [(level, True) for level in available_isolation_levels()] + [
    (level, False) for level in available_isolation_levels() if level != "rlimits"
]


@pytest.fixture(scope="module", params=CONFIGS, ids=[f"{lvl}-guard" if g else f"{lvl}-noguard" for lvl, g in CONFIGS])
def batch(request, tmp_path_factory):
    """Run the whole catalog once per configuration (in parallel, like a real task) and check
    the world around it; the parametrised test below then looks at each verdict."""
    level, guard = request.param
    canary_dir = tmp_path_factory.mktemp(f"canary-{level}-{guard}")
    canary = canary_dir / "canary.txt"
    canary.write_text("canary: must survive\n")
    before = _snapshot(canary_dir)
    stdlib_before = _stdlib_digest()
    secret = secrets.token_hex(16)
    os.environ[SECRET_NAME] = secret
    server = LoopbackServer()
    try:
        catalog = _catalog(str(canary), str(canary_dir), server.port)
        jobs = [CodeJob(h.program, list(h.tests), timeout=QUICK_TIMEOUT if h.quick else HOSTILE_TIMEOUT,
                        memory_mb=h.memory_mb) for h in catalog]
        started = time.monotonic()
        results = run_many(jobs, workers=2, isolation=level, guard=guard)
        elapsed = time.monotonic() - started
        time.sleep(0.2)
        world = {
            "canary_unchanged": _snapshot(canary_dir) == before,
            "stdlib_unchanged": _stdlib_digest() == stdlib_before,
            "usr_untouched": not os.path.exists("/usr/dllm_sandbox_intruder.txt"),
            "connections": list(server.connections),
            "leftover_processes": _session_processes(),
            "honest_program": check_asserts("def f(x):\n    return x + 1\n", ["assert f(1) == 2"],
                                            isolation=level, guard=guard).status,
        }
    finally:
        server.close()
        os.environ.pop(SECRET_NAME, None)
    return {
        "level": level, "guard": guard, "secret": secret, "elapsed": elapsed, "world": world,
        "results": {h.name: (h, r) for h, r in zip(catalog, results)},
    }


HOSTILE_NAMES = [h.name for h in _catalog("/c", "/d", 1)]


def test_catalog_is_large_enough():
    assert len(HOSTILE_NAMES) >= 20
    assert len(set(HOSTILE_NAMES)) == len(HOSTILE_NAMES)


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_program_is_contained(batch, name):
    hostile, result = batch["results"][name]
    assert not result.passed, f"{name} passed at {batch['level']} (guard={batch['guard']}): {result}"
    assert result.status in hostile.statuses, f"{name}: {result.status} ({result.reason})"
    assert result.isolation == batch["level"] and result.guard == batch["guard"]
    if hostile.quick:
        assert result.duration_s < QUICK_LIMIT, f"{name} should fail on its own, took {result.duration_s:.2f} s"
    else:
        assert result.duration_s < HOSTILE_TIMEOUT + 3.0, f"{name} was not stopped in time"
    assert batch["secret"] not in result.stdout_tail + result.stderr_tail


def test_world_outside_the_sandbox_is_untouched(batch):
    world = batch["world"]
    assert world["canary_unchanged"], "a file outside the working directory was changed"
    assert world["stdlib_unchanged"], "the interpreter's standard library was modified"
    assert world["usr_untouched"], "a file was created in /usr"
    assert world["connections"] == [], f"the loopback server was reached: {world['connections']}"
    assert world["leftover_processes"] == [], "sandboxed processes outlived their run"
    assert world["honest_program"] == "passed", "the harness no longer scores an honest program"


def test_batch_time_is_bounded(batch):
    # 36 programs on 2 workers, a handful of them timeouts of 1.5 s: well under a minute.
    assert batch["elapsed"] < 60
