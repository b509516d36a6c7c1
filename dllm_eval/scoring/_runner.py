"""The program that runs *inside* the sandbox: two processes, a judge and the program under test.

It is started as `python -S -s -B -c <this file's text>` (stdlib only: it must not import
dllm_eval, and no site-packages are on its path). The harness writes one payload to its
stdin (`marshal`) and closes it; fd 0 is then pointed at /dev/null.

Why two processes. Nothing inside the process that runs untrusted code is secret from it:
ctypes, /proc/self/mem or a C extension can read and write all of its memory, so no token,
descriptor or frame held there can vouch for a pass. So the runner forks before any untrusted
code runs:

* the *judge* (the runner itself) keeps the report pipe to the harness. It runs the test
  snippets (and the top-level `assert`s of a whole program) in its own interpreter, and
  writes `DONE <count>` only after its own asserts held;
* the *program* process closes the report pipe, then executes the untrusted code and serves
  requests from the judge over a pair of pipes: "call this function with these arguments",
  "get this attribute", "iterate this object". It answers with plain values (int, float,
  str, bytes, list, tuple, dict, set, ... rebuilt by the judge from a small tagged JSON
  format, never unpickled or unmarshalled) or an opaque handle for anything else.

The program can lie in its answers, but an answer is only a value: the judge compares it
with what the test expects. It cannot reach the judge: the report pipe is closed in its
process before it starts; the seccomp filter (built by the harness, see `sandbox.py`) denies
it ptrace, process_vm_readv/writev, pidfd_open/pidfd_getfd/pidfd_send_signal, and kill or
tgkill to any pid but its own; the judge is not dumpable and, as root, runs under a different
throwaway uid, so /proc/<judge>/mem and /proc/<judge>/fd are closed to it. Killing or crashing
the judge, exiting early, hanging or answering garbage all end without a DONE line: a failure.

Also applied to both processes, at every isolation level: rlimits, no_new_privs, Landlock
(writes only inside the working directory) where the kernel has it, the throwaway uid as root,
the seccomp filter, and (program only) the Python audit-hook guard below.
"""

from __future__ import annotations

import builtins
import marshal
import os
import sys

REPORT_ERROR_LIMIT = 2000  # characters of an exception message kept in the report
MAX_MESSAGE = 64 << 20  # bytes of one answer from the program
PID_SENTINEL = 0x3A5EC0DE  # the seccomp filter's placeholder for "this process's pid"


def _read_payload() -> dict:
    chunks = []
    while True:
        chunk = os.read(0, 1 << 16)
        if not chunk:
            break
        chunks.append(chunk)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    return marshal.loads(b"".join(chunks))


# --------------------------------------------------------------------------------------------
# Namespaces level: build a minimal read-only root, the way bubblewrap does, with raw syscalls.
# --------------------------------------------------------------------------------------------

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_KEEPCAPS = 1, 4, 8
PR_SET_SECCOMP, SECCOMP_MODE_FILTER, PR_SET_NO_NEW_PRIVS = 22, 2, 38


