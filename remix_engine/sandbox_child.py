"""The child side of the reward sandbox; run as a script (`python -I -S sandbox_child.py`), never imported
by the engine. Uses only the standard library.

It reads one JSON request from stdin ({"code", "samples", "cpu_seconds", "memory_bytes",
"drop_to_uid", "jailed", "audit_hook"}; each sample is [index, [completion, answer, row]]), applies
resource limits, gives up root, then calls the user's `reward(completion, answer, row)` once per
sample (`reward(completion, answer)` when the function takes no third positional argument) and
writes one JSON line per sample to the results descriptor: {"i": index, "score": float} or
{"i": index, "error": "..."}. Its first line reports the isolation it observed: {"isolation": "..."}.
An exception fails only its sample; anything that kills the process (CPU limit, os._exit, a crash)
is reported by the parent.

Jailed (`jailed: true`, the default `bwrap` mode, see remix_engine/sandbox_jail.py): bwrap already
built the namespaces, the mount jail and the seccomp filter; started as root, this script keeps only
CAP_SETUID/CAP_SETGID/CAP_SETPCAP, empties the capability bounding set and drops to `drop_to_uid`
(no capabilities left) before any user code runs.
It refuses to run user code if it is still root or still holds a capability.

Not jailed (`process` mode, weaker): a new network namespace when the kernel allows one, an
unprivileged uid when started as root with a world-readable Python, and the audit hook.

Either way, unless `audit_hook` is false, an audit hook (PEP 578) refuses sockets, process spawning,
ctypes and setrlimit as an extra layer above the kernel's.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import resource
import sys
import traceback
from collections.abc import Callable

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
PR_CAPBSET_DROP = 24
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
_LINUX_CAPABILITY_VERSION_3 = 0x20080522
MAX_OPEN_FILES = 64
MAX_THREADS = 64  # RLIMIT_NPROC; new processes are refused by seccomp, so this bounds threads
MAX_FILE_BYTES = 1 << 20
_BLOCKED_PREFIXES = (
    "socket.",
    "ctypes.",
    "subprocess.",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "resource.setrlimit",  # the limits are final once the user code runs
    "resource.prlimit",
)
_BLOCKED_EVENTS = {"os.fork", "os.forkpty", "os.system", "os.startfile", "pty.spawn"}


class IsolationError(RuntimeError):
    """The sandbox is not what it must be; no user code runs."""


def _unshare(flags: int) -> bool:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.unshare(flags)) == 0


def isolate_network() -> str:
    """Move into an empty network namespace if the kernel lets us; returns the mechanism used."""
    if os.geteuid() == 0 and _unshare(CLONE_NEWNET):
        return "netns"
    if _unshare(CLONE_NEWUSER | CLONE_NEWNET):
        return "userns+netns"
    return "audit-hook"


def _audit(event: str, _args: tuple[object, ...]) -> None:
    if event in _BLOCKED_EVENTS or event.startswith(_BLOCKED_PREFIXES):
        raise PermissionError(f"{event} is not allowed in a reward function")


def _readable_by_others(path: str) -> bool:
    """Whether an unprivileged uid can reach and read `path` (every parent directory searchable)."""
    current = os.path.realpath(path)
    while True:
        mode = os.stat(current).st_mode
        if not mode & 0o001 or (current == os.path.realpath(path) and not mode & 0o004):
            return False
        parent = os.path.dirname(current)
        if parent == current:
            return True
        current = parent


def drop_privileges(uid: int) -> str:
    """As root, become `uid` so limits and files are out of reach, if Python stays importable then."""
    if os.geteuid() != 0:
        return f"uid {os.geteuid()}"
    paths = {os.path.dirname(os.__file__), *(p for p in sys.path if p.endswith("site-packages"))}
    if not all(_readable_by_others(p) for p in paths):
        return "uid 0 (the Python installation is private to root)"
    _become(uid)
    return f"uid {uid}"


def _become(uid: int) -> None:
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


def _status() -> dict[str, str]:
    with open("/proc/self/status") as status:
        return dict(line.rstrip("\n").split(":\t", 1) for line in status if ":\t" in line)


def _drop_bounding_set() -> None:
    """Empty the capability bounding set (needs CAP_SETPCAP), so no later exec can regain a capability."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    with open("/proc/sys/kernel/cap_last_cap") as last:
        last_cap = int(last.read())
    for cap in range(last_cap + 1):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise IsolationError(f"cannot drop capability {cap} from the bounding set: {os.strerror(ctypes.get_errno())}")


