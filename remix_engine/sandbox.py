"""User-supplied reward code, run in a separate, locked-down process: the "python" reward.

A job may define its own verifier as Python source in the reward kwargs::

    {"name": "python", "kwargs": {"code": "def reward(completion: str, answer: str) -> float: ..."}}

`python_reward` starts a child interpreter (`remix_engine/sandbox_child.py`) that has no network
(an empty network namespace where the kernel allows it, and always an audit hook refusing sockets,
subprocesses, ctypes and setrlimit), a CPU-time budget (RLIMIT_CPU: timeout_s per sample it runs),
an address-space limit (RLIMIT_AS, memory_mb), a clean environment, an empty working directory and,
when started as root with a world-readable Python, an unprivileged uid. The parent enforces a
wall-clock limit (timeout_s) per sample. `RewardScores.isolation` says which mechanisms applied.
A sample whose call raises, hangs, exhausts its memory or CPU, or kills the process (os._exit, a
crash) scores None and gets an error message; the child is restarted for the remaining samples,
so only that sample fails.
Errors are returned on the scores list (`RewardScores.errors`) and counted in the step metric
`reward_errors`.

It is a resource and network sandbox, not a filesystem jail: the code can read files its uid can
read, so workers should not keep secrets in world-readable files (the environment is not passed on).
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CHILD_SCRIPT = Path(__file__).with_name("sandbox_child.py")
NOBODY_UID = 65534
MAX_CODE_CHARS = 64 * 1024
# Defaults and ceilings of the per-sample limits a job may ask for in the reward kwargs.
DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S = 2.0, 10.0
DEFAULT_MEMORY_MB, MAX_MEMORY_MB = 512, 2048
STARTUP_GRACE_S = 15.0  # interpreter start and loading the code, before the first sample's clock


class RewardScores(list):  # type: ignore[type-arg]
    """Scores (float or None) with one error message (or None) per sample."""

    def __init__(self, scores: list[float | None], errors: list[str | None], isolation: str = "") -> None:
        super().__init__(scores)
        self.errors = errors
        self.isolation = isolation  # how the child was locked down, as it reported it

    @property
    def error_count(self) -> int:
        return sum(error is not None for error in self.errors)


@dataclass(frozen=True)
class Limits:
    timeout_s: float = DEFAULT_TIMEOUT_S  # wall clock per sample; also the CPU-time budget
    memory_mb: int = DEFAULT_MEMORY_MB

    @classmethod
    def from_kwargs(cls, timeout_s: float | None = None, memory_mb: int | None = None) -> Limits:
        timeout = min(float(timeout_s or DEFAULT_TIMEOUT_S), MAX_TIMEOUT_S)
        memory = min(int(memory_mb or DEFAULT_MEMORY_MB), MAX_MEMORY_MB)
        return cls(timeout_s=timeout, memory_mb=memory)


def python_reward(
    completions: list[str],
    answers: list[str],
    *,
    code: str,
    timeout_s: float | None = None,
    memory_mb: int | None = None,
    **_: Any,
) -> RewardScores:
    """Score each (completion, answer) with the user's `reward` function, in the sandbox."""
    if len(completions) != len(answers):
        raise ValueError(f"got {len(completions)} completions but {len(answers)} answers")
    limits = Limits.from_kwargs(timeout_s, memory_mb)
    scores: list[float | None] = [None] * len(completions)
    errors: list[str | None] = [None] * len(completions)
    pending = list(range(len(completions)))
    isolation: list[str] = []
    while pending:
        samples = [(i, completions[i], answers[i]) for i in pending]
        done = _run_child(code, samples, limits, scores, errors, isolation)
        pending = [i for i in pending if i not in done]
    result = RewardScores(scores, errors, isolation[0] if isolation else "")
    if result.error_count:
        first = next(e for e in errors if e is not None)
        log.warning("python reward: %d of %d samples failed; first: %s", result.error_count, len(errors), first)
    return result