def _libc():
    import ctypes

    return ctypes, ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret < 0:
        import ctypes

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _build_root(spec: dict) -> None:
    """Mount a tmpfs root holding only `spec`'s read-only binds, pivot into it, drop the host tree."""
    ctypes, libc = _libc()
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]

    def mount(src, target, fstype, flags, data=None):
        enc = [None if x is None else os.fsencode(x) for x in (src, target, fstype, data)]
        _check(libc.mount(enc[0], enc[1], enc[2], flags, enc[3]), f"mount {target}")

    new_root = spec["root"]
    mount(None, "/", None, MS_REC | MS_PRIVATE)
    mount("tmpfs", new_root, "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0755")

    def inside(path: str) -> str:
        return os.path.join(new_root, path.lstrip("/"))

    def make_dirs(path: str) -> None:
        os.makedirs(inside(path), mode=0o755, exist_ok=True)

    for kind, src, dst in spec["binds"]:
        if kind == "symlink":
            make_dirs(os.path.dirname(dst))
            os.symlink(src, inside(dst))
            continue
        if kind == "dir":
            make_dirs(dst)
        else:  # a file or a device node: bind onto an empty file
            make_dirs(os.path.dirname(dst))
            with open(inside(dst), "w"):
                pass
        mount(src, inside(dst), None, MS_BIND | MS_REC)
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
        if kind != "dev":
            flags |= MS_NODEV
        mount(None, inside(dst), None, flags)
    make_dirs("/proc")
    mount("proc", inside("/proc"), "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    make_dirs("/dev/shm")
    mount("tmpfs", inside("/dev/shm"), "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC,
          "size=1m,nr_inodes=64,mode=1777")
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, inside(f"/dev/{name}"))
    make_dirs(spec["workdir"])
    mount("tmpfs", inside(spec["workdir"]), "tmpfs", MS_NOSUID | MS_NODEV,
          f"size={spec['workdir_bytes']},nr_inodes={spec['workdir_entries']},mode=1777")

    machine = os.uname().machine
    if machine not in SYS_PIVOT_ROOT:
        raise OSError(f"pivot_root: unknown syscall number on {machine}")
    old = inside("/.old-root")
    os.mkdir(old)
    _check(libc.syscall(SYS_PIVOT_ROOT[machine], os.fsencode(new_root), os.fsencode(old)), "pivot_root")
    os.chdir("/")
    libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
    _check(libc.umount2(b"/.old-root", MNT_DETACH), "umount old root")
    os.rmdir("/.old-root")
    mount(None, "/", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def _prctl(option: int, arg: int, what: str) -> None:
    _, libc = _libc()
    _check(libc.prctl(option, arg, 0, 0, 0), what)


def _drop_privileges(uid: int, keep_read_caps: bool) -> None:
    """Become an otherwise unused uid: owns no file, its own RLIMIT_NPROC count, nothing to kill.

    `keep_read_caps`: at the rlimits level the interpreter may live where only root can read
    (a venv under /root). The uid then keeps CAP_DAC_READ_SEARCH alone, so that it can still
    import the standard library: it reads what uid 0 could read, and writes nothing root owns.
    """
    if keep_read_caps:
        _prctl(PR_SET_KEEPCAPS, 1, "prctl(KEEPCAPS)")
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise OSError("setuid did not take effect")
    if keep_read_caps:
        ctypes, libc = _libc()

        class Header(ctypes.Structure):
            _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))

        class Data(ctypes.Structure):
            _fields_ = (("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                        ("inheritable", ctypes.c_uint32))

        cap_dac_read_search = 1 << 2
        data = (Data * 2)()
        data[0].effective = data[0].permitted = cap_dac_read_search
        _check(libc.capset(ctypes.byref(Header(0x20080522, 0)), data), "capset")


def _tasks_of_uid(uid: int) -> int:
    """Processes and threads whose real uid is `uid`: what RLIMIT_NPROC counts against."""
    count = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(entry.path).st_uid == uid:
                count += len(os.listdir(os.path.join(entry.path, "task")))
        except OSError:  # gone meanwhile
            continue
    return count


def _set_limits(limits: dict) -> None:
    import resource

    names = {
        "cpu_s": resource.RLIMIT_CPU,
        "address_space_bytes": resource.RLIMIT_AS,
        "processes": resource.RLIMIT_NPROC,
        "file_size_bytes": resource.RLIMIT_FSIZE,
        "open_files": resource.RLIMIT_NOFILE,
        "core_bytes": resource.RLIMIT_CORE,
    }
    for key, which in names.items():
        value = limits.get(key)
        if value is None:
            continue
        _, hard = resource.getrlimit(which)
        value = int(value)
        if which == resource.RLIMIT_NPROC:
            # The kernel counts every task of the real uid, not this program's alone: without a
            # private uid (an unprivileged user) the user's other processes, and concurrent jobs,
            # would eat the allowance, so it is granted on top of what the uid runs already.
            value += _tasks_of_uid(os.getuid())
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        # CPU: the soft limit sends SIGXCPU (reported as a timeout); the hard one, a second later, SIGKILL.
        new_hard = value + 1 if which == resource.RLIMIT_CPU and hard == resource.RLIM_INFINITY else value
        resource.setrlimit(which, (value, new_hard))


# Landlock (Linux >= 5.13): file-system write rights handled by the ruleset, by ABI version.
LL_WRITE_FILE, LL_REMOVE_DIR, LL_REMOVE_FILE = 1 << 1, 1 << 4, 1 << 5
LL_MAKE = sum(1 << b for b in range(6, 13)) | (1 << 7)  # char, dir, reg, sock, fifo, block, sym
LL_REFER, LL_TRUNCATE = 1 << 13, 1 << 14
SYS_LANDLOCK = (444, 445, 446)  # create_ruleset, add_rule, restrict_self (same on every arch)


def landlock_abi() -> int:
    """Landlock ABI version of this kernel, 0 if it has none (or it is disabled)."""
    _, libc = _libc()
    version = libc.syscall(SYS_LANDLOCK[0], None, 0, 1)  # LANDLOCK_CREATE_RULESET_VERSION
    return max(0, version)


def _landlock_writes_only_under(workdir: str) -> None:
    """Allow file-system writes of any kind only beneath `workdir` (and to /dev/null)."""
    ctypes, libc = _libc()
    abi = landlock_abi()
    if abi < 1:
        raise OSError("Landlock is not available")
    handled = LL_WRITE_FILE | LL_REMOVE_DIR | LL_REMOVE_FILE | LL_MAKE
    handled |= LL_REFER if abi >= 2 else 0
    handled |= LL_TRUNCATE if abi >= 3 else 0
    attr = ctypes.c_uint64(handled)
    ruleset = libc.syscall(SYS_LANDLOCK[0], ctypes.byref(attr), ctypes.sizeof(attr), 0)
    _check(ruleset, "landlock_create_ruleset")

    class PathBeneath(ctypes.Structure):
        _pack_ = 1
        _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))

    try:
        for path, allowed in ((workdir, handled), (os.devnull, handled & (LL_WRITE_FILE | LL_TRUNCATE))):
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = PathBeneath(allowed, fd)
                _check(libc.syscall(SYS_LANDLOCK[1], ruleset, 1, ctypes.byref(rule), 0), f"landlock_add_rule {path}")
            finally:
                os.close(fd)
        _check(libc.syscall(SYS_LANDLOCK[2], ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)


def _install_seccomp(bpf: bytes) -> None:
    """Load the harness-compiled classic-BPF filter, with this process's pid put in its place."""
    import struct

    ctypes, libc = _libc()
    pid = os.getpid()
    insns = [list(struct.unpack_from("=HBBI", bpf, i)) for i in range(0, len(bpf), 8)]
    for insn in insns:
        if insn[3] == PID_SENTINEL:
            insn[3] = pid
    program = b"".join(struct.pack("=HBBI", *insn) for insn in insns)
    buf = ctypes.create_string_buffer(program, len(program))

    class SockFprog(ctypes.Structure):
        _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))

    fprog = SockFprog(len(insns), ctypes.cast(buf, ctypes.c_void_p))
    _check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0), "seccomp filter")


