"""The "judge" reward: a model as judge, on the OpenAI-compatible chat-completions endpoint of the operator.

The operator names the endpoint in the environment of the workers (and of the API, for
`POST /v1/rewards/dry-run`); a job only gives the rubric and its limits, never a URL, so no tenant
can make a worker call an address of its choosing (SSRF):

- ``REMIX_JUDGE_URL``: base URL of the API, e.g. ``https://api.openai.com/v1`` or
  ``http://vllm:8000/v1`` (requests go to ``<url>/chat/completions``; a URL that already ends in
  ``/chat/completions`` is used as is);
- ``REMIX_JUDGE_MODEL``: the model name sent with each request (required with the URL);
- ``REMIX_JUDGE_API_KEY``: sent as ``Authorization: Bearer <key>`` when set;
- ``REMIX_JUDGE_CONCURRENCY``: requests in flight at once per batch (default 8).

Each completion gets one request: the rubric with ``{completion}``, ``{answer}`` and ``{<row field>}``
replaced by plain substitution (one pass, like remix_engine/prompt_template.py: no format specs, other
braces literal), sent as the user message with temperature 0. The reply must hold a score in [0, 1]:
a JSON object ``{"score": x}`` (the last one wins) or else the last number of the text after any
``</think>``. Connection errors, 429 and 5xx answers are retried twice with backoff; a request past
``timeout_s`` is not retried. Whatever goes wrong with one sample (timeout, HTTP error, no score) is
that sample's error (``RewardScores.errors``), like a failing python reward: it scores None and counts
in the step's ``reward/judge/error_rate``. Without ``REMIX_JUDGE_URL`` the reward raises
``JudgeNotConfigured`` (the API refuses such a job at submission; a worker fails it at start).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from remix_engine.reward_specs import PLACEHOLDER
from remix_engine.sandbox import RewardScores

URL_ENV = "REMIX_JUDGE_URL"
MODEL_ENV = "REMIX_JUDGE_MODEL"
API_KEY_ENV = "REMIX_JUDGE_API_KEY"
CONCURRENCY_ENV = "REMIX_JUDGE_CONCURRENCY"
JUDGE_ENV = (URL_ENV, MODEL_ENV, API_KEY_ENV, CONCURRENCY_ENV)
DEFAULT_CONCURRENCY = 8
MAX_CONCURRENCY = 64
RETRIES = 2  # after the first try, for connection errors, 429 and 5xx
BACKOFF_S = 0.5  # doubled after each retry; a Retry-After up to MAX_RETRY_AFTER_S is honoured instead
MAX_RETRY_AFTER_S = 5.0
MAX_PROMPT_CHARS = 512 * 1024  # a rendered rubric longer than this is a sample's error, never sent
MAX_REPLY_CHARS = 64 * 1024  # only the end of a longer reply is searched for the score
_RETRIED_STATUS = {429, 500, 502, 503, 504}
_SCORE_FIELD = re.compile(r'"score"\s*:\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)')
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
_THINK_CLOSE = "</think>"


class JudgeNotConfigured(RuntimeError):
    """The judge reward was asked for where the operator configured no judge endpoint."""


@dataclass(frozen=True)
class JudgeEndpoint:
    url: str  # the chat-completions URL itself
    model: str
    api_key: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> JudgeEndpoint:
        env = os.environ if environ is None else environ
        base = env.get(URL_ENV, "").strip()
        if not base:
            raise JudgeNotConfigured(
                f"the judge reward needs a judge endpoint, and none is configured here: the operator sets "
                f"{URL_ENV} (an OpenAI-compatible API such as https://api.openai.com/v1) and {MODEL_ENV}"
            )
        if not base.startswith(("http://", "https://")):
            raise JudgeNotConfigured(f"{URL_ENV} must be an http:// or https:// URL, got {base!r}")
        model = env.get(MODEL_ENV, "").strip()
        if not model:
            raise JudgeNotConfigured(f"{URL_ENV} is set but {MODEL_ENV} (the judge model's name) is not")
        url = base.rstrip("/")
        if not url.endswith("/chat/completions"):
            url += "/chat/completions"
        raw_concurrency = env.get(CONCURRENCY_ENV, "").strip() or str(DEFAULT_CONCURRENCY)
        try:
            concurrency = int(raw_concurrency)
        except ValueError:
            raise JudgeNotConfigured(f"{CONCURRENCY_ENV} must be an integer, got {raw_concurrency!r}") from None
        if not 1 <= concurrency <= MAX_CONCURRENCY:
            raise JudgeNotConfigured(f"{CONCURRENCY_ENV} must be in [1, {MAX_CONCURRENCY}], got {concurrency}")
        return cls(url=url, model=model, api_key=env.get(API_KEY_ENV) or None, concurrency=concurrency)


def judge_configured(environ: Mapping[str, str] | None = None) -> bool:
    try:
        JudgeEndpoint.from_env(environ)
    except JudgeNotConfigured:
        return False
    return True


def judge_budget_s(timeout_s: float, samples: int, environ: Mapping[str, str] | None = None) -> float:
    """Longest a batch of `samples` can take: every request timing out after all its retries and backoffs."""
    env = os.environ if environ is None else environ
    try:
        concurrency = min(max(int(env.get(CONCURRENCY_ENV) or DEFAULT_CONCURRENCY), 1), MAX_CONCURRENCY)
    except ValueError:
        concurrency = DEFAULT_CONCURRENCY
    waves = math.ceil(samples / concurrency)
    per_request = (RETRIES + 1) * timeout_s + RETRIES * MAX_RETRY_AFTER_S
    return waves * per_request


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def render_rubric(rubric: str, completion: str, answer: str, row: Mapping[str, Any]) -> str:
    """The rubric with {completion}, {answer} and {<row field>} replaced, in one pass; others stay as written."""
    values = {key: _value_text(value) for key, value in row.items()}
    values["completion"], values["answer"] = completion, answer
    return PLACEHOLDER.sub(lambda match: values.get(match[1], match[0]), rubric)


def parse_score(reply: str) -> float:
    """The score in a judge's reply: the last JSON "score" field, else the last number (after </think>)."""
    text = reply.rsplit(_THINK_CLOSE, 1)[-1][-MAX_REPLY_CHARS:]
    fields = _SCORE_FIELD.findall(text)
    numbers = fields or _NUMBER.findall(text)
    if not numbers:
        raise ValueError(f"judge reply holds no score: {reply[:200]!r}")
    score = float(numbers[-1])
    if not math.isfinite(score) or not 0.0 <= score <= 1.0:
        raise ValueError(f"judge score {numbers[-1]} is outside [0, 1]")
    return score


