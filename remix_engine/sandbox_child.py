"""The child side of the reward sandbox; run as a script (`python -I sandbox_child.py`), never imported
by the engine. Uses only the standard library.

It reads one JSON request from stdin ({"code", "samples", "cpu_seconds", "memory_bytes",
"drop_to_uid"}), cuts itself off the network, applies resource limits, then calls the user's
`reward(completion, answer)` once per sample and writes one JSON line per sample to the results
descriptor: {"i": index, "score": float} or {"i": index, "error": "..."}. An exception fails only
its sample; anything that kills the process (CPU limit, os._exit, a crash) is reported by the parent.

Network isolation, strongest first:
  - a new network namespace (only a loopback device that is down): `unshare(CLONE_NEWNET)` as root,
    else `unshare(CLONE_NEWUSER | CLONE_NEWNET)` where unprivileged user namespaces are allowed;
  - always, in addition, an audit hook (PEP 578) that refuses socket creation/connection, process
    spawning and ctypes, so the namespace cannot be escaped by a child process or foreign code.
As root the child also drops to an unprivileged uid, so the limits below cannot be raised again.
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
_BLOCKED_PREFIXES = ("socket.", "ctypes.", "subprocess.", "os.exec", "os.posix_spawn", "os.spawn")
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


def drop_privileges(uid: int) -> None:
    if os.geteuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)


def limit_resources(memory_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # no large files
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def cpu_budget(seconds: float) -> None:
    """SIGXCPU (fatal) after `seconds` more CPU time; the hard limit one second later is SIGKILL."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    now = used.ru_utime + used.ru_stime
    soft = int(math.ceil(now + seconds))
    _soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
    wanted_hard = soft + 1 if hard == resource.RLIM_INFINITY else min(hard, soft + 1)
    resource.setrlimit(resource.RLIMIT_CPU, (min(soft, wanted_hard), wanted_hard))


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

    mechanism = isolate_network()
    drop_privileges(int(request["drop_to_uid"]))
    limit_resources(int(request["memory_bytes"]))
    results.write(json.dumps({"isolation": mechanism}) + "\n")
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
        cpu_budget(float(request["cpu_seconds"]))
        try:
            line = {"i": index, "score": _score(reward(completion, answer))}
        except BaseException as error:  # noqa: BLE001 - one sample's failure is reported, not fatal
            line = {"i": index, "error": _describe(error)}
        results.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    main()