def _contain(cfg: dict, uid: int | None, workdir: str) -> None:
    """What both processes get after the fork: uid, rlimits, Landlock, seccomp (in that order:
    setuid needs capabilities, and the seccomp filter denies what the earlier steps use)."""
    if uid is not None:
        _drop_privileges(uid, bool(cfg.get("keep_read_caps")))
    _prctl(PR_SET_NO_NEW_PRIVS, 1, "prctl(NO_NEW_PRIVS)")
    _set_limits(cfg.get("limits") or {})
    if cfg.get("landlock"):
        _landlock_writes_only_under(workdir)
    if cfg.get("seccomp_bpf"):
        _install_seccomp(cfg["seccomp_bpf"])


# --------------------------------------------------------------------------------------------
# The Python-level guard: a PEP 578 audit hook in the program process. It cannot be removed
# once installed, and it vetoes (by raising) what a scored program has no business doing.
# --------------------------------------------------------------------------------------------

DENIED_EVENTS = frozenset(
    {
        # processes
        "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
        "subprocess.Popen", "os.startfile", "pty.spawn",
        # signals to other processes (a program must not kill its parent or group)
        "os.kill", "os.killpg", "signal.pthread_kill",
        # network
        "socket.connect", "socket.bind", "socket.sendto", "socket.sendmsg",
        # limits, introspection
        "resource.setrlimit", "resource.prlimit",
        "sys._current_frames", "gc.get_objects", "gc.get_referrers", "gc.get_referents",
        "sys.setprofile", "sys.settrace",
        "winreg.OpenKey",
    }
)

# event -> positions of (path, dir_fd) pairs that must stay inside the working directory
PATH_EVENTS = {
    "os.remove": ((0, 1),),
    "os.rmdir": ((0, 1),),
    "os.mkdir": ((0, 2),),
    "os.rename": ((0, 2), (1, 3)),
    "os.link": ((0, 2), (1, 3)),
    "os.symlink": ((1, 2),),
    "os.truncate": ((0, None),),
    "os.chmod": ((0, 2),),
    "os.chown": ((0, 3),),
    "os.utime": ((0, 3),),
    "os.chflags": ((0, None),),
    "os.lchflags": ((0, None),),
    "os.setxattr": ((0, None),),
    "os.removexattr": ((0, None),),
    "shutil.rmtree": ((0, 1),),
    "shutil.move": ((0, None), (1, None)),
    "shutil.copyfile": ((1, None),),
    "shutil.copytree": ((1, None),),
    "shutil.chown": ((0, None),),
}
CREATING_EVENTS = frozenset({"os.mkdir", "os.link", "os.symlink"})

