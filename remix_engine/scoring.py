"""Reward scoring in a child process, so that no reward computation can stall or exhaust the trainer.

A tenant controls the reference answers and, through the model it names, the completions; sympy
work inside math-verify on a crafted answer (``9^{9^{9^{9}}}``) or a slow regex would otherwise hold
the trainer's GIL, freeze its heartbeat thread and wedge the worker slot. `RewardScorer.compose`
sends the batch to `python -m remix_engine.scoring_child`, which runs
`remix_engine.rewards.score_rewards` under an address-space limit, and waits at most
`scoring_timeout_s(...)` for the answer (`REMIX_REWARD_TIMEOUT_SECONDS`, default 120 s, plus
each python reward's per-sample limits and each judge reward's request budget); past it the
child is killed and `RewardScoringError` fails the job with a message naming the limit, which
frees the worker. The python reward's own sandbox
(remix_engine/sandbox.py) is started from inside this child.

One child serves a process (training steps and evaluations alike); it is started on first use,
restarted after it is killed, and stopped at exit. Requests are JSON: completions, answers and the
dataset rows of the samples (each distinct row sent once, with an index per sample). The child's
environment is a short allow-list (the sandbox mode, the judge endpoint `REMIX_JUDGE_*`), plus the
`env` a scorer is built with (the API passes its settings' judge endpoint that way).
"""

from __future__ import annotations

import atexit
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

from remix_engine.config import RewardSpec
from remix_engine.judge import JUDGE_ENV, judge_budget_s
from remix_engine.reward_specs import JUDGE_REWARDS, JudgeKwargs
from remix_engine.rewards import RewardResult
from remix_engine.sandbox import STARTUP_GRACE_S, Limits
from remix_engine.sandbox_jail import MODE_ENV

TIMEOUT_ENV = "REMIX_REWARD_TIMEOUT_SECONDS"
DEFAULT_BASE_TIMEOUT_S = 120.0  # the builtin rewards of one batch; generous for a loaded machine
MEMORY_BYTES = 4 << 30  # address space of the scoring process (not of the python reward's sandbox)
_PASSED_ENV = ("PATH", "LANG", "HOME", MODE_ENV, *JUDGE_ENV)


class RewardScoringError(RuntimeError):
    """Scoring a batch failed as a whole (timeout, crash, memory): the job cannot go on."""


def base_timeout_s() -> float:
    """The operator's budget for the builtin rewards of one batch (`REMIX_REWARD_TIMEOUT_SECONDS`)."""
    value = float(os.environ.get(TIMEOUT_ENV, DEFAULT_BASE_TIMEOUT_S))
    if not 0 < value < float("inf"):
        raise ValueError(f"{TIMEOUT_ENV} must be a positive number of seconds, got {value}")
    return value


def scoring_timeout_s(
    specs: Sequence[RewardSpec], samples: int, base_s: float | None = None, environ: Mapping[str, str] | None = None
) -> float:
    """Wall-clock budget of one batch: a base for the builtin rewards (`base_s`, else the operator's
    `REMIX_REWARD_TIMEOUT_SECONDS`) plus each python reward's own limits and each judge's request budget."""
    budget = base_timeout_s() if base_s is None else base_s
    for spec in specs:
        if spec.name == "python":
            limits = Limits.from_kwargs(spec.kwargs.get("timeout_s"), spec.kwargs.get("memory_mb"))
            budget += STARTUP_GRACE_S + limits.timeout_s * samples
        elif spec.name in JUDGE_REWARDS:
            budget += judge_budget_s(JudgeKwargs.model_validate(spec.kwargs).timeout_s, samples, environ)
    return budget


def _rows_request(rows: Sequence[Mapping[str, Any]] | None, count: int) -> dict[str, Any]:
    """The rows of a batch for the child: each distinct row object once, and the row index of each sample
    (a group's responses share their prompt's row)."""
    if rows is None:
        return {}
    if len(rows) != count:
        raise ValueError(f"got {len(rows)} rows for {count} completions")
    unique: dict[int, int] = {}
    table: list[Mapping[str, Any]] = []
    index = []
    for row in rows:
        position = unique.get(id(row))
        if position is None:
            position = unique[id(row)] = len(table)
            table.append(row)
        index.append(position)
    return {"rows": table, "row_index": index}


