"""POST /v1/rewards/dry-run against the real app: rewards scored against a row in the real scoring child
(the python reward in its real jail), bad configs and bounds refused naming the field, and the judge
reward only where the operator configured an endpoint (the judge model is tests/judge_stub.py, the
one stand-in: an outside service), at submission too."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from judge_stub import JudgeStub
from service_testing import Caller, assert_problem

import service.reward_dry_run as reward_dry_run
from service.main import create_app
from service.settings import Settings

READS_ROW = """
def reward(completion, answer, row):
    if completion == "crash":
        raise ValueError("cannot grade " + row["prompt"])
    return float(completion.endswith(row["unit"])) + 0.5 * (answer == "42")
"""


def _nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


def _dry_run(client: TestClient, caller: Caller, body: dict[str, Any]) -> Any:
    return client.post("/v1/rewards/dry-run", json=body, headers=caller.headers)


@pytest.fixture(scope="module")
def judge() -> Iterator[JudgeStub]:
    with JudgeStub() as stub:
        yield stub


@pytest.fixture(scope="module")
def judge_client(settings: Settings, judge: JudgeStub) -> TestClient:
    """The app of a service whose operator configured a judge endpoint (the stub)."""
    configured = settings.model_copy(update={"judge_url": judge.base_url, "judge_model": "stub-judge"})
    return TestClient(create_app(configured))


def test_a_dry_run_scores_completions_against_the_row(client: TestClient, alice: Caller) -> None:
    body = {
        "reward": {
            "functions": [
                {"name": "math_verify"},
                {"name": "string_check", "weight": 0.5, "kwargs": {"operation": "contains", "field": "unit"}},
                {"name": "python", "weight": 2.0, "kwargs": {"code": READS_ROW}},
            ]
        },
        "row": {"prompt": "How many apples?", "answer": 42, "unit": "apples"},
        "completions": ["\\boxed{42} apples", "\\boxed{41}", "crash"],
    }
    response = _dry_run(client, alice, body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["parts"] == {
        "math_verify": [1.0, 0.0, 0.0],
        "string_check": [1.0, 0.0, 0.0],
        "python": [1.5, 0.5, 0.0],  # the python reward read the row's column and the numeric answer as "42"
    }
    assert result["scores"] == pytest.approx([1.0 + 0.5 + 3.0, 1.0, 0.0])
    assert result["errors"]["math_verify"] == [None, None, None]
    assert result["errors"]["string_check"] == [None, None, None]
    assert result["errors"]["python"][:2] == [None, None]
    assert "ValueError: cannot grade How many apples?" in result["errors"]["python"][2]


def test_a_missing_row_field_is_an_error_of_the_sample(client: TestClient, alice: Caller) -> None:
    body = {
        "reward": {"functions": [{"name": "string_check", "kwargs": {"operation": "eq", "field": "label"}}]},
        "row": {"answer": "x"},
        "completions": ["x"],
    }
    result = _dry_run(client, alice, body).json()
    assert result == {
        "scores": [0.0],
        "parts": {"string_check": [0.0]},
        "errors": {"string_check": ["string_check: the row has no field 'label'"]},
    }


BAD_BODIES = [
    pytest.param({"name": "regex", "kwargs": {"pattern": "("}}, "reward.functions.0.kwargs.pattern", id="regex"),
    pytest.param({"name": "no_such_reward"}, "reward.functions.0.name", id="unknown-reward"),
    pytest.param({"name": "python", "kwargs": {"code": "x = 1"}}, "reward.functions.0.kwargs", id="python-no-def"),
    pytest.param({"name": "string_check", "kwargs": {"operation": "like"}}, "reward.functions.0.kwargs.operation",
                 id="string-check-operation"),
    pytest.param({"name": "judge", "kwargs": {"rubric": "{completion}", "url": "http://169.254.169.254/"}},
                 "reward.functions.0.kwargs.url", id="judge-url-from-the-tenant"),
]


@pytest.mark.parametrize(("function", "field"), BAD_BODIES)
def test_an_invalid_reward_config_is_422_naming_the_field(
    client: TestClient, alice: Caller, function: dict[str, Any], field: str
) -> None:
    body = {"reward": {"functions": [function]}, "row": {"answer": "1"}, "completions": ["1"]}
    problem = assert_problem(_dry_run(client, alice, body), 422, field)
    assert [e["field"] for e in problem["errors"]] == [field]


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        pytest.param({"completions": []}, "completions", id="no-completions"),
        pytest.param({"completions": ["a"] * 65}, "completions", id="65-completions"),
        pytest.param({"completions": ["a" * (64 * 1024 + 1)]}, "completions.0", id="completion-over-64-kib"),
        pytest.param({"row": {"answer": "1", "notes": "x" * (256 * 1024)}}, "row", id="row-over-256-kib"),
        pytest.param({"row": {"answer": ["1", "2"]}}, "row", id="answer-not-text"),
        pytest.param({"row": {"answer": "1", "deep": _nested(40)}}, "row", id="row-too-deep"),
        pytest.param({"reward": {"functions": []}}, "reward.functions", id="no-reward"),
        pytest.param({"surprise": 1}, "surprise", id="unknown-field"),
    ],
)
def test_sizes_are_bounded_and_named(client: TestClient, alice: Caller, patch: dict[str, Any], field: str) -> None:
    body = {"reward": {"functions": [{"name": "exact_match"}]}, "row": {"answer": "1"}, "completions": ["1"], **patch}
    problem = assert_problem(_dry_run(client, alice, body), 422, field)
    assert [e["field"] for e in problem["errors"]] == [field]


def test_a_body_over_the_json_cap_is_413(client: TestClient, alice: Caller) -> None:
    body = {"reward": {"functions": [{"name": "exact_match"}]}, "completions": ["a" * 60_000] * 20}
    assert_problem(_dry_run(client, alice, body), 413, "request body exceeds")


def test_a_dry_run_needs_an_api_key(client: TestClient) -> None:
    body = {"reward": {"functions": [{"name": "exact_match"}]}, "completions": ["1"]}
    assert_problem(client.post("/v1/rewards/dry-run", json=body), 401, "Missing API key")


def test_a_batch_past_its_budget_is_422_and_the_next_dry_run_works(
    client: TestClient, alice: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reward_dry_run, "MAX_TIMEOUT_S", 1.0)
    sleeper = "def reward(completion, answer):\n    import time\n    time.sleep(5)\n    return 1.0\n"
    body = {"reward": {"functions": [{"name": "python", "kwargs": {"code": sleeper, "timeout_s": 10}}]},
            "completions": ["a"]}
    problem = assert_problem(_dry_run(client, alice, body), 422, "took longer than its limit of 1s")
    assert problem["type"] == "urn:remix:problem:reward-scoring-failed"
    quick = {"reward": {"functions": [{"name": "exact_match"}]}, "row": {"answer": "a"}, "completions": ["a"]}
    assert _dry_run(client, alice, quick).json()["scores"] == [1.0]


def test_without_a_judge_endpoint_the_judge_reward_is_refused_naming_it(client: TestClient, alice: Caller) -> None:
    judge_spec = {"name": "judge", "kwargs": {"rubric": "{completion}"}}
    body = {"reward": {"functions": [{"name": "format"}, judge_spec]}, "completions": ["x"]}
    problem = assert_problem(_dry_run(client, alice, body), 422, "REMIX_JUDGE_URL")
    assert [e["field"] for e in problem["errors"]] == ["reward.functions.1.name"]
    # ... and at submission: the config schema cannot see the settings, the service does.
    job = {"config": {"total_steps": 1, "reward": {"functions": [judge_spec]}}}
    problem = assert_problem(client.post("/v1/jobs", json=job, headers=alice.headers), 422, "REMIX_JUDGE_URL")
    assert [e["field"] for e in problem["errors"]] == ["config.reward.functions.0.name"]


def test_the_judge_scores_with_the_operators_endpoint(
    judge_client: TestClient, judge: JudgeStub, alice: Caller
) -> None:
    rubric = "Grade the answer to {prompt} ({level}) against {answer}: {completion}"
    body = {
        "reward": {"functions": [{"name": "judge", "kwargs": {"rubric": rubric, "timeout_s": 10}}]},
        "row": {"prompt": "2+2", "answer": "4", "level": "easy"},
        "completions": ["GOOD 4", "5"],
    }
    response = _dry_run(judge_client, alice, body)
    assert response.status_code == 200, response.text
    assert response.json() == {"scores": [1.0, 0.0], "parts": {"judge": [1.0, 0.0]}, "errors": {"judge": [None, None]}}
    prompts = judge.prompts()
    assert "Grade the answer to 2+2 (easy) against 4: GOOD 4" in prompts
    assert "Grade the answer to 2+2 (easy) against 4: 5" in prompts
    assert {r["body"]["model"] for r in judge.requests} == {"stub-judge"}
    # A service with a judge endpoint accepts a job that uses it.
    job = {"config": {"total_steps": 1, "reward": {"functions": [{"name": "judge", "kwargs": {"rubric": rubric}}]}}}
    assert judge_client.post("/v1/jobs", json=job, headers=alice.headers).status_code == 202