# Entries one program may create (files opened for writing, directories, links): with
# RLIMIT_FSIZE this bounds the disk it can fill and the time cleanup takes at the rlimits level.
MAX_FILES_WRITTEN = 256
WRITABLE_DEVICES = frozenset({"/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty"})


def _install_guard(workdir: str) -> None:
    realpath, join, getcwd, readlink = os.path.realpath, os.path.join, os.getcwd, os.readlink
    fsdecode, getpid = os.fsdecode, os.getpid
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    root = realpath(workdir)
    root_prefix = root.rstrip("/") + "/"
    denied, path_events, devices, creating = DENIED_EVENTS, PATH_EVENTS, WRITABLE_DEVICES, CREATING_EVENTS

    def resolve(path, dir_fd) -> str:
        path = fsdecode(path)
        if not path.startswith("/"):
            at_fd = isinstance(dir_fd, int) and dir_fd >= 0
            base = readlink(f"/proc/self/fd/{dir_fd}") if at_fd else getcwd()
            path = join(base, path)
        return path

    def inside(path, dir_fd=None) -> bool:
        if isinstance(path, int):  # an fd: it was checked when it was opened
            return True
        resolved = realpath(resolve(path, dir_fd))
        return resolved == root or resolved.startswith(root_prefix)

    created: set[str] = set()

    def deny(event: str, detail: str = ""):
        raise PermissionError(f"sandbox: {event} is not allowed{detail}")

    def count(resolved: str) -> None:
        if resolved not in created:
            if len(created) >= MAX_FILES_WRITTEN:
                deny("creating files", f" (more than {MAX_FILES_WRITTEN} entries)")
            created.add(resolved)

    # _posixsubprocess.fork_exec is not audited in 3.11: disarm it and forbid re-importing it.
    import _posixsubprocess

    def _no_fork_exec(*_args, **_kwargs):
        deny("subprocess")

    _posixsubprocess.fork_exec = _no_fork_exec
    reimport_denied = frozenset({"_posixsubprocess", "_ctypes", "ctypes", "_xxsubinterpreters"})

    def hook(event: str, args: tuple) -> None:
        if event in denied or event[:7] == "ctypes.":
            deny(event)
        if event == "open":
            path, mode, flags = args
            if path is None or isinstance(path, int):
                return
            text = fsdecode(path)
            if text in devices:
                return
            resolved = realpath(resolve(text, None))
            if resolved.startswith("/proc/"):
                pid = resolved[6:].split("/", 1)[0]
                if pid.isdigit() and int(pid) != getpid():
                    deny("open", f" ({text}: another process)")
            writing = (isinstance(flags, int) and flags & write_flags) or (
                isinstance(mode, str) and any(c in mode for c in "wax+")
            )
            if not writing:
                return
            if not (resolved == root or resolved.startswith(root_prefix)):
                deny("open", f" ({text}: outside the working directory)")
            count(resolved)
        elif event in path_events:
            for path_at, fd_at in path_events[event]:
                path = args[path_at] if path_at < len(args) else None
                dir_fd = args[fd_at] if fd_at is not None and fd_at < len(args) else None
                if path is not None and not inside(path, dir_fd):
                    deny(event, f" ({fsdecode(path)}: outside the working directory)")
            if event in creating:
                count(f"{event}:{len(created)}")
        elif event == "import" and args[0] in reimport_denied:
            deny("import", f" ({args[0]})")

    sys.addaudithook(hook)
    for name in ("ctypes", "_ctypes", "ctypes.util", "ctypes._endian"):
        sys.modules.pop(name, None)


def _install_exit_builtins() -> None:
    """`exit()` and `quit()` as in a normal interpreter: `-S` skips `site`, which defines them,
    and a program calling them must see SystemExit (a scored failure), not a NameError."""

    class Quitter:
        def __init__(self, name: str) -> None:
            self.name = name

        def __repr__(self) -> str:
            return f"Use {self.name}() to exit"

        def __call__(self, code=None):
            raise SystemExit(code)

    builtins.exit = Quitter("exit")
    builtins.quit = Quitter("quit")


# --------------------------------------------------------------------------------------------
# Values across the process boundary: tagged JSON. Scalars (None, bool, small int, float, str)
# are JSON's own; every JSON array is tagged by its first element. The judge accepts nothing
# else, so whatever bytes the program sends, the judge ends up with plain values or handles.
# --------------------------------------------------------------------------------------------

SAFE_INT = 1 << 53
MAX_DEPTH = 200


