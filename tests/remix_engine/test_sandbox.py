"""The "python" reward: user code runs in the sandbox without network, with CPU, memory and
wall-clock limits, and a failing sample fails alone (None score, recorded error, reward_errors).
The attacks on the jail itself are in test_sandbox_jail.py."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from pydantic import ValidationError

from remix_engine.config import RewardSpec, TrainConfig
from remix_engine.rewards import REWARDS, compose_rewards, count_reward_errors
from remix_engine.sandbox import RewardScores, python_reward

EXACT = """
def reward(completion: str, answer: str) -> float:
    return 1.0 if completion.strip() == answer.strip() else 0.0
"""


def _dispatching(body: str) -> str:
    """A reward whose behaviour is picked per sample by the completion text; 'ok' scores normally."""
    return f"""
def reward(completion, answer):
    if completion == "ok":
        return float(len(answer))
{body}
"""


def _only_sample_1_fails(result: RewardScores) -> str:
    assert result[0] == 1.0 and result[2] == 2.0, result
    assert result[1] is None
    assert result.errors[0] is None and result.errors[2] is None
    assert result.error_count == 1
    return str(result.errors[1])


def test_a_normal_function_scores_every_sample() -> None:
    result = python_reward(["4", " 5 ", "x"], ["4", "5", "6"], code=EXACT)
    assert list(result) == [1.0, 1.0, 0.0]
    assert result.errors == [None, None, None]
    assert REWARDS.get("python") is python_reward


def test_a_reward_taking_a_row_sees_the_samples_columns() -> None:
    code = (
        "def reward(completion, answer, row):\n"
        "    assert set(row) >= {'prompt', 'unit'}, row\n"
        "    return float(completion.strip() == answer + ' ' + row['unit']) + 0.5 * (row.get('level') == 2)\n"
    )
    rows = [{"prompt": "How long?", "unit": "m", "level": 2}, {"prompt": "How heavy?", "unit": "kg"}]
    result = python_reward(["3 m", "3 g"], ["3", "3"], code=code, rows=rows)
    assert list(result) == [1.5, 0.0] and result.errors == [None, None]
    # A row is optional for the function: (completion, answer) functions keep working, and so do
    # signatures that can take a row (a default, *args).
    assert list(python_reward(["4"], ["4"], code=EXACT, rows=[{"unit": "m"}])) == [1.0]
    with_default = "def reward(completion, answer, row=None):\n    return float(row is not None and 'unit' in row)\n"
    assert list(python_reward(["4", "4"], ["4", "4"], code=with_default, rows=[{"unit": "m"}, {}])) == [1.0, 0.0]
    varargs = "def reward(*args):\n    return float(len(args))\n"
    assert list(python_reward(["4"], ["4"], code=varargs, rows=[{}])) == [3.0]
    # Without rows (e.g. a caller that has none) the function gets an empty row.
    assert list(python_reward(["4"], ["4"], code="def reward(c, a, row):\n    return float(row == {})\n")) == [1.0]


def test_an_exception_fails_only_its_sample() -> None:
    code = _dispatching("    raise ValueError('cannot grade ' + completion)")
    error = _only_sample_1_fails(python_reward(["ok", "boom", "ok"], ["a", "b", "cd"], code=code))
    assert error.startswith("ValueError: cannot grade boom") and "line" in error


def test_os_exit_fails_only_its_sample_and_the_rest_still_run() -> None:
    code = _dispatching("    import os\n    os._exit(3)")
    error = _only_sample_1_fails(python_reward(["ok", "die", "ok"], ["a", "b", "cd"], code=code))
    assert "exited with code 3" in error


def test_a_hard_crash_fails_only_its_sample() -> None:
    code = _dispatching("    import signal, os\n    os.kill(os.getpid(), signal.SIGSEGV)")
    error = _only_sample_1_fails(python_reward(["ok", "segv", "ok"], ["a", "b", "cd"], code=code))
    assert "crashed (SIGSEGV)" in error


@pytest.mark.slow
def test_an_infinite_loop_is_killed_within_the_limit() -> None:
    code = _dispatching("    while True:\n        pass")
    started = time.monotonic()
    result = python_reward(["ok", "spin", "ok"], ["a", "b", "cd"], code=code, timeout_s=1)
    elapsed = time.monotonic() - started
    error = _only_sample_1_fails(result)
    assert error.startswith("killed:") and "limit of 1s exceeded" in error, error
    # Bounded: the loop ran for about its 1 s budget, not forever (generous for a loaded machine).
    assert elapsed < 30


@pytest.mark.slow
def test_a_sleeping_function_is_killed_by_the_wall_clock() -> None:
    code = _dispatching("    import time\n    time.sleep(3600)")
    error = _only_sample_1_fails(python_reward(["ok", "nap", "ok"], ["a", "b", "cd"], code=code, timeout_s=1))
    assert error == "killed: wall-clock limit of 1s exceeded"


def test_a_memory_bomb_is_stopped_at_the_memory_limit() -> None:
    code = _dispatching("    hog = [bytearray(16 * 1024 * 1024) for _ in range(10_000)]\n    return 0.0")
    error = _only_sample_1_fails(python_reward(["ok", "hog", "ok"], ["a", "b", "cd"], code=code, memory_mb=128))
    assert "memory" in error.lower(), error


def test_socket_creation_and_connection_fail() -> None:
    # A real listening socket on loopback: even it must be unreachable from the reward code.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted: list[object] = []
    server.settimeout(5)
    waiter = threading.Thread(target=lambda: accepted.append(_accept(server)), daemon=True)
    waiter.start()
    code = f"""
