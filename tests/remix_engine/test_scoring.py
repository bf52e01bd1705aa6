"""Rewards are scored in a child process with a wall-clock and memory limit: a batch that cannot be
scored in time fails with a clear error, the caller's threads keep running meanwhile (the worker's
heartbeat), and the next batch is scored by a fresh child."""

from __future__ import annotations

import threading
import time

import pytest

import remix_engine.scoring as scoring
from remix_engine.config import RewardSpec
from remix_engine.rewards import compose_rewards
from remix_engine.scoring import RewardScorer, RewardScoringError, scoring_timeout_s

SPECS = [RewardSpec(name="math_verify"), RewardSpec(name="format", weight=0.5)]


@pytest.fixture
def scorer():
    instance = RewardScorer()
    yield instance
    instance.close()


def test_the_child_computes_what_compose_rewards_computes(scorer: RewardScorer) -> None:
    completions = ["\\boxed{4}", "\\boxed{5}", "no box", "\\boxed{\\frac{1}{2}}"]
    answers = ["4", "4", "4", "0.5"]
    assert scorer.compose(SPECS, completions, answers) == compose_rewards(SPECS, completions, answers)


def test_a_batch_past_its_time_limit_fails_clearly_and_the_callers_threads_run_meanwhile(
    scorer: RewardScorer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given a base limit of 1 s and a reward that takes longer (a python reward sleeping 3 s per sample)
    monkeypatch.setenv(scoring.TIMEOUT_ENV, "1")
    monkeypatch.setattr(scoring, "STARTUP_GRACE_S", 0.0)
    slow = RewardSpec(
        name="python",
        kwargs={"code": "def reward(completion, answer):\n    import time\n    time.sleep(3)\n    return 1.0\n",
                "timeout_s": 0.1},
    )
    ticks: list[float] = []
    stop = threading.Event()

    def heartbeat() -> None:
        while not stop.wait(0.1):
            ticks.append(time.monotonic())

    beating = threading.Thread(target=heartbeat)
    beating.start()
    started = time.monotonic()
    try:
        # when a batch is scored (the sandbox's first sample has a start-up grace, so it sleeps 3 s)
        with pytest.raises(RewardScoringError, match=r"took longer than its limit of 1\.\d+s"):
            scorer.compose([slow], ["a"] * 4, ["b"] * 4)
    finally:
        stop.set()
        beating.join()
    elapsed = time.monotonic() - started
    # then it was stopped near the limit, and the other thread beat all along
    assert elapsed < 10
    gaps = [b - a for a, b in zip(ticks, ticks[1:], strict=False)]
    assert len(ticks) >= 5 and max(gaps) < 1.0, gaps
    # and a fresh child scores the next batch
    assert scorer.compose(SPECS, ["\\boxed{1}"], ["1"])[0] == [1.5]


def test_a_configuration_error_inside_the_child_is_an_error_of_the_batch(scorer: RewardScorer) -> None:
    # (a spec built without validation; the child validates it again)
    with pytest.raises(RewardScoringError, match="kwargs.pattern"):
        scorer.compose([RewardSpec.model_construct(name="regex", weight=1.0, kwargs={})], ["a"], ["a"])


def test_the_budget_grows_with_each_python_rewards_per_sample_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(scoring.TIMEOUT_ENV, raising=False)
    python = RewardSpec(name="python", kwargs={"code": "def reward(completion, answer):\n    return 1.0\n",
                                               "timeout_s": 2})
    assert scoring_timeout_s(SPECS, 100) == scoring.DEFAULT_BASE_TIMEOUT_S
    assert scoring_timeout_s([*SPECS, python], 100) == scoring.DEFAULT_BASE_TIMEOUT_S + scoring.STARTUP_GRACE_S + 200


def test_rows_cross_to_the_child_once_per_group_and_errors_come_back_with_their_message(scorer: RewardScorer) -> None:
    reads_row = RewardSpec(
        name="python",
        kwargs={"code": "def reward(completion, answer, row):\n    return float(completion == row['unit'])\n"},
    )
    check = RewardSpec(name="string_check", kwargs={"operation": "eq", "field": "unit"})
    first, second = {"unit": "m", "prompt": "p1"}, {"prompt": "p2"}
    rows = [first, first, second, second]  # a group's responses share their prompt's row
    request = scoring._rows_request(rows, 4)
    assert request == {"rows": [first, second], "row_index": [0, 0, 1, 1]}
    result = scorer.score([reads_row, check], ["m", "x", "m", "m"], ["", "", "", ""], rows)
    assert result.parts == {"python": [1.0, 0.0, 0.0, 0.0], "string_check": [1.0, 0.0, 0.0, 0.0]}
    assert result.errors["python"][:2] == [None, None] and "KeyError: 'unit'" in str(result.errors["python"][2])
    assert result.errors["string_check"] == [None, None, *["string_check: the row has no field 'unit'"] * 2]
    assert result.reporting == ["python", "string_check"]
    total, per_fn = scorer.compose([reads_row, check], ["m", "x", "m", "m"], ["", "", "", ""], rows)
    assert (total, per_fn) == compose_rewards([reads_row, check], ["m", "x", "m", "m"], ["", "", "", ""], rows)
    assert per_fn["python/errors"] == [0.0, 0.0, 1.0, 1.0]


def test_the_budget_grows_with_each_judges_requests() -> None:
    judge = RewardSpec(name="judge", kwargs={"rubric": "{completion}", "timeout_s": 10})
    env = {"REMIX_JUDGE_CONCURRENCY": "4"}
    # 8 samples, 4 at a time: 2 waves of a request and its 2 retries (10 s each, up to 5 s between tries).
    assert scoring_timeout_s([judge], 8, base_s=1.0, environ=env) == 1.0 + 2 * (3 * 10 + 2 * 5)


def test_the_scoring_child_gets_none_of_the_worker_s_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    # the worker's hub token (for gated models) and database URL stay in the worker
    monkeypatch.setenv("HF_TOKEN", "hf_secretTokenOfTheWorker")
    monkeypatch.setenv("REMIX_DATABASE_URL", "postgresql+psycopg://remix:pw@db/remix")
    child = RewardScorer()
    try:
        process = child._start()
        with open(f"/proc/{process.pid}/environ", "rb") as fh:
            names = {entry.split(b"=", 1)[0].decode() for entry in fh.read().split(b"\0") if entry}
    finally:
        child._process = process
        child.close()
    assert "HF_TOKEN" not in names and "REMIX_DATABASE_URL" not in names
    assert names <= set(scoring._PASSED_ENV) | {"PYTHONPATH", "REMIX_SCORING_MEMORY_BYTES"}


def test_a_scoring_child_that_dies_is_reported_as_dead_not_slow(monkeypatch: pytest.MonkeyPatch) -> None:
    # 8 MiB of address space is less than the interpreter already holds: the child's imports fail
    monkeypatch.setattr(scoring, "MEMORY_BYTES", 8 << 20)
    dying = RewardScorer()
    started = time.monotonic()
    try:
        with pytest.raises(RewardScoringError, match=r"reward scoring died \(exit code 1\)"):
            dying.compose(SPECS, ["\\boxed{1}"], ["1"])
    finally:
        dying.close()
    assert time.monotonic() - started < 60  # reported when it died, not at the batch's time limit