def encode(obj, handles: dict | None, depth: int = 0):
    """`obj` as tagged JSON data. Objects of other types become handles (program side) or a
    TypeError (judge side, `handles is None`); handles on the judge side are `Remote`s."""
    kind = type(obj)
    if obj is None or kind is bool or kind is str or kind is float:
        return obj
    if kind is int:
        return obj if -SAFE_INT < obj < SAFE_INT else ["i", format(obj, "x")]
    if depth > MAX_DEPTH:
        raise RecursionError("value nested too deeply")
    tag = {list: "l", tuple: "t", set: "s", frozenset: "f"}.get(kind)
    if tag:
        return [tag, *(encode(x, handles, depth + 1) for x in obj)]
    if kind is dict:
        return ["d", *([encode(k, handles, depth + 1), encode(v, handles, depth + 1)] for k, v in obj.items())]
    if kind is bytes:
        return ["b", obj.hex()]
    if kind is bytearray:
        return ["y", obj.hex()]
    if kind is complex:
        return ["c", obj.real, obj.imag]
    fields = getattr(type(obj), "_fields", None) if isinstance(obj, tuple) else None
    if type(fields) is tuple and all(type(f) is str for f in fields) and len(fields) == tuple.__len__(obj):
        # a namedtuple: rebuilt by the judge as its own namedtuple (equal to tuples, with attributes)
        return ["n", str(type(obj).__name__), list(fields), *(encode(x, handles, depth + 1) for x in tuple.__iter__(obj))]
    for base in PLAIN_BASES:  # Counter, OrderedDict, IntEnum...: sent as the plain base
        if isinstance(obj, base):
            return encode(_as_plain(obj, base), handles, depth)
    if handles is None:
        if isinstance(obj, Remote):
            return ["h", obj._handle]
        raise TypeError(f"cannot pass a {kind.__name__} to the program under test")
    key = id(obj)
    handles[key] = obj
    return ["h", key]


PLAIN_BASES = (bool, int, float, str, bytes, bytearray, complex, list, tuple, dict, set, frozenset)


def _as_plain(obj, base: type):
    """A subclass instance as an exact instance of its builtin base, through the base's own
    methods (an overridden `__eq__`, `__iter__` or `__int__` plays no part)."""
    if base in (int, bool):
        return int.__int__(obj)
    if base is float:
        return float.__float__(obj)
    if base is complex:
        return complex(float.__float__(obj.real), float.__float__(obj.imag))
    if base is str:
        return str.__str__(obj)
    if base in (bytes, bytearray):
        return base(memoryview(obj))
    if base is dict:
        return {k: v for k, v in dict.items(obj)}
    return base(base.__iter__(obj))


_NAMEDTUPLES: dict = {}


def _namedtuple(name: str, fields: tuple) -> type:
    """The judge's own namedtuple class for a program's namedtuple (validated by collections)."""
    key = (name, fields)
    if key not in _NAMEDTUPLES:
        import collections

        if len(_NAMEDTUPLES) > 1000 or not all(type(f) is str for f in fields):
            raise ValueError("malformed namedtuple from the other process")
        _NAMEDTUPLES[key] = collections.namedtuple(name, fields)
    return _NAMEDTUPLES[key]


def decode(data, make_handle, depth: int = 0):
    """The inverse of `encode`, for data from the other process: strict about types."""
    kind = type(data)
    if data is None or kind is bool or kind is str or kind is float:
        return data
    if kind is int:
        return data
    if kind is not list or not data or type(data[0]) is not str or depth > MAX_DEPTH:
        raise ValueError("malformed value from the other process")
    tag, rest = data[0], data[1:]
    if tag in ("l", "t", "s", "f"):
        items = [decode(x, make_handle, depth + 1) for x in rest]
        return {"l": list, "t": tuple, "s": set, "f": frozenset}[tag](items)
    if tag == "d":
        out = {}
        for pair in rest:
            if type(pair) is not list or len(pair) != 2:
                raise ValueError("malformed dict from the other process")
            out[decode(pair[0], make_handle, depth + 1)] = decode(pair[1], make_handle, depth + 1)
        return out
    if len(rest) == 1 and type(rest[0]) is str and tag in ("b", "y", "i"):
        if tag == "i":
            return int(rest[0], 16)
        raw = bytes.fromhex(rest[0])
        return raw if tag == "b" else bytearray(raw)
    if tag == "c" and len(rest) == 2 and all(type(x) in (int, float) for x in rest):
        return complex(rest[0], rest[1])
    if tag == "n" and len(rest) >= 2 and type(rest[0]) is str and type(rest[1]) is list:
        return _namedtuple(rest[0], tuple(rest[1]))(*(decode(x, make_handle, depth + 1) for x in rest[2:]))
    if tag == "h" and len(rest) == 1 and type(rest[0]) is int:
        return make_handle(rest[0])
    raise ValueError("malformed value from the other process")


