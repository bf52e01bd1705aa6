"""The judge reward against a judge model served over HTTP.

The judge model is the one stand-in of these tests (tests/judge_stub.py: a real HTTP server on
127.0.0.1 speaking OpenAI's chat-completions protocol, since the operator's judge is an outside
service); the reward, its HTTP client, retries, timeouts and the scoring child are the real ones.
"""

from __future__ import annotations

import socket
import time

import pytest
from judge_stub import JudgeStub, Reply

import remix_engine.judge as judge
from remix_engine.config import RewardSpec, TrainConfig
from remix_engine.judge import JudgeEndpoint, JudgeNotConfigured, judge_reward, parse_score, render_rubric
from remix_engine.rewards import REWARDS
from remix_engine.scoring import RewardScorer, RewardScoringError

RUBRIC = "Question: {prompt}\nReference: {answer}\nResponse: {completion}\nLevel {level}, {missing} \\boxed{}"


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(judge, "BACKOFF_S", 0.01)


def test_each_completion_is_judged_with_the_rendered_rubric(fast_retries: None) -> None:
    rows = [{"prompt": "What is 2+2?", "level": 1}, {"prompt": "Name a prime.", "level": 2}]
    with JudgeStub() as stub:
        env = stub.env(model="judge-large", REMIX_JUDGE_API_KEY="sk-operator")
        result = judge_reward(["GOOD: 4", "9"], ["4", "2"], rubric=RUBRIC, max_tokens=64, rows=rows, environ=env)
    assert list(result) == [1.0, 0.0] and result.errors == [None, None]
    assert REWARDS.get("judge") is judge_reward
    by_prompt = sorted(stub.requests, key=lambda r: r["body"]["messages"][0]["content"])
    first = by_prompt[1]  # "Question: What is 2+2?..."
    assert first["path"] == "/v1/chat/completions"
    assert first["headers"]["Authorization"] == "Bearer sk-operator"
    assert first["body"] == {
        "model": "judge-large",
        "messages": [
            {
                "role": "user",
                # plain substitution: unknown placeholders and other braces stay as written
                "content": "Question: What is 2+2?\nReference: 4\nResponse: GOOD: 4\nLevel 1, {missing} \\boxed{}",
            }
        ],
        "max_tokens": 64,
        "temperature": 0,
    }


def test_substitution_is_one_pass_so_text_inside_a_value_is_never_substituted() -> None:
    rendered = render_rubric("{completion} vs {answer}", "{answer}", "42", {"answer": "row value"})
    assert rendered == "{answer} vs 42"  # the reference answer wins over a row column of that name


@pytest.mark.parametrize(
    ("reply", "score"),
    [
        ('{"score": 0.75}', 0.75),
        ('The response is right. {"score": 1}', 1.0),
        ('{"score": 0.2} on reflection {"score": 0.9}', 0.9),
        ("<think>maybe 7 out of 10</think>\nFinal score: 0.5", 0.5),
        ("0", 0.0),
        ("Score: 1e-1", 0.1),
    ],
)
def test_scores_are_read_from_json_or_the_final_number(reply: str, score: float) -> None:
    assert parse_score(reply) == score


@pytest.mark.parametrize(("reply", "message"), [("great answer", "no score"), ("8 out of 10", "outside [0, 1]"),
                                               ('{"score": -0.5}', "outside [0, 1]")])
