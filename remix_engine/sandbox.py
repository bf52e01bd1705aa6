"""User-supplied reward code, run in an OS-level sandbox: the "python" reward.

A job may define its own verifier as Python source in the reward kwargs::

    {"name": "python", "kwargs": {"code": "def reward(completion: str, answer: str) -> float: ..."}}

or, to see the sample's dataset row (a dict of its columns, remix_engine/rewards/rows.py `reward_row`),
``def reward(completion, answer, row)``: the child passes the row when the function accepts a third
positional argument.

`python_reward` starts a child interpreter (`remix_engine/sandbox_child.py`) inside a bubblewrap
jail (remix_engine/sandbox_jail.py: PID, network and mount namespaces showing only a read-only
Python runtime and a private scratch dir, a seccomp filter, uid 65534 without capabilities, a clean
environment). The child sets its resource limits before it drops root: address space (memory_mb),
CPU time (timeout_s per sample it runs), file size (1 MiB), open files (64) and threads (64); the
parent enforces a wall-clock limit (timeout_s) per sample and kills the whole PID namespace after
the call. `RewardScores.isolation` says what the child observed of its jail.

A sample whose call raises, hangs, exhausts its memory or CPU, or kills the process (os._exit, a
crash) scores None and gets an error message; the child is restarted for the remaining samples, so
only that sample fails. Errors are returned on the scores list (`RewardScores.errors`) and counted in
the step metric `reward_errors`. When the jail cannot be built (no bwrap, namespaces refused by the
host), `SandboxUnavailable` is raised: the job fails with that message rather than run the code
unjailed, unless the operator chose the weaker `REMIX_REWARD_SANDBOX=process` mode.
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

from remix_engine.sandbox_jail import SandboxUnavailable, jail_command, sandbox_mode, seccomp_memfd

log = logging.getLogger(__name__)

CHILD_SCRIPT = Path(__file__).with_name("sandbox_child.py")
NOBODY_UID = 65534
MAX_CODE_CHARS = 64 * 1024
# Defaults and ceilings of the per-sample limits a job may ask for in the reward kwargs.
DEFAULT_TIMEOUT_S, MAX_TIMEOUT_S = 2.0, 10.0
DEFAULT_MEMORY_MB, MAX_MEMORY_MB = 512, 2048
STARTUP_GRACE_S = 15.0  # interpreter start and loading the code, before the first sample's clock


class RewardScores(list[float | None]):
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
    rows: list[dict[str, Any]] | None = None,
    audit_hook: bool = True,
    **_: Any,
) -> RewardScores:
    """Score each (completion, answer[, row]) with the user's `reward` function, in the sandbox.

    `audit_hook=False` leaves out the Python-level layer so tests can show that the OS jail alone
    holds; job configs cannot set it (remix_engine/reward_specs.py accepts only code, timeout_s, memory_mb).
    """
    if len(completions) != len(answers):
        raise ValueError(f"got {len(completions)} completions but {len(answers)} answers")
    if rows is not None and len(rows) != len(completions):
        raise ValueError(f"got {len(rows)} rows for {len(completions)} completions")
    sample_rows = rows if rows is not None else [{}] * len(completions)
    limits = Limits.from_kwargs(timeout_s, memory_mb)
    jailed = sandbox_mode() == "bwrap"
    scores: list[float | None] = [None] * len(completions)
    errors: list[str | None] = [None] * len(completions)
    pending = list(range(len(completions)))
    isolation: list[str] = []
    while pending:
        samples = [(i, completions[i], answers[i], sample_rows[i]) for i in pending]
        done = _run_child(code, samples, limits, scores, errors, isolation, jailed=jailed, audit_hook=audit_hook)
        pending = [i for i in pending if i not in done]
    result = RewardScores(scores, errors, isolation[0] if isolation else "")
    if result.error_count:
        first = next(e for e in errors if e is not None)
        log.warning("python reward: %d of %d samples failed; first: %s", result.error_count, len(errors), first)
    return result


def check_sandbox() -> str:
    """Start the sandbox once with a trivial reward; returns its isolation report or raises SandboxUnavailable.

    A worker calls this before training a job that has a python reward, so a host that cannot build
    the jail fails the job at once with the reason instead of after the first rollout.
    """
    result = python_reward(["1"], ["1"], code="def reward(completion, answer):\n    return 1.0\n")
    if list(result) != [1.0]:
        raise SandboxUnavailable(f"the reward sandbox does not run code on this worker: {result.errors[0]}")
    return result.isolation


def _child_env() -> dict[str, str]:
    # Nothing of the worker's environment (database URLs, cloud credentials) reaches the user code.
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}


class _Child:
    """A running sandbox child: the process we started (bwrap or the interpreter) and, for bwrap, a
    pipe on which it reports the host pid of the jail's PID-1 process (`--info-fd`)."""

    def __init__(self, process: subprocess.Popen[bytes], info_fd: int | None = None) -> None:
        self.process = process
        self.info_fd = info_fd

    def jail_init_pid(self) -> int | None:
        if self.info_fd is None:
            return None
        os.set_blocking(self.info_fd, False)
        try:
            report = json.loads(os.read(self.info_fd, 65536) or b"{}")
        except (BlockingIOError, ValueError):  # bwrap failed before it could report
            return None
        if not isinstance(report, dict):
            return None
        pid = report.get("child-pid")
        return int(pid) if isinstance(pid, int) else None

    def kill(self) -> None:
        """Kill everything the child started, and return only once it is all gone."""
        # SIGKILL to the PID namespace's init makes the kernel kill and reap every process in it
        # before bwrap (its parent) can collect it; killing bwrap first would leave that to pdeathsig.
        init_pid = self.jail_init_pid()
        if init_pid is not None:
            try:
                os.kill(init_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        if init_pid is None and self.info_fd is not None:
            log.warning("the sandbox did not report its PID-1; its processes end with bwrap's death signal")
        deadline = time.monotonic() + 5.0
        while init_pid is not None and os.path.exists(f"/proc/{init_pid}") and time.monotonic() < deadline:
            time.sleep(0.01)  # reaped by then, unless the host is very loaded
        if self.info_fd is not None:
            os.close(self.info_fd)
            self.info_fd = None


def _start(workdir: str, *, jailed: bool) -> _Child:
    if not jailed:
        return _Child(
            subprocess.Popen(
                [sys.executable, "-I", str(CHILD_SCRIPT)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                cwd=workdir,
                env=_child_env(),
                start_new_session=True,  # its own process group: a kill takes everything it started
            )
        )
    seccomp_fd = seccomp_memfd()
    info_read, info_write = os.pipe()
    try:
        process = subprocess.Popen(
            jail_command(CHILD_SCRIPT, seccomp_fd, info_fd=info_write),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,  # bwrap's own errors, reported when the jail cannot be built
            cwd=workdir,
            env=_child_env(),  # bwrap's environment too: its PID-1 reaper is visible inside
            pass_fds=(seccomp_fd, info_write),
            start_new_session=True,
        )
    except BaseException:
        os.close(info_read)
        raise
    finally:
        os.close(seccomp_fd)
        os.close(info_write)
    return _Child(process, info_read)


def _death_reason(child: subprocess.Popen[bytes], limits: Limits) -> str:
    code = child.wait()
    if code in (-signal.SIGXCPU, -signal.SIGKILL, 128 + signal.SIGXCPU, 128 + signal.SIGKILL):
        return f"killed: CPU time ({limits.timeout_s:g}s per sample) or memory ({limits.memory_mb} MiB) limit exceeded"
    if code < 0:
        return f"the reward process crashed ({signal.Signals(-code).name})"
    if code > 128 and code - 128 in signal.Signals._value2member_map_:  # bwrap reports a signal death so
        return f"the reward process crashed ({signal.Signals(code - 128).name})"
    return f"the reward process exited with code {code} before returning a score"


def _jail_failure(child: _Child) -> str:
    child.kill()
    process = child.process
    stderr = process.stderr.read().decode(errors="replace").strip() if process.stderr else ""
    return stderr.splitlines()[-1] if stderr else f"the sandbox exited with code {process.returncode}"


def _run_child(
    code: str,
    samples: list[tuple[int, str, str, dict[str, Any]]],
    limits: Limits,
    scores: list[float | None],
    errors: list[str | None],
    isolation: list[str],
    *,
    jailed: bool,
    audit_hook: bool,
) -> set[int]:
    """Score `samples` in one child until it finishes or dies; returns the indices settled."""
    done: set[int] = set()
    with tempfile.TemporaryDirectory(prefix="remix-reward-") as workdir:
        os.chmod(workdir, 0o777)  # the process-mode child may run as an unprivileged uid
        child = _start(workdir, jailed=jailed)
        process = child.process
        request = {
            "code": code,
            "samples": [[i, [c, a, row]] for i, c, a, row in samples],
            # CPU budget of the whole child; each sample also has its own wall-clock limit below.
            "cpu_seconds": int(limits.timeout_s * len(samples) + 1),
            "memory_bytes": limits.memory_mb * 1024 * 1024,
            "drop_to_uid": NOBODY_UID,
            "jailed": jailed,
            "audit_hook": audit_hook,
        }
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write((json.dumps(request) + "\n").encode())
            process.stdin.close()
        except BrokenPipeError:
            pass
        reader = _LineReader(process.stdout)
        deadline = time.monotonic() + STARTUP_GRACE_S + limits.timeout_s
        try:
            if jailed:
                report = reader.next_line(deadline)
                if report is None or "isolation" not in report:
                    reason = (report or {}).get("isolation_failed") or _jail_failure(child)
                    raise SandboxUnavailable(f"the reward sandbox could not be built on this worker: {reason}")
                isolation.append(str(report["isolation"]))
            for index, *_sample in samples:
                line = reader.next_line(deadline)
                while line is not None and "isolation" in line:  # the process-mode child's start-up report
                    isolation.append(str(line["isolation"]))
                    line = reader.next_line(deadline)
                if line is None:
                    if reader.eof:
                        errors[index] = _death_reason(process, limits)
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
            child.kill()
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
