"""The OS-level jail of the "python" reward: a bubblewrap (bwrap) command line and its seccomp filter.

`jail_command(...)` wraps the reward child's interpreter in bwrap (Debian package `bubblewrap`):

- **namespaces**: new PID, network, IPC, UTS and cgroup namespaces, plus a mount namespace whose root
  is an empty tmpfs holding only the Python runtime (interpreter, standard library and libpython,
  read-only; no site-packages), the shared-library folders it links against (read-only), the child script (read-only), a fresh /proc of the new PID namespace, a minimal
  /dev and a small private scratch /tmp. No /etc, no /home, no /root, no artifact store, no host /tmp.
  The PID namespace dies with its first process, so nothing the code starts outlives the call.
- **identity**: when the worker runs as root, bwrap keeps only CAP_SETUID/CAP_SETGID/CAP_SETPCAP for
  the child, which empties its capability bounding set and drops to uid/gid 65534 (nobody) before any
  user code runs, clearing every capability; an
  unprivileged worker gets a user namespace in which the child is 65534 and holds no capability.
- **seccomp** (`seccomp_filter_bpf`, compiled with libseccomp through `pyseccomp`): refuses process
  creation (fork, vfork, clone without CLONE_THREAD; clone3 answers ENOSYS so glibc falls back to
  clone), ptrace and cross-process memory access, mount and every namespace call (setns, unshare),
  bpf, keyctl, perf_event_open, module loading, reboot and similar, and sockets of every family but
  AF_UNIX (no raw, packet, netlink or IP sockets). Syscalls of other ABIs (x32, i386) kill the process.
  bwrap sets no_new_privs before loading it.
- **environment**: cleared; only LANG is set.

Resource limits (address space, CPU, file size, open files, threads) are set by the child itself
(remix_engine/sandbox_child.py) before it drops privileges, hard limits equal to soft ones.

`REMIX_REWARD_SANDBOX` picks the mode: `bwrap` (the default) or `process`, a documented weaker mode
for trusted single-tenant setups (a plain child process with rlimits, a network namespace when the
kernel allows one and a Python audit hook; no filesystem jail). In `bwrap` mode a worker without the
tool refuses the job's python reward with `SandboxUnavailable` instead of running it unjailed.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import sys
import sysconfig
from pathlib import Path

MODE_ENV = "REMIX_REWARD_SANDBOX"
MODES = ("bwrap", "process")
SANDBOX_UID = 65534
SCRATCH_BYTES = 16 * 1024 * 1024  # the private /tmp (a tmpfs of this size)
CHILD_PATH_INSIDE = "/sandbox/child.py"

# Denied outright (EPERM). Most need a capability the child no longer has; refusing them in the
# kernel's syscall entry as well means a kernel bug behind one of them is out of reach.
DENIED_SYSCALLS = (
    "fork", "vfork",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd", "pidfd_open",
    "mount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree", "fsopen", "fsconfig",
    "fsmount", "fspick", "mount_setattr",
    "setns", "unshare",
    "bpf", "keyctl", "add_key", "request_key", "perf_event_open", "userfaultfd", "io_uring_setup",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "iopl", "ioperm",
    "open_by_handle_at", "name_to_handle_at", "lookup_dcookie", "fanotify_init",
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "sethostname", "setdomainname",
    "personality",
)  # fmt: skip
CLONE_THREAD = 0x00010000
AF_UNIX = 1


class SandboxUnavailable(RuntimeError):
    """The configured sandbox cannot run on this worker; the job must not run its python reward."""


def sandbox_mode() -> str:
    mode = os.environ.get(MODE_ENV, "bwrap").strip().lower() or "bwrap"
    if mode not in MODES:
        raise SandboxUnavailable(f"{MODE_ENV}={mode!r} is not a sandbox mode; use one of {', '.join(MODES)}")
    return mode


def bwrap_path() -> str:
    path = shutil.which("bwrap")
    if path is None:
        raise SandboxUnavailable(
            "the python reward runs in a bubblewrap sandbox, but `bwrap` is not installed on this worker "
            f"(apt-get install bubblewrap); an operator may set {MODE_ENV}=process to accept weaker "
            "isolation for trusted tenants"
        )
    return path


@functools.lru_cache(maxsize=1)
def seccomp_filter_bpf() -> bytes:
    """The compiled (classic BPF) seccomp program bwrap loads into the sandbox."""
    try:
        import pyseccomp as seccomp
    except (ImportError, OSError) as error:  # OSError: libseccomp.so.2 missing
        raise SandboxUnavailable(f"the sandbox needs libseccomp and the pyseccomp package: {error}") from error
    eperm = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(seccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        rules.add_rule(eperm, name)
    # A new thread is fine; a new process is not (posix_spawn and fork_exec use clone too).
    rules.add_rule(eperm, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")  # its flags live in memory BPF cannot read
    rules.add_rule(eperm, "socket", seccomp.Arg(0, seccomp.NE, AF_UNIX))
    rules.add_rule(eperm, "socketpair", seccomp.Arg(0, seccomp.NE, AF_UNIX))
    read_end, write_end = os.pipe()
    try:
        with os.fdopen(write_end, "wb") as sink:
            rules.export_bpf(sink)
        with os.fdopen(read_end, "rb") as source:
            return source.read()
    except Exception:
        os.close(read_end)
        raise


def runtime_interpreter() -> str:
    """The base interpreter (outside any virtualenv): the sandbox mounts only its installation."""
    name = f"python{sys.version_info.major}.{sys.version_info.minor}"
    candidate = Path(sys.base_prefix) / "bin" / name
    return str(candidate if candidate.exists() else Path(os.path.realpath(sys.executable)))


def _library_mounts() -> list[str]:
    """Read-only binds of the folders the interpreter's shared libraries live in (libc, libffi, libssl...)."""
    arch = sysconfig.get_config_var("MULTIARCH") or ""
    args: list[str] = []
    for top in ("/lib", "/lib64", "/lib32", "/libx32"):
        if os.path.islink(top):  # merged /usr: /lib -> usr/lib
            args += ["--symlink", os.readlink(top), top]
    for folder in (f"/usr/lib/{arch}", "/usr/lib64", f"/lib/{arch}", "/lib64"):
        if arch == "" and folder.endswith("/"):
            continue
        if os.path.isdir(folder) and not os.path.islink(folder) and not _under_symlink(folder):
            args += [*_traversable_parents(folder), "--ro-bind", folder, folder]
    return args