def _send(fd: int, obj, dumps) -> None:
    data = dumps(obj, allow_nan=True).encode("utf-8")
    data = len(data).to_bytes(4, "big") + data
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _recv(fd: int, loads):
    """One message, or None at end of file (the other process is gone)."""

    def exactly(n: int) -> bytes | None:
        buf = bytearray()
        while len(buf) < n:
            chunk = os.read(fd, min(n - len(buf), 1 << 20))
            if not chunk:
                return None
            buf += chunk
        return bytes(buf)

    head = exactly(4)
    if head is None:
        return None
    size = int.from_bytes(head, "big")
    if size > MAX_MESSAGE:
        raise ValueError(f"message of {size} bytes from the other process")
    body = exactly(size)
    return None if body is None else loads(body.decode("utf-8"))


# --------------------------------------------------------------------------------------------
# The program process: run the untrusted code, answer the judge's requests.
# --------------------------------------------------------------------------------------------

MUTABLE_ARGS = (list, dict, set, bytearray)


def _serve(requests: int, answers: int, namespace: dict, dumps, loads, _exit) -> None:
    """Answer requests until the judge closes its end. Runs on a thread with a large stack."""
    handles: dict = {}
    memory_error, base_exception, system_exit = MemoryError, BaseException, SystemExit
    _exec, _compile, _len, _iter, _list = exec, compile, len, iter, list

    def lookup(key):
        if key not in handles:
            raise ValueError("unknown handle")
        return handles[key]

    while True:
        try:
            request = _recv(requests, loads)
        except base_exception:
            _exit(5)
        if request is None:
            _exit(0)
        try:
            op = request[0]
            writeback = None
            if op == "exec":
                _, name, source = request
                _exec(_compile(source, name, "exec"), namespace)
                value = None
            elif op == "globals":
                value = {}
                for name, obj in _list(namespace.items()):
                    if name.startswith("__") and name.endswith("__"):
                        continue
                    if type(obj) is type(sys):
                        value[name] = ["m", obj.__name__]
                    else:
                        value[name] = encode(obj, handles)
                _send(answers, ["ok", value, None], dumps)
                continue
            else:
                target = lookup(request[1])
                if op == "call":
                    args = [decode(a, lookup) for a in request[2]]
                    kwargs = {k: decode(v, lookup) for k, v in request[3].items()}
                    value = target(*args, **kwargs)
                    writeback = [encode(a, handles) if type(a) in MUTABLE_ARGS else None for a in args]
                elif op == "getattr":
                    value = getattr(target, request[2])
                elif op == "getitem":
                    value = target[decode(request[2], lookup)]
                elif op == "iter":
                    value = _list(_iter(target))
                elif op == "len":
                    value = _len(target)
                elif op == "contains":
                    value = decode(request[2], lookup) in target
                elif op == "bool":
                    value = bool(target)
                elif op == "str":
                    value = str(target)
                elif op == "repr":
                    value = repr(target)
                else:
                    raise ValueError(f"unknown request {op!r}")
            _send(answers, ["ok", encode(value, handles), writeback], dumps)
        except memory_error:
            _send(answers, ["memory"], dumps)
        except system_exit as exc:
            _send(answers, ["exit", repr(exc.code)[:200]], dumps)
        except base_exception as exc:
            try:
                _send(answers, ["raise", type(exc).__name__, str(exc)[:REPORT_ERROR_LIMIT]], dumps)
            except base_exception:
                _send(answers, ["raise", "UnreportableError", ""], dumps)


def _program_process(cfg: dict, requests: int, answers: int, judge_pid: int) -> None:
    """The forked child: contain itself, then run the untrusted code behind `_serve`."""
    _exit = os._exit
    try:
        drop = cfg.get("drop_to")
        _contain(cfg, drop[1] if drop else None, cfg["cwd"])
        _prctl(PR_SET_PDEATHSIG, 9, "prctl(PDEATHSIG)")  # after setuid, which clears it
        if os.getppid() != judge_pid:
            _exit(6)
        os.chdir(cfg["cwd"])
        import _thread
        import faulthandler
        import json
        import time

        faulthandler.enable(all_threads=True)  # a segfault leaves a readable traceback on stderr
        if cfg.get("guard", True):
            _install_guard(cfg["cwd"])
    except BaseException as exc:
        os.write(2, f"sandbox setup failed in the program process: {exc!r}\n".encode())
        _exit(71)
    _install_exit_builtins()
    module = type(sys)(cfg.get("module_name") or "__main__")
    module.__dict__["__builtins__"] = builtins
    sys.modules[module.__name__] = module
    del cfg
    _thread.stack_size(64 << 20)  # a roomy C stack for deep legitimate recursion
    _thread.start_new_thread(_serve, (requests, answers, module.__dict__, json.dumps, json.loads, _exit))
    _thread.stack_size(0)
    del module
    while True:
        time.sleep(3600)