def _clear_capability_sets() -> None:
    """Empty the inheritable and ambient sets too (setuid away from root clears only the others)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    header = (ctypes.c_uint32 * 2)(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable for caps 0-31 and 32-63: all zero
    if libc.capset(header, data) != 0:
        raise IsolationError(f"cannot clear the capability sets: {os.strerror(ctypes.get_errno())}")


def enter_jail(uid: int) -> str:
    """Inside bwrap: give up root for good and check that nothing privileged is left."""
    if os.geteuid() == 0:
        _drop_bounding_set()
        _become(uid)
    _clear_capability_sets()
    status = _status()
    if os.geteuid() == 0 or os.getuid() == 0 or os.getegid() == 0:
        raise IsolationError("the sandbox is still root")
    if any(int(status.get(key, "1"), 16) for key in ("CapEff", "CapPrm", "CapInh", "CapAmb")):
        raise IsolationError(f"the sandbox still holds capabilities (CapEff {status.get('CapEff')})")
    if status.get("NoNewPrivs", "0").strip() != "1" or status.get("Seccomp", "0").strip() != "2":
        raise IsolationError("the sandbox runs without no_new_privs or without its seccomp filter")
    return f"bwrap: pid/net/mount/ipc/uts namespaces, seccomp filter, no_new_privs, uid {os.geteuid()}, no capabilities"


def limit_resources(memory_bytes: int, cpu_seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # The CPU budget of the whole child (every sample it will run); SIGXCPU, then SIGKILL 1 s later.
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(math.ceil(used.ru_utime + used.ru_stime + cpu_seconds))
    resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))  # no large files
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_NOFILE, (MAX_OPEN_FILES, MAX_OPEN_FILES))
    resource.setrlimit(resource.RLIMIT_NPROC, (MAX_THREADS, MAX_THREADS))


def _score(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"reward must return a number, got {type(value).__name__}")
    score = float(value)
    if not math.isfinite(score):
        raise ValueError(f"reward must return a finite number, got {score}")
    return score


def _describe(error: BaseException) -> str:
    if isinstance(error, MemoryError):
        return "MemoryError: the reward function exceeded its memory limit"
    frames = traceback.extract_tb(error.__traceback__)
    user = [f for f in frames if f.filename == "<reward>"]
    where = f" (line {user[-1].lineno})" if user else ""
    return f"{type(error).__name__}: {error}{where}"[:500]


def takes_row(function: Callable[..., object]) -> bool:
    """Whether the user's reward accepts (completion, answer, row), rather than only (completion, answer)."""
    try:
        inspect.signature(function).bind("", "", {})
    except (TypeError, ValueError):
        return False
    return True


def main() -> None:
    request = json.loads(sys.stdin.readline())
    results = os.fdopen(os.dup(1), "w", buffering=1)
    # The user's prints must not corrupt the result stream.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115

    uid = int(request["drop_to_uid"])
    if request.get("jailed"):
        limit_resources(int(request["memory_bytes"]), int(request["cpu_seconds"]))
        try:
            isolation = enter_jail(uid)
        except (IsolationError, OSError) as error:
            results.write(json.dumps({"isolation_failed": str(error)}) + "\n")
            return
    else:
        network = isolate_network()
        identity = drop_privileges(uid)
        limit_resources(int(request["memory_bytes"]), int(request["cpu_seconds"]))
        isolation = f"process: {network}, {identity}"
    if request.get("audit_hook", True):
        sys.addaudithook(_audit)  # permanent: nothing can remove it
        isolation += ", audit hook"
    results.write(json.dumps({"isolation": isolation}) + "\n")

    namespace: dict[str, object] = {"__name__": "reward_module"}
    try:
        exec(compile(request["code"], "<reward>", "exec"), namespace)  # noqa: S102 - the sandboxed code
        reward = namespace["reward"]
        if not callable(reward):
            raise TypeError("'reward' is not a function")
        with_row = takes_row(reward)
    except BaseException as error:  # the module itself is broken: every sample fails the same way
        message = "the reward code failed to load: " + _describe(error)
        for index, _sample in request["samples"]:
            results.write(json.dumps({"i": index, "error": message}) + "\n")
        return
    for index, (completion, answer, *rest) in request["samples"]:
        row = rest[0] if rest else {}
        try:
            value = reward(completion, answer, row) if with_row else reward(completion, answer)
            line = {"i": index, "score": _score(value)}
        except BaseException as error:  # noqa: BLE001 - one sample's failure is reported, not fatal
            line = {"i": index, "error": _describe(error)}
        results.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
