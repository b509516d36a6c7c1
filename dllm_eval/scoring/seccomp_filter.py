"""The seccomp filter every sandboxed process runs under, compiled once with libseccomp.

Why a filter on top of the other layers: the Python guard only sees what raises an audit event
(`os.pidfd_open`, `signal.pidfd_send_signal` and `os.mknod` raise none), and at the rlimits level
there is no namespace around the program. The filter is the one layer that holds the same way at
every level. It allows everything a test program needs and denies, with EPERM:

* signals to any process but the caller itself (`kill`, `tgkill`, `rt_sigqueueinfo`,
  `rt_tgsigqueueinfo` whose pid is not its own; `tkill`, `pidfd_open`, `pidfd_send_signal`,
  `pidfd_getfd` always). Stricter than "its own process group": the group also holds the judge;
* new processes (`fork`, `vfork`, `clone` without CLONE_THREAD, `execve`, `execveat`; `clone3`
  answers ENOSYS so that the C library falls back to `clone` for threads), `setsid`/`setpgid`
  (leaving the process group that the harness kills);
* `ptrace`, `process_vm_readv`/`writev`, `kcmp`; `mknod`/`mknodat` (device files and FIFOs);
  `socket` (no test program needs the network; `socketpair` stays allowed);
* mount, namespace and keyring calls, module loading, bpf, perf events, userfaultfd, reboot,
  swap, open_by_handle_at and the like.

The filter is compiled in the harness (`pyseccomp`, or Debian's `seccomp` binding, which has
the same interface) and handed to the runner as classic BPF: the runner uses only the standard
library. The one value that differs per process, its own pid, is compiled as `PID_SENTINEL`
and patched by the runner just before it loads the filter. Other architectures' system calls
(e.g. the 32-bit ABI on x86-64) kill the process, libseccomp's default.
"""

from __future__ import annotations

import errno
import functools
import tempfile

from dllm_eval.errors import UserError
from dllm_eval.scoring._runner import PID_SENTINEL

CLONE_THREAD = 0x00010000

ALWAYS_DENIED = (
    # signals and process handles
    "tkill", "pidfd_open", "pidfd_send_signal", "pidfd_getfd",
    # new processes, leaving the process group
    "fork", "vfork", "execve", "execveat", "setsid", "setpgid",
    # other processes' memory
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    # device files and FIFOs; network sockets (socketpair stays allowed)
    "mknod", "mknodat", "socket",
    # mounts and namespaces
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns", "fsopen", "fsconfig", "fsmount",
    "fspick", "move_mount", "open_tree", "mount_setattr",
    # keyrings
    "add_key", "request_key", "keyctl",
    # the kernel itself
    "bpf", "perf_event_open", "userfaultfd", "kexec_load", "kexec_file_load", "init_module",
    "finit_module", "delete_module", "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog",
    "open_by_handle_at", "name_to_handle_at", "iopl", "ioperm", "vhangup", "lookup_dcookie",
)
OWN_PID_ONLY = ("kill", "tgkill", "rt_sigqueueinfo", "rt_tgsigqueueinfo")  # first argument: a pid


def _binding():
    try:
        import pyseccomp as seccomp

        seccomp.SyscallFilter  # noqa: B018 - a stray folder named pyseccomp is not the binding
    except (ImportError, AttributeError):
        try:
            import seccomp  # Debian's python3-seccomp: the same interface
        except ImportError:
            raise UserError(
                "the sandbox needs a libseccomp binding: pip install pyseccomp "
                "(and the libseccomp2 library: apt-get install -y libseccomp2)"
            ) from None
    return seccomp


def kernel_has_seccomp() -> bool:
    """Whether this kernel can filter system calls (CONFIG_SECCOMP_FILTER)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            return any(line.startswith("Seccomp:") for line in fh)
    except OSError:
        return False


@functools.cache
def compiled_filter() -> bytes:
    """The filter as classic BPF (struct sock_filter[]), ready for prctl(PR_SET_SECCOMP)."""
    if not kernel_has_seccomp():
        raise UserError("this kernel has no seccomp filtering (CONFIG_SECCOMP_FILTER), and the code sandbox "
                        "refuses to run model-written programs without it; use a Linux kernel built with it")
    seccomp = _binding()
    try:
        filt = seccomp.SyscallFilter(seccomp.ALLOW)
        deny = seccomp.ERRNO(errno.EPERM)
        for name in ALWAYS_DENIED:
            _add(seccomp, filt, deny, name)
        for name in OWN_PID_ONLY:
            _add(seccomp, filt, deny, name, seccomp.Arg(0, seccomp.NE, PID_SENTINEL))
        _add(seccomp, filt, deny, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
        _add(seccomp, filt, seccomp.ERRNO(errno.ENOSYS), "clone3")
        with tempfile.TemporaryFile() as fh:  # export_bpf wants a file object
            filt.export_bpf(fh)
            fh.seek(0)
            bpf = fh.read()
    except OSError as exc:
        raise UserError(f"could not build the sandbox's seccomp filter with libseccomp: {exc}") from exc
    if not bpf or len(bpf) % 8:
        raise UserError("libseccomp exported an empty or malformed seccomp filter")
    return bpf


def _add(seccomp, filt, action: int, name: str, *args) -> None:
    """Add one rule, skipping a system call this architecture does not have (e.g. `fork` on arm64)."""
    try:
        number = seccomp.resolve_syscall(seccomp.Arch.NATIVE, name) if hasattr(seccomp, "resolve_syscall") else 0
    except (OSError, ValueError):
        return
    if isinstance(number, int) and number < 0:
        return
    filt.add_rule(action, name, *args)