# --------------------------------------------------------------------------------------------
# The judge: runs the trusted test code against the program, through `Remote` handles.
# --------------------------------------------------------------------------------------------


class ProgramGone(Exception):
    """The program process ended while the judge was waiting for an answer."""


class Remote:
    """An object that lives in the program process. Calls, attribute reads, indexing and
    iteration are forwarded; the answers come back as plain values or further handles.
    Comparison is by identity: a program-side `__eq__` never decides a test."""

    __slots__ = ("_channel", "_handle")

    def __init__(self, channel, handle: int) -> None:
        object.__setattr__(self, "_channel", channel)
        object.__setattr__(self, "_handle", handle)

    def __call__(self, *args, **kwargs):
        return self._channel.call(self, args, kwargs)

    def __getattr__(self, name: str):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._channel.ask(["getattr", self._handle, name])

    def __getitem__(self, key):
        return self._channel.ask(["getitem", self._handle, encode(key, None)])

    def __iter__(self):
        return iter(self._channel.ask(["iter", self._handle]))

    def __len__(self) -> int:
        value = self._channel.ask(["len", self._handle])
        if type(value) is not int:
            raise TypeError("len() of a program object is not an int")
        return value

    def __contains__(self, item) -> bool:
        return self._channel.ask(["contains", self._handle, encode(item, None)]) is True

    def __bool__(self) -> bool:
        return self._channel.ask(["bool", self._handle]) is True

    def __str__(self) -> str:
        value = self._channel.ask(["str", self._handle])
        return value if type(value) is str else "<program object>"

    def __repr__(self) -> str:
        value = self._channel.ask(["repr", self._handle])
        return value if type(value) is str else "<program object>"

    __eq__ = object.__eq__
    __ne__ = object.__ne__
    __hash__ = object.__hash__


class Channel:
    """The judge's end of the pipes to the program process."""

    def __init__(self, requests: int, answers: int, child: int, dumps, loads) -> None:
        self.requests, self.answers, self.child = requests, answers, child
        self.dumps, self.loads = dumps, loads

    def gone(self) -> ProgramGone:
        import signal

        try:
            _, status = os.waitpid(self.child, 0)
        except ChildProcessError:
            return ProgramGone("the program process is gone")
        if os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            try:
                name = signal.Signals(sig).name
            except ValueError:
                name = str(sig)
            return ProgramGone(f"signal {sig} {name}")
        return ProgramGone(f"exit {os.WEXITSTATUS(status)}")

    def ask(self, request: list, writeback_into=None):
        try:
            _send(self.requests, request, self.dumps)
            answer = _recv(self.answers, self.loads)
        except BrokenPipeError:
            answer = None
        if answer is None:
            raise self.gone()
        if type(answer) is not list or not answer or type(answer[0]) is not str:
            raise ValueError("malformed answer from the program process")
        status = answer[0]
        if status == "ok" and len(answer) == 3:
            value = decode(answer[1], self.handle)
            if writeback_into is not None and type(answer[2]) is list:
                for original, new in zip(writeback_into, answer[2]):
                    if new is not None and type(original) in MUTABLE_ARGS:
                        _write_back(original, decode(new, self.handle))
            return value
        if status == "memory":
            raise MemoryError("the program ran out of memory")
        if status == "exit" and len(answer) == 2:
            raise SystemExit(str(answer[1]))
        if status == "raise" and len(answer) == 3 and type(answer[1]) is str and type(answer[2]) is str:
            raise _rebuild_exception(answer[1], answer[2])
        raise ValueError("malformed answer from the program process")

    def handle(self, key: int) -> Remote:
        return Remote(self, key)

    def call(self, remote: Remote, args: tuple, kwargs: dict):
        encoded = [encode(a, None) for a in args]
        named = {str(k): encode(v, None) for k, v in kwargs.items()}
        return self.ask(["call", remote._handle, encoded, named], writeback_into=list(args))

    def run(self, name: str, source: str) -> None:
        self.ask(["exec", name, source])

    def namespace(self) -> dict:
        """The program's globals as the judge sees them: values, handles, and the judge's own
        imports of the modules the program imported."""
        try:
            _send(self.requests, ["globals"], self.dumps)
            answer = _recv(self.answers, self.loads)
        except BrokenPipeError:
            answer = None
        if answer is None:
            raise self.gone()
        if type(answer) is not list or len(answer) != 3 or answer[0] != "ok" or type(answer[1]) is not dict:
            raise ValueError("malformed answer from the program process")
        names: dict = {}
        for name, data in answer[1].items():
            if type(data) is list and len(data) == 2 and data[0] == "m" and type(data[1]) is str:
                try:  # noqa: SIM105 - contextlib is not imported in the runner
                    names[name] = __import__(data[1], fromlist=["_"])
                except BaseException:
                    pass
            else:
                names[name] = decode(data, self.handle)
        return names