def _retry_delay(response: Any, attempt: int) -> float:
    header = response.headers.get("retry-after", "") if response is not None else ""
    try:
        delay = float(header)
    except ValueError:
        delay = BACKOFF_S * 2**attempt
    return min(max(delay, 0.0), MAX_RETRY_AFTER_S)


def _ask(client: Any, endpoint: JudgeEndpoint, prompt: str, *, max_tokens: int, timeout_s: float) -> str:
    """One judgement: the reply's text. Raises ValueError with the reason of a failure."""
    import httpx

    body = {
        "model": endpoint.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
    reason = "no attempt was made"
    for attempt in range(RETRIES + 1):
        response = None
        try:
            response = client.post(endpoint.url, json=body, headers=headers, timeout=timeout_s)
        except httpx.TimeoutException:
            raise ValueError(f"judge request timed out after {timeout_s:g}s") from None
        except httpx.TransportError as error:
            reason = f"judge endpoint unreachable: {type(error).__name__}: {error}"
        else:
            if response.status_code == 200:
                return _reply_text(response)
            reason = f"judge endpoint answered HTTP {response.status_code}: {response.text[:200]!r}"
            if response.status_code not in _RETRIED_STATUS:
                raise ValueError(reason)
        if attempt < RETRIES:
            time.sleep(_retry_delay(response, attempt))
    raise ValueError(f"{reason} (after {RETRIES + 1} attempts)")


def _reply_text(response: Any) -> str:
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise ValueError(f"malformed judge reply (no choices[0].message.content): {response.text[:200]!r}") from None
    if not isinstance(content, str):
        raise ValueError("malformed judge reply: message.content is not text")
    return content


def judge_reward(
    completions: list[str],
    answers: list[str],
    *,
    rubric: str,
    timeout_s: float = 30.0,
    max_tokens: int = 512,
    rows: Sequence[Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
    **_: Any,
) -> RewardScores:
    """Score each completion with the operator's judge model; a failed request fails only its sample."""
    import httpx

    if len(completions) != len(answers):
        raise ValueError(f"got {len(completions)} completions but {len(answers)} answers")
    endpoint = JudgeEndpoint.from_env(environ)
    sample_rows: Sequence[Mapping[str, Any]] = rows if rows is not None else [{}] * len(completions)
    if len(sample_rows) != len(completions):
        raise ValueError(f"got {len(sample_rows)} rows for {len(completions)} completions")
    scores: list[float | None] = [None] * len(completions)
    errors: list[str | None] = [None] * len(completions)

    def judge(index: int, client: Any) -> None:
        prompt = render_rubric(rubric, completions[index], str(answers[index]), sample_rows[index])
        try:
            if len(prompt) > MAX_PROMPT_CHARS:
                raise ValueError(f"the rendered rubric is {len(prompt)} characters; at most {MAX_PROMPT_CHARS}")
            scores[index] = parse_score(_ask(client, endpoint, prompt, max_tokens=max_tokens, timeout_s=timeout_s))
        except ValueError as error:
            errors[index] = str(error)[:500]

    if not completions:
        return RewardScores(scores, errors)
    # No redirects and no proxy settings from the environment: requests go to the configured URL only.
    with httpx.Client(follow_redirects=False, trust_env=False) as client:
        with ThreadPoolExecutor(max_workers=min(endpoint.concurrency, len(completions))) as pool:
            list(pool.map(lambda i: judge(i, client), range(len(completions))))
    return RewardScores(scores, errors)


def check_judge() -> None:
    """Raise JudgeNotConfigured unless this process can reach a judge (a worker calls it at job start)."""
    JudgeEndpoint.from_env()