def reward(completion, answer):
    import socket
    socket.create_connection(("127.0.0.1", {port}), timeout=2)
    return 1.0
"""
    result = python_reward(["x"], ["y"], code=code)
    waiter.join(timeout=10)
    server.close()
    assert result[0] is None
    assert "PermissionError" in str(result.errors[0]) or "OSError" in str(result.errors[0]), result.errors
    assert accepted == [None]  # nothing ever connected


def _accept(server: socket.socket) -> object:
    try:
        connection, _ = server.accept()
    except TimeoutError:
        return None
    connection.close()
    return "connected"


def test_subprocesses_and_ctypes_are_refused() -> None:
    for body in (
        "    import subprocess\n    subprocess.run(['true'])",
        "    import os\n    os.system('true')",
        "    import ctypes\n    ctypes.CDLL(None)",
    ):
        result = python_reward(["x"], ["y"], code=f"def reward(completion, answer):\n{body}\n    return 1.0\n")
        assert result[0] is None and "not allowed in a reward function" in str(result.errors[0]), body


def test_the_worker_environment_is_not_visible() -> None:
    code = (
        "def reward(completion, answer):\n    import os\n"
        "    return float(len([k for k in os.environ if k.startswith('REMIX')]))\n"
    )
    import os

    os.environ["REMIX_SECRET_FOR_TEST"] = "postgresql://user:password@db/remix"
    try:
        assert list(python_reward(["x"], ["y"], code=code)) == [0.0]
    finally:
        del os.environ["REMIX_SECRET_FOR_TEST"]


def test_bad_return_values_and_broken_modules_are_errors() -> None:
    returns_text = "def reward(completion, answer):\n    return 'yes'\n"
    result = python_reward(["a", "b"], ["a", "b"], code=returns_text)
    assert list(result) == [None, None] and "must return a number" in str(result.errors[0])
    returns_nan = "def reward(completion, answer):\n    return float('nan')\n"
    assert "finite" in str(python_reward(["a"], ["a"], code=returns_nan).errors[0])
    broken = "import no_such_module_anywhere\ndef reward(completion, answer):\n    return 1.0\n"
    result = python_reward(["a", "b"], ["a", "b"], code=broken)
    assert result.error_count == 2 and "failed to load" in str(result.errors[0])


def test_errors_are_counted_by_compose_rewards() -> None:
    code = _dispatching("    raise RuntimeError('no')")
    specs = [RewardSpec(name="exact_match"), RewardSpec(name="python", weight=0.5, kwargs={"code": code})]
    total, per_fn = compose_rewards(specs, ["ok", "bad"], ["ok", "x"])
    assert per_fn["python"] == [2.0, 0.0]
    assert per_fn["python/errors"] == [0.0, 1.0]
    assert total == [1.0 + 0.5 * 2.0, 0.0]
    assert count_reward_errors(per_fn) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "needs kwargs.code"),
        ({"code": "   "}, "needs kwargs.code"),
        ({"code": "def reward(:"}, "does not parse"),
        ({"code": "def score(completion, answer):\n    return 1.0\n"}, "must define a top-level def reward"),
        ({"code": "def reward(completion):\n    return 1.0\n"}, "exactly (completion, answer)"),
        ({"code": "def reward(a, b, c, d):\n    return 1.0\n"}, "(completion, answer) or (completion, answer, row)"),
        ({"code": "def reward(a, b, *, c):\n    return 1.0\n"}, "exactly (completion, answer)"),
        ({"code": EXACT, "timeout_s": 60}, "timeout_s"),
        ({"code": EXACT, "memory_mb": 10**6}, "memory_mb"),
        ({"code": EXACT, "network": True}, "unknown kwargs"),
        ({"code": "x = 1\n" * 20_000 + EXACT}, "longer than"),
    ],
)
def test_the_config_validates_python_reward_kwargs(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig.model_validate({"reward": {"functions": [{"name": "python", "kwargs": kwargs}]}})


def test_a_valid_python_reward_config_is_accepted() -> None:
    config = TrainConfig.model_validate(
        {"reward": {"functions": [{"name": "python", "kwargs": {"code": EXACT, "timeout_s": 1.5}}]}}
    )
    assert config.reward.functions[0].name == "python"


def test_the_child_reports_its_isolation_and_a_namespace_hides_the_host_network() -> None:
    code = (
        "def reward(completion, answer):\n    return float(len(open('/proc/self/net/dev').read().splitlines()) - 2)\n"
    )
    result = python_reward(["x"], ["y"], code=code)
    assert result.isolation.startswith("bwrap: pid/net/mount/ipc/uts namespaces, seccomp filter")
    assert result.isolation.endswith(", audit hook")  # the Python layer stays on above the OS jail
    assert list(result) == [1.0]  # a fresh network namespace has the loopback device only