def _write_back(original, new) -> None:
    """The program mutated an argument in place: do the same to the judge's object."""
    if type(original) is not type(new):
        return
    if type(original) in (list, bytearray):
        original[:] = new
    else:
        original.clear()
        original.update(new)


def _rebuild_exception(type_name: str, message: str) -> BaseException:
    """The program's exception as the judge raises it: the builtin class of that name when there
    is one (so `except ValueError` in a test works), else a new class carrying the name."""
    cls = getattr(builtins, type_name, None)
    if (isinstance(cls, type) and issubclass(cls, Exception)) or cls is MemoryError:
        try:
            return cls(message)
        except BaseException:
            pass
    return type(type_name, (Exception,), {})(message)


def main() -> None:
    _write, _exit = os.write, os._exit
    cfg = _read_payload()
    report_fd = int(cfg["report_fd"])

    def report_error(phase: str, index: int, exc: BaseException) -> None:
        try:
            name = type(exc).__name__
            message = str(exc)[:REPORT_ERROR_LIMIT]
            if isinstance(exc, ProgramGone):
                name, message = "ProgramGone", str(exc)
            _write(report_fd, f"ERR {phase} {index} {name} {message!r}\n".encode("utf-8", "replace"))
        except BaseException:
            _write(report_fd, b"ERR ? -1 UnreportableError ''\n")

    try:
        if cfg.get("build_root"):
            _build_root(cfg["build_root"])
        import _thread
        import json
        import signal  # noqa: F401
        import time  # noqa: F401

        requests_r, requests_w = os.pipe()
        answers_r, answers_w = os.pipe()
        judge_pid = os.getpid()
        child = os.fork()
        if child == 0:
            os.close(report_fd)
            os.close(int(cfg["lifeline_fd"]))
            os.close(requests_w)
            os.close(answers_r)
            _program_process(cfg, requests_r, answers_w, judge_pid)
            _exit(0)
        os.close(requests_r)
        os.close(answers_w)
        drop = cfg.get("drop_to")
        _contain(cfg, drop[0] if drop else None, cfg["cwd"])
        _prctl(PR_SET_DUMPABLE, 0, "prctl(DUMPABLE)")  # /proc/<judge>/{mem,fd} closed to the program

        def lifeline(fd: int = int(cfg["lifeline_fd"])) -> None:
            try:
                os.read(fd, 1)  # returns at EOF: the harness is gone
            finally:
                _exit(9)  # the program process follows (PDEATHSIG)

        _thread.start_new_thread(lifeline, ())
        os.chdir(cfg["cwd"])
    except BaseException as exc:
        report_error("sandbox", -1, exc)
        _exit(70)

    channel = Channel(requests_w, answers_r, child, json.dumps, json.loads)
    tests = cfg.get("tests")
    namespace: dict = {"__name__": "__judge__", "__builtins__": builtins}
    passed = 0
    phase, index = "program", 0
    try:
        if tests is None:
            # A whole program: its top-level asserts are checked here, everything else runs there.
            for kind, source in cfg["segments"]:
                if kind == "exec":
                    channel.run("<program>", source)
                else:
                    namespace.update(channel.namespace())
                    exec(compile(source, "<program>", "exec"), namespace)
        else:
            channel.run("<program>", cfg["program"])
            if cfg.get("setup"):
                phase = "setup"
                channel.run("<setup>", cfg["setup"])
            namespace.update(channel.namespace())
            phase = "test"
            for index, test in enumerate(tests):
                exec(compile(test, f"<test {index}>", "exec"), namespace)
                passed += 1
    except BaseException as exc:
        report_error(phase, index if phase == "test" else 0, exc)
        _exit(4 if isinstance(exc, MemoryError) else 3)
    _write(report_fd, f"DONE {passed}\n".encode("ascii"))
    _exit(0)  # the program process gets SIGKILL from PDEATHSIG; the harness sweeps the rest


if __name__ == "__main__":
    main()