class RewardScorer:
    """A long-lived scoring child; `compose` has the signature and result of `compose_rewards`.

    `env` adds variables to the child's environment (e.g. the judge endpoint, REMIX_JUDGE_URL);
    `base_timeout_s` replaces the operator's REMIX_REWARD_TIMEOUT_SECONDS as the base budget and
    `max_timeout_s` caps the whole budget of a batch (the API's dry runs answer within it).
    """

    def __init__(
        self,
        env: Mapping[str, str] | None = None,
        base_timeout_s: float | None = None,
        max_timeout_s: float | None = None,
    ) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._env = dict(env or {})
        self._base_timeout_s = base_timeout_s
        self._max_timeout_s = max_timeout_s

    def _child_env(self) -> dict[str, str]:
        env = {key: os.environ[key] for key in _PASSED_ENV if key in os.environ}
        env.update(self._env)
        return env

    def _start(self) -> subprocess.Popen[bytes]:
        env = self._child_env()
        env["REMIX_SCORING_MEMORY_BYTES"] = str(MEMORY_BYTES)
        return subprocess.Popen(
            [sys.executable, "-m", "remix_engine.scoring_child"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # its warnings go to the worker's log
            env={**env, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)},
            start_new_session=True,
        )

    def compose(
        self,
        specs: Sequence[RewardSpec],
        completions: list[str],
        answers: list[str],
        rows: Sequence[Mapping[str, Any]] | None = None,
    ) -> tuple[list[float], dict[str, list[float]]]:
        result = self.score(specs, completions, answers, rows)
        return result.total, result.per_fn()

    def score(
        self,
        specs: Sequence[RewardSpec],
        completions: list[str],
        answers: list[str],
        rows: Sequence[Mapping[str, Any]] | None = None,
    ) -> RewardResult:
        """`score_rewards` in the child: the total, each reward's scores and its per-sample error messages."""
        request = {
            "specs": [spec.model_dump(mode="json") for spec in specs],
            "completions": completions,
            "answers": answers,
            **_rows_request(rows, len(completions)),
        }
        timeout = scoring_timeout_s(specs, len(completions), self._base_timeout_s, self._child_env())
        if self._max_timeout_s is not None:
            timeout = min(timeout, self._max_timeout_s)
        with self._lock:
            if self._process is None or self._process.poll() is not None:
                self._process = self._start()
            reply = self._exchange(self._process, request, timeout)
        if "error" in reply:
            raise RewardScoringError(str(reply["error"]))
        return RewardResult(
            total=[float(x) for x in reply["total"]],
            parts={k: [float(x) for x in v] for k, v in reply["parts"].items()},
            errors={k: [None if e is None else str(e) for e in v] for k, v in reply["errors"].items()},
            reporting=[str(k) for k in reply["reporting"]],
        )

    def _exchange(self, process: subprocess.Popen[bytes], request: dict[str, Any], timeout: float) -> dict[str, Any]:
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write((json.dumps(request) + "\n").encode())
            process.stdin.flush()
        except BrokenPipeError:
            pass
        line = _read_line(process.stdout, time.monotonic() + timeout)
        if line is None or line == b"":
            try:  # at end of file the child is exiting: wait a moment for its status
                died = process.wait(timeout=5) if line == b"" else process.poll()
            except subprocess.TimeoutExpired:
                died = None
            self.close()
            if died is not None:
                raise RewardScoringError(
                    f"reward scoring died (exit code {died}); its memory limit is {MEMORY_BYTES >> 30} GiB"
                )
            raise RewardScoringError(
                f"reward scoring of {len(request['completions'])} completions took longer than its limit "
                f"of {timeout:g}s and was stopped; a reward (or an answer it parses) is too slow to score"
            )
        return dict(json.loads(line))

    def close(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


def _read_line(pipe: Any, deadline: float) -> bytes | None:
    """One line from the child before the deadline; None on timeout, b"" at end of file."""
    fd = pipe.fileno()
    chunks: list[bytes] = []
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return b""
            chunks.append(chunk)
            if chunk.endswith(b"\n"):
                return b"".join(chunks)


_shared: RewardScorer | None = None


def shared_scorer() -> RewardScorer:
    """The process's scorer (training and evaluation share one child)."""
    global _shared
    if _shared is None:
        _shared = RewardScorer()
        atexit.register(_shared.close)
    return _shared


def compose_rewards_isolated(
    specs: Sequence[RewardSpec],
    completions: list[str],
    answers: list[str],
    rows: Sequence[Mapping[str, Any]] | None = None,
) -> tuple[list[float], dict[str, list[float]]]:
    """`compose_rewards`, computed in the scoring child under its time and memory limits."""
    return shared_scorer().compose(specs, completions, answers, rows)
