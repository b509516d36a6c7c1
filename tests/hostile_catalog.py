"""Hostile programs for the sandbox, and a batch runner that checks the world around them.

Standard library only (besides dllm_eval.scoring): `test_hostile_sandbox.py` runs the batch in
the test process as root, and also through `python3 tests/hostile_catalog.py LEVEL GUARD` as
an unprivileged throwaway user, with Debian's interpreter (the project's venv is under /root).

Each program is written so that it would *pass* if its attack worked (it asserts the attack's
success, or exits "cleanly" before its failing assert), so a status other than "passed" means
the sandbox held.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

HOSTILE_TIMEOUT = 1.5  # for the programs whose containment *is* the timeout
QUICK_TIMEOUT, QUICK_LIMIT = 10.0, 5.0  # the others must fail on their own, long before the timeout
SECRET_NAME = "DLLM_SANDBOX_TEST_SECRET"
OUTSIDE_NAMES = ("/var/tmp/dllm_sandbox_fifo", "/var/tmp/dllm_sandbox_node", "/dev/shm/dllm_sandbox_fifo",
                 "/dev/shm/dllm_sandbox_node", "/var/tmp/dllm_sandbox_intruder", "/usr/dllm_sandbox_intruder.txt")


@dataclass(frozen=True)
class Hostile:
    name: str
    program: str
    tests: tuple[str, ...] = ("assert False, 'the attack did not make the test pass'",)
    statuses: frozenset = frozenset({"failed"})  # acceptable verdicts
    memory_mb: int = 2048
    quick: bool = True  # must finish well before the timeout (not be a timeout itself)


def catalog(canary: str, canary_dir: str, port: int, canary_pid: int = 1) -> list[Hostile]:
    """Every hostile program; `canary_pid` is a process that must survive them all."""
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
        # --- issue 15: the four attacks that worked at the rlimits level, and relatives
        Hostile(
            "memory_scan_forged_pass",
            "import os, re\n"
            "found = set()\n"
            "for line in open('/proc/self/maps'):\n"
            "    parts = line.split()\n"
            "    if 'r' not in parts[1] or (len(parts) > 5 and parts[5].startswith('[v')):\n"
            "        continue\n"
            "    lo, hi = (int(x, 16) for x in parts[0].split('-'))\n"
            "    try:\n"
            "        with open('/proc/self/mem', 'rb') as mem:\n"
            "            mem.seek(lo)\n"
            "            found.update(re.findall(rb'DONE [0-9a-f ]{0,40}', mem.read(min(hi - lo, 1 << 24))))\n"
            "    except (OSError, ValueError, OverflowError):\n"
            "        pass\n"
            "for fd in range(1, 256):\n"
            "    for line in list(found)[:20] + [b'DONE 1', b'DONE 2']:\n"
            "        try:\n            os.write(fd, line.split(b'\\n')[0] + b'\\n')\n"
            "        except OSError:\n            pass\n"
            "os._exit(0)\n",
        ),
        Hostile(
            "eq_always_true",
            "class Anything:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
            "def solution():\n    return Anything()\n",
            tests=("assert solution() == 42",),
        ),
        Hostile(
            "lying_answers_then_exit",
            "import os\ndef solution():\n"
            "    for fd in range(3, 64):\n"
            "        try:\n            os.write(fd, b'\\x00\\x00\\x00\\x0c[\"ok\", 1, 0]')\n"
            "        except OSError:\n            pass\n"
            "    os._exit(0)\n",
            tests=("assert solution() == 1", "assert False"),
        ),
        Hostile(
            "write_into_the_judge",
            "import os\nppid = os.getppid()\n"
            "for fd in range(64):\n"
            "    try:\n        open(f'/proc/{ppid}/fd/{fd}', 'w').write('DONE 1\\n')\n"
            "    except OSError:\n        pass\n"
            "mem = open(f'/proc/{ppid}/mem', 'rb')\n",
        ),
        Hostile(
            "pidfd_kill_canary",
            f"import os, signal\nfd = os.pidfd_open({canary_pid})\nsignal.pidfd_send_signal(fd, signal.SIGKILL)\n",
            tests=("assert True",),
        ),
        Hostile(
            "pidfd_kill_judge",
            "import os, signal\nfd = os.pidfd_open(os.getppid())\nsignal.pidfd_send_signal(fd, signal.SIGKILL)\n",
            tests=("assert True",),
            statuses=frozenset({"failed", "killed"}),
        ),
        Hostile(
            "signal_canary",
            f"import os, signal\nos.kill({canary_pid}, signal.SIGKILL)\n",
            tests=("assert True",),
        ),
        Hostile(
            "mkfifo_and_mknod_outside",
            "import os, stat\n"
            f"for d in ({canary_dir!r}, '/var/tmp', '/dev/shm'):\n"
            "    try:\n        os.mkfifo(d + '/dllm_sandbox_fifo')\n    except OSError:\n        pass\n"
            "    try:\n        os.mknod(d + '/dllm_sandbox_node', stat.S_IFREG | 0o644)\n    except OSError:\n        pass\n"
            "assert any(os.path.exists(d + '/dllm_sandbox_fifo') for d in "
            f"({canary_dir!r}, '/var/tmp', '/dev/shm'))\n",
            tests=("assert True",),
        ),
        Hostile(
            "mkfifo_in_workdir",  # harmless in itself, but mknodat is denied everywhere
            "import os\nos.mkfifo('fifo')\n",
            tests=("assert True",),
        ),
        Hostile(
            "mkdir_bomb",
            "import os\ni = 0\nwhile True:\n    try:\n        os.mkdir(f'd{i}')\n    except OSError:\n        pass\n    i += 1\n",
            statuses=frozenset({"failed", "killed", "timeout"}),
            quick=False,
        ),
        Hostile(
            "deep_mkdir_bomb",
            "import os\nwhile True:\n    try:\n        os.mkdir('d')\n        os.chdir('d')\n    except OSError:\n        pass\n",
            statuses=frozenset({"failed", "killed", "timeout"}),
            quick=False,
        ),
        Hostile(
            "leave_the_process_group",
            "import os, time\nos.setsid()\ntime.sleep(60)\n",
            statuses=frozenset({"failed", "timeout"}),
            quick=False,
        ),
        Hostile("unshare_namespaces", "import os\nos.unshare(os.CLONE_NEWUSER | os.CLONE_NEWNS)\n", tests=("assert True",)),
        Hostile("write_to_var_tmp", "open('/var/tmp/dllm_sandbox_intruder', 'w').write('x')\n", tests=("assert True",)),
    ]


class LoopbackServer:
    """A TCP server on 127.0.0.1 that records every connection it accepts."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.connections: list[str] = []
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
                    self.connections.append(repr(conn.recv(64) or b"<connected>"))
                    conn.sendall(b"ok")
                except OSError:
                    self.connections.append("<connected>")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