def _under_symlink(path: str) -> bool:
    parent = os.path.dirname(path)
    while parent not in ("/", ""):
        if os.path.islink(parent):
            return True
        parent = os.path.dirname(parent)
    return False


def _traversable_parents(path: str) -> list[str]:
    """Create the folders above a mount point searchable by the sandbox uid (bwrap copies /root's 0700)."""
    args: list[str] = []
    parts = Path(path).parts[1:-1]
    for depth in range(1, len(parts) + 1):
        args += ["--perms", "0755", "--dir", "/" + "/".join(parts[:depth])]
    return args


def runtime_paths() -> list[str]:
    """What of the Python installation the jail shows: the interpreter, its standard library and
    libpython (when shared); not its site-packages, not the rest of its prefix (/usr/bin for a system
    Python)."""
    paths = {os.path.realpath(runtime_interpreter())}
    for key in ("stdlib", "platstdlib"):
        paths.add(os.path.realpath(sysconfig.get_paths()[key]))
    if sysconfig.get_config_var("Py_ENABLE_SHARED"):
        libdir = Path(os.path.realpath(sysconfig.get_config_var("LIBDIR") or sys.base_prefix + "/lib"))
        paths.update(str(p) for p in libdir.glob(f"libpython{sys.version_info.major}.{sys.version_info.minor}*.so*"))
    return sorted(paths)


def jail_command(child_script: Path, seccomp_fd: int, *, info_fd: int) -> list[str]:
    """The bwrap command line running `child_script` with the base interpreter inside the jail."""
    runtime = []
    for path in runtime_paths():
        runtime += [*_traversable_parents(path), "--ro-bind", path, path]
    as_root = os.geteuid() == 0
    args = [
        bwrap_path(),
        "--unshare-pid", "--unshare-net", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try",
        "--die-with-parent", "--new-session", "--clearenv", "--setenv", "LANG", "C.UTF-8",
        "--hostname", "reward-sandbox",
        "--tmpfs", "/",
        *runtime,
        *_library_mounts(),
        *_traversable_parents(CHILD_PATH_INSIDE),
        "--ro-bind", str(child_script), CHILD_PATH_INSIDE,
        "--proc", "/proc", "--dev", "/dev",
        "--perms", "1777", "--size", str(SCRATCH_BYTES), "--tmpfs", "/tmp",
        "--remount-ro", "/",
        "--chdir", "/tmp",
        "--seccomp", str(seccomp_fd),
        "--info-fd", str(info_fd),  # {"child-pid": <host pid of the jail's PID 1>}
    ]  # fmt: skip
    if as_root:
        # Root in no user namespace: the child keeps just enough to become nobody, then has nothing.
        args += ["--cap-drop", "ALL"]
        for cap in ("CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP"):
            args += ["--cap-add", cap]
    else:
        args += ["--unshare-user", "--disable-userns", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
    return [*args, "--", os.path.realpath(runtime_interpreter()), "-I", "-S", CHILD_PATH_INSIDE]


def seccomp_memfd() -> int:
    """A file descriptor holding the seccomp program, positioned at its start (bwrap reads it to EOF)."""
    program = seccomp_filter_bpf()
    fd = os.memfd_create("remix-reward-seccomp", os.MFD_CLOEXEC)
    os.write(fd, program)
    os.lseek(fd, 0, os.SEEK_SET)
    os.set_inheritable(fd, True)
    return fd
