"""The child side of the reward sandbox; run as a script (`python -I sandbox_child.py`), never imported
by the engine. Uses only the standard library.

It reads one JSON request from stdin ({"code", "samples", "cpu_seconds", "memory_bytes",
"drop_to_uid"}), cuts itself off the network, applies resource limits (address space, and a CPU
budget for all its samples; the parent enforces the per-sample wall clock), then calls the user's
`reward(completion, answer)` once per sample and writes one JSON line per sample to the results
descriptor: {"i": index, "score": float} or {"i": index, "error": "..."}. An exception fails only
its sample; anything that kills the process (CPU limit, os._exit, a crash) is reported by the parent.

Network isolation, strongest first:
  - a new network namespace (only a loopback device that is down): `unshare(CLONE_NEWNET)` as root,
    else `unshare(CLONE_NEWUSER | CLONE_NEWNET)` where unprivileged user namespaces are allowed;
  - always, in addition, an audit hook (PEP 578) that refuses socket creation/connection, process
    spawning and ctypes, so the namespace cannot be escaped by a child process or foreign code.
As root the child also drops to an unprivileged uid when the Python installation is readable by it;
either way the audit hook refuses setrlimit/prlimit, so the limits cannot be raised again.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import resource
import sys
import traceback

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
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


def _unshare(flags: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.unshare(flags) == 0


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
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    return f"uid {uid}"


def limit_resources(memory_bytes: int, cpu_seconds: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # The CPU budget of the whole child (every sample it will run); SIGXCPU, then SIGKILL 1 s later.
    used = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(math.ceil(used.ru_utime + used.ru_stime + cpu_seconds))
    resource.setrlimit(resource.RLIMIT_CPU, (soft, soft + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # no large files
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


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


def main() -> None:
    request = json.loads(sys.stdin.readline())
    results = os.fdopen(os.dup(1), "w", buffering=1)
    # The user's prints must not corrupt the result stream.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115

    network = isolate_network()
    identity = drop_privileges(int(request["drop_to_uid"]))
    limit_resources(int(request["memory_bytes"]), int(request["cpu_seconds"]))
    results.write(json.dumps({"isolation": f"{network}, {identity}, audit hook"}) + "\n")
    sys.addaudithook(_audit)  # permanent: nothing can remove it

    namespace: dict[str, object] = {"__name__": "reward_module"}
    try:
        exec(compile(request["code"], "<reward>", "exec"), namespace)  # noqa: S102 - the sandboxed code
        reward = namespace["reward"]
        if not callable(reward):
            raise TypeError("'reward' is not a function")
    except BaseException as error:  # the module itself is broken: every sample fails the same way
        message = "the reward code failed to load: " + _describe(error)
        for index, _sample in request["samples"]:
            results.write(json.dumps({"i": index, "error": message}) + "\n")
        return
    for index, (completion, answer) in request["samples"]:
        try:
            line = {"i": index, "score": _score(reward(completion, answer))}
        except BaseException as error:  # noqa: BLE001 - one sample's failure is reported, not fatal
            line = {"i": index, "error": _describe(error)}
        results.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