def test_a_reply_without_a_score_in_range_is_refused(reply: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_score(reply)


def test_a_judge_past_its_timeout_fails_only_that_sample() -> None:
    def respond(prompt: str) -> str | Reply:
        return Reply(delay_s=3.0) if "slow" in prompt else '{"score": 1}'

    with JudgeStub(respond) as stub:
        started = time.monotonic()
        result = judge_reward(["slow", "fast"], ["", ""], rubric="{completion}", timeout_s=0.5, environ=stub.env())
        elapsed = time.monotonic() - started
    assert list(result) == [None, 1.0]
    assert result.errors[0] == "judge request timed out after 0.5s" and result.errors[1] is None
    assert elapsed < 2.5  # not retried: the timeout is the sample's budget
    assert stub.prompts().count("slow") == 1


def test_server_errors_are_retried_and_client_errors_are_not(fast_retries: None) -> None:
    calls: dict[str, int] = {}

    def respond(prompt: str) -> str | Reply:
        calls[prompt] = calls.get(prompt, 0) + 1
        if prompt == "flaky" and calls[prompt] <= 2:
            return Reply(status=503, body='{"error": "overloaded"}')
        if prompt == "down":
            return Reply(status=500, body="internal error")
        if prompt == "limited" and calls[prompt] == 1:
            return Reply(status=429, body="slow down", headers={"Retry-After": "0"})
        if prompt == "refused":
            return Reply(status=401, body='{"error": "bad key"}')
        return '{"score": 0.5}'

    with JudgeStub(respond) as stub:
        result = judge_reward(["flaky", "down", "limited", "refused"], [""] * 4, rubric="{completion}",
                              environ=stub.env())
    assert list(result) == [0.5, None, 0.5, None]
    assert calls == {"flaky": 3, "down": 3, "limited": 2, "refused": 1}
    assert result.errors[0] is None and result.errors[2] is None
    assert "HTTP 500" in str(result.errors[1]) and "(after 3 attempts)" in str(result.errors[1])
    assert "HTTP 401" in str(result.errors[3]) and "bad key" in str(result.errors[3])


def test_malformed_replies_are_errors_of_their_sample() -> None:
    def respond(prompt: str) -> str | Reply:
        return {
            "not json": Reply(body="<html>gateway</html>"),
            "no choices": Reply(body='{"choices": []}'),
            "no score": "I cannot decide.",
        }.get(prompt, '{"score": 1}')

    with JudgeStub(respond) as stub:
        result = judge_reward(["not json", "no choices", "no score", "ok"], [""] * 4, rubric="{completion}",
                              environ=stub.env())
    assert list(result) == [None, None, None, 1.0]
    assert "malformed judge reply" in str(result.errors[0]) and "malformed judge reply" in str(result.errors[1])
    assert "holds no score" in str(result.errors[2])


def test_an_unreachable_judge_is_an_error_of_every_sample(fast_retries: None) -> None:
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {"REMIX_JUDGE_URL": f"http://127.0.0.1:{port}/v1", "REMIX_JUDGE_MODEL": "m"}
    result = judge_reward(["a", "b"], ["", ""], rubric="{completion}", timeout_s=2, environ=env)
    assert list(result) == [None, None]
    assert all("judge endpoint unreachable" in str(error) for error in result.errors)


def test_requests_run_concurrently() -> None:
    with JudgeStub(lambda _prompt: Reply(delay_s=0.5)) as stub:
        started = time.monotonic()
        result = judge_reward(["a"] * 8, [""] * 8, rubric="{completion}", environ=stub.env(REMIX_JUDGE_CONCURRENCY="8"))
        elapsed = time.monotonic() - started
    assert list(result) == [1.0] * 8 and elapsed < 3.0  # 8 x 0.5 s one at a time would be 4 s


def test_without_an_operator_endpoint_the_judge_is_refused() -> None:
    with pytest.raises(JudgeNotConfigured, match="REMIX_JUDGE_URL"):
        judge_reward(["a"], ["b"], rubric="{completion}", environ={})
    with pytest.raises(JudgeNotConfigured, match="REMIX_JUDGE_MODEL"):
        JudgeEndpoint.from_env({"REMIX_JUDGE_URL": "http://judge/v1"})
    with pytest.raises(JudgeNotConfigured, match="http"):
        JudgeEndpoint.from_env({"REMIX_JUDGE_URL": "file:///etc/passwd", "REMIX_JUDGE_MODEL": "m"})
    endpoint = JudgeEndpoint.from_env({"REMIX_JUDGE_URL": "https://api.example/v1/", "REMIX_JUDGE_MODEL": "m"})
    assert endpoint.url == "https://api.example/v1/chat/completions" and endpoint.api_key is None


def test_the_scoring_child_reaches_the_judge_named_in_its_environment() -> None:
    spec = RewardSpec(name="judge", kwargs={"rubric": "{label}: {completion}", "timeout_s": 5})
    rows = [{"label": "GOOD"}, {"label": "bad"}]
    with JudgeStub() as stub:
        scorer = RewardScorer(env=stub.env())
        try:
            result = scorer.score([spec], ["x", "y"], ["", ""], rows)
        finally:
            scorer.close()
    assert result.parts == {"judge": [1.0, 0.0]} and result.errors == {"judge": [None, None]}
    assert sorted(stub.prompts()) == ["GOOD: x", "bad: y"]
    unconfigured = RewardScorer(env={"REMIX_JUDGE_URL": ""})
    try:
        with pytest.raises(RewardScoringError, match="JudgeNotConfigured: .*REMIX_JUDGE_URL"):
            unconfigured.score([spec], ["x"], [""], rows[:1])
    finally:
        unconfigured.close()


def test_a_worker_without_a_judge_endpoint_refuses_the_job_at_start(
    random_model_dir: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from remix_engine.trainer import Trainer

    monkeypatch.delenv("REMIX_JUDGE_URL", raising=False)
    config = TrainConfig.model_validate(
        {
            "model": {"name_or_path": random_model_dir},
            "reward": {"functions": [{"name": "judge", "kwargs": {"rubric": "{completion}"}}]},
        }
    )
    with pytest.raises(JudgeNotConfigured, match="REMIX_JUDGE_URL"):
        Trainer(config, tmp_path)


def test_the_judges_api_key_never_reaches_the_python_rewards_jail() -> None:
    # The scoring child holds the operator's judge key; the python reward it starts gets an empty environment.
    peek = (
        "def reward(completion, answer):\n"
        "    import os\n"
        "    return float(any('sk-operator-secret' in v for v in os.environ.values()))\n"
    )
    scorer = RewardScorer(env={"REMIX_JUDGE_URL": "http://judge/v1", "REMIX_JUDGE_API_KEY": "sk-operator-secret"})
    try:
        result = scorer.score([RewardSpec(name="python", kwargs={"code": peek})], ["a"], [""])
    finally:
        scorer.close()
    assert result.parts == {"python": [0.0]} and result.errors == {"python": [None]}