def session_processes(label: str) -> list[int]:
    """Live processes started by this process's sandboxes (they carry `label` in argv)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                if label.encode() in fh.read():
                    with open(f"/proc/{entry}/status", "rb") as st:
                        if b"State:\tZ" not in st.read():
                            found.append(int(entry))
        except OSError:
            continue
    return found


def _digest(path: str) -> str:
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _snapshot(directory: str) -> dict[str, str]:
    return {name: _digest(os.path.join(directory, name)) if os.path.isfile(os.path.join(directory, name)) else "?"
            for name in sorted(os.listdir(directory))}


def run_batch(level: str, guard: bool) -> dict:
    """Run the whole catalog once (in parallel, like a real task) and check the world around it,
    independently of the sandbox's own report. Returns plain data (JSON-able)."""
    from dllm_eval.scoring import CodeJob, check_asserts, run_many
    from dllm_eval.scoring.sandbox import PROCESS_LABEL, WORKSPACE

    canary_dir = tempfile.mkdtemp(prefix=f"dllm-canary-{level}-")
    canary = os.path.join(canary_dir, "canary.txt")
    with open(canary, "w") as fh:
        fh.write("canary: must survive\n")
    before = _snapshot(canary_dir)
    stdlib_before = _digest(os.__file__)
    canary_proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"],
                                   start_new_session=True)
    secret = secrets.token_hex(16)
    os.environ[SECRET_NAME] = secret
    server = LoopbackServer()
    try:
        hostiles = catalog(canary, canary_dir, server.port, canary_proc.pid)
        jobs = [CodeJob(h.program, list(h.tests), timeout=QUICK_TIMEOUT if h.quick else HOSTILE_TIMEOUT,
                        memory_mb=h.memory_mb) for h in hostiles]
        started = time.monotonic()
        results = run_many(jobs, workers=2, isolation=level, guard=guard)
        elapsed = time.monotonic() - started
        time.sleep(0.2)
        world = {
            "canary_unchanged": _snapshot(canary_dir) == before,
            "canary_process_alive": canary_proc.poll() is None,
            "stdlib_unchanged": _digest(os.__file__) == stdlib_before,
            "outside_files": [p for p in OUTSIDE_NAMES if os.path.lexists(p)],
            "connections": list(server.connections),
            "leftover_processes": session_processes(PROCESS_LABEL),
            "honest_program": check_asserts("def f(x):\n    return x + 1\n", ["assert f(1) == 2"],
                                            isolation=level, guard=guard).status,
            "cleanup_done": WORKSPACE.drain(30.0),
        }
    finally:
        server.close()
        os.environ.pop(SECRET_NAME, None)
        canary_proc.kill()
        canary_proc.wait()
        for name in os.listdir(canary_dir):
            os.remove(os.path.join(canary_dir, name))
        os.rmdir(canary_dir)
    return {
        "level": level, "guard": guard, "secret": secret, "elapsed": elapsed, "world": world,
        "uid": os.getuid(),
        "results": {h.name: r.to_dict() for h, r in zip(hostiles, results)},
    }


if __name__ == "__main__":  # python3 tests/hostile_catalog.py LEVEL GUARD(1/0) -> JSON on stdout
    print(json.dumps(run_batch(sys.argv[1], sys.argv[2] == "1")))