def _child_env() -> dict[str, str]:
    # Nothing of the worker's environment (database URLs, cloud credentials) reaches the user code.
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


def _start(workdir: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-I", str(CHILD_SCRIPT)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=workdir,
        env=_child_env(),
        start_new_session=True,  # its own process group: a kill takes everything it started
    )


def _kill(child: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()


def _death_reason(child: subprocess.Popen[bytes], limits: Limits) -> str:
    code = child.wait()
    if code in (-signal.SIGXCPU, -signal.SIGKILL):
        return f"killed: CPU time ({limits.timeout_s:g}s per sample) or memory ({limits.memory_mb} MiB) limit exceeded"
    if code < 0:
        return f"the reward process crashed ({signal.Signals(-code).name})"
    return f"the reward process exited with code {code} before returning a score"


def _run_child(
    code: str,
    samples: list[tuple[int, str, str]],
    limits: Limits,
    scores: list[float | None],
    errors: list[str | None],
    isolation: list[str],
) -> set[int]:
    """Score `samples` in one child until it finishes or dies; returns the indices settled."""
    done: set[int] = set()
    with tempfile.TemporaryDirectory(prefix="remix-reward-") as workdir:
        os.chmod(workdir, 0o777)  # the child may run as an unprivileged uid
        child = _start(workdir)
        request = {
            "code": code,
            "samples": [[i, [c, a]] for i, c, a in samples],
            # CPU budget of the whole child; each sample also has its own wall-clock limit below.
            "cpu_seconds": int(limits.timeout_s * len(samples) + 1),
            "memory_bytes": limits.memory_mb * 1024 * 1024,
            "drop_to_uid": NOBODY_UID,
        }
        assert child.stdin is not None and child.stdout is not None
        try:
            child.stdin.write((json.dumps(request) + "\n").encode())
            child.stdin.close()
        except BrokenPipeError:
            pass
        reader = _LineReader(child.stdout)
        deadline = time.monotonic() + STARTUP_GRACE_S + limits.timeout_s
        try:
            for index, _c, _a in samples:
                line = reader.next_line(deadline)
                while line is not None and "isolation" in line:  # the child's start-up report
                    isolation.append(str(line["isolation"]))
                    line = reader.next_line(deadline)
                if line is None:
                    if reader.eof:
                        errors[index] = _death_reason(child, limits)
                    else:
                        errors[index] = f"killed: wall-clock limit of {limits.timeout_s:g}s exceeded"
                    done.add(index)
                    return done
                if line.get("i") != index:
                    errors[index] = "the reward process wrote a malformed result"
                elif "score" in line:
                    scores[index] = float(line["score"])
                else:
                    errors[index] = str(line.get("error", "unknown error"))[:500]
                done.add(index)
                deadline = time.monotonic() + limits.timeout_s
        finally:
            _kill(child)
    return done


class _LineReader:
    """JSON lines from a pipe, with a deadline per line (select on the raw descriptor)."""

    def __init__(self, pipe: Any) -> None:
        self.fd = pipe.fileno()
        os.set_blocking(self.fd, False)
        self.buffer = b""
        self.eof = False
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.fd, selectors.EVENT_READ)

    def next_line(self, deadline: float) -> dict[str, Any] | None:
        while b"\n" not in self.buffer:
            remaining = deadline - time.monotonic()
            if self.eof or remaining <= 0 or not self.selector.select(remaining):
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.eof = True
                return None
            self.buffer += chunk
            if len(self.buffer) > 1 << 20:  # a runaway writer is treated as a crash
                self.eof = True
                return None
        line, self.buffer = self.buffer.split(b"\n", 1)
        try:
            parsed = json.loads(line)
        except ValueError:
            return {"error": "the reward process wrote a malformed result"}
        return parsed if isinstance(parsed, dict) else {"error": "the reward process wrote a malformed result"}
