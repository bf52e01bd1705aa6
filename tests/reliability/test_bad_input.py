"""Bad input corpus: every malformed, out-of-range, oversized or hostile request gets a clear 4xx
problem+json (never a 500) and writes nothing (no row in any table, no file in the artifact store)."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from reliability_testing import UPLOAD_LIMIT, Caller, assert_problem, files_under, row_counts
from sqlalchemy.orm import Session

from service.settings import Settings

JSON_HEADERS = {"Content-Type": "application/json"}


@pytest.fixture
def unchanged(db: Session, settings: Settings, alice: Caller) -> Iterator[None]:
    """The test must leave every table and the artifact store exactly as it found them
    (counted after the caller's own tenant and key exist)."""
    before, files = row_counts(db), files_under(settings.artifacts_dir)
    yield
    assert row_counts(db) == before
    assert files_under(settings.artifacts_dir) == files


def _post_job(client: TestClient, caller: Caller, body: Any) -> Any:
    return client.post("/v1/jobs", json=body, headers=caller.headers)


# ----------------------------------------------------------------------------- job bodies

MALFORMED_BODIES = [
    pytest.param(b'{"config": {"total_steps": 3', 422, id="truncated-json"),
    pytest.param(b"{'config': {}}", 422, id="single-quotes"),
    pytest.param(b"", 422, id="empty-body"),
    pytest.param(b"\xff\xfe{}", 422, id="non-utf8-bytes"),
    # Nesting beyond the parser's recursion limit is a 400 "error parsing the body", not a crash.
    pytest.param(b"[" * 100_000 + b"]" * 100_000, 400, id="deeply-nested-json"),
    pytest.param(b'{"config": ' * 5_000 + b"{}" + b"}" * 5_000, 400, id="deeply-nested-objects"),
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("raw", "status"), MALFORMED_BODIES)
def test_malformed_json_body_is_a_client_error(client: TestClient, alice: Caller, raw: bytes, status: int) -> None:
    response = client.post("/v1/jobs", content=raw, headers=alice.headers | JSON_HEADERS)
    assert_problem(response, status)


UNPARSABLE_BODIES = [
    pytest.param(b'{"config": {"total_steps": 3', "at character 28: Expecting ',' delimiter", id="truncated-json"),
    pytest.param(b"{'config': {}}", "at character 1: Expecting property name enclosed in double quotes", id="quotes"),
    pytest.param(b"\xff\xfe{}", "at character 0: Expecting value", id="non-utf8-bytes"),
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("raw", "where"), UNPARSABLE_BODIES)
def test_a_body_that_is_not_json_is_422_naming_the_body(
    client: TestClient, alice: Caller, raw: bytes, where: str
) -> None:
    # FastAPI locates the error at ('body', <character offset>): it once came out as a field named "28".
    response = client.post("/v1/jobs", content=raw, headers=alice.headers | JSON_HEADERS)
    problem = assert_problem(response, 422, f"body: invalid JSON {where}")
    assert problem["errors"] == [{"field": "body", "message": f"invalid JSON {where}"}]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("depth", [40, 600, 900])
def test_a_config_nested_too_deep_is_422_naming_the_config(client: TestClient, alice: Caller, depth: int) -> None:
    # Deep enough for Python's JSON parser, too deep for the recursive walks after it (a 500 once).
    nested = '{"a": ' * depth + "1" + "}" * depth
    raw = ('{"config": {"reward": {"functions": [{"name": "python", "kwargs": {"code": ' + nested + "}}]}}}").encode()
    response = client.post("/v1/jobs", content=raw, headers=alice.headers | JSON_HEADERS)
    problem = assert_problem(response, 422, "nested more than 32 levels deep")
    assert problem["errors"][0]["field"] == "config"


WRONG_TYPES = [
    pytest.param([], "body", id="array-body"),
    pytest.param("job", "body", id="string-body"),
    pytest.param({"config": "fast"}, "config", id="config-string"),
    pytest.param({"config": {"total_steps": "many"}}, "config.total_steps", id="steps-string"),
    pytest.param({"config": {"total_steps": 2.5}}, "config.total_steps", id="steps-float"),
    pytest.param({"config": {"algorithm": []}}, "config.algorithm", id="section-list"),
    pytest.param({"config": {"model": "gpt"}}, "config.model", id="model-section-string"),
    pytest.param({"name": 5}, "name", id="name-number"),
    pytest.param({"dataset_id": "not-a-uuid"}, "dataset_id", id="dataset-id-not-uuid"),
    pytest.param({"config": {"optim": {"betas": [0.9]}}}, "config.optim.betas", id="betas-short"),
    pytest.param({"config": {"reward": {"functions": []}}}, "config.reward.functions", id="no-rewards"),
    pytest.param({"config": {"reward": {"functions": [{"name": "rm -rf"}]}}}, "config.reward", id="reward"),
    pytest.param({"config": {"bogus": 1}}, "config.bogus", id="unknown-config-field"),
    pytest.param({"bogus": 1}, "bogus", id="unknown-top-level-field"),
    pytest.param({"name": "x" * 301}, "name", id="name-too-long"),
    pytest.param({"base_model": ""}, "base_model", id="empty-base-model"),
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("body", "field"), WRONG_TYPES)
def test_wrong_types_are_422_naming_the_field(client: TestClient, alice: Caller, body: Any, field: str) -> None:
    problem = assert_problem(_post_job(client, alice, body), 422, field)
    assert any(e["field"].startswith(field) for e in problem["errors"]), problem


OUT_OF_RANGE = [
    ("algorithm", "off_policy_fraction", 1.0),  # p must be in [0, 1)
    ("algorithm", "off_policy_fraction", -0.1),
    ("algorithm", "history_window", 0),  # N >= 1
    ("algorithm", "utd_ratio", 0),  # m >= 1
    ("algorithm", "reincarnation_step", -1),  # T >= 0
    ("algorithm", "clip_eps", 0.0),
    ("algorithm", "clip_eps", 1.0),
    ("algorithm", "kl_coef", -0.001),
    ("algorithm", "lambda_min", 1.5),
    ("algorithm", "kl_estimator", "k4"),
    ("algorithm", "name", "dpo"),
    ("rollout", "group_size", 0),
    ("rollout", "prompts_per_step", 0),
    ("rollout", "temperature", 0.0),
    ("rollout", "top_p", 1.5),
    ("rollout", "max_new_tokens", 10**9),
    ("optim", "lr", 0.0),
    ("optim", "lr", 2.0),
    ("optim", "grad_clip", -1.0),
    (None, "total_steps", 0),
    (None, "total_steps", 10**12),
    (None, "seed", -1),
    (None, "checkpoint_every", 0),
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("section", "knob", "value"), OUT_OF_RANGE)
def test_out_of_range_hyperparameters_are_422(
    client: TestClient, alice: Caller, section: str | None, knob: str, value: Any
) -> None:
    config: dict[str, Any] = {knob: value} if section is None else {section: {knob: value}}
    field = f"config.{knob}" if section is None else f"config.{section}.{knob}"
    problem = assert_problem(_post_job(client, alice, {"config": config}), 422, field)
    assert problem["type"] == "urn:remix:problem:validation-error"


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_numbers_are_422(client: TestClient, alice: Caller, literal: str) -> None:
    # Python's JSON parser accepts these literals; the bounds must still reject them.
    raw = f'{{"config": {{"algorithm": {{"off_policy_fraction": {literal}}}}}}}'.encode()
    response = client.post("/v1/jobs", content=raw, headers=alice.headers | JSON_HEADERS)
    assert_problem(response, 422, "off_policy_fraction")


@pytest.mark.usefixtures("unchanged")
def test_inconsistent_hyperparameters_are_422(client: TestClient, alice: Caller) -> None:
    # p=0.99 with 8 prompts per step leaves no fresh prompt; GRPO needs groups of at least 2.
    config = {"algorithm": {"off_policy_fraction": 0.99}, "rollout": {"prompts_per_step": 8}}
    assert_problem(_post_job(client, alice, {"config": config}), 422, "no fresh prompt")
    assert_problem(_post_job(client, alice, {"config": {"rollout": {"group_size": 1}}}), 422, "group_size")


# Strict types: JSON true is not 1, "3" is not 3 (each was accepted before and ran as a number).
NOT_NUMBERS = [
    pytest.param({"total_steps": True}, "config.total_steps", id="steps-bool"),
    pytest.param({"seed": "7"}, "config.seed", id="seed-string"),
    pytest.param({"rollout": {"group_size": True}}, "config.rollout.group_size", id="group-bool"),
    pytest.param({"optim": {"lr": True}}, "config.optim.lr", id="lr-bool"),
    pytest.param({"optim": {"lr": "0.001"}}, "config.optim.lr", id="lr-string"),
    pytest.param({"optim": {"betas": [True, 0.9]}}, "config.optim.betas.0", id="beta-bool"),
    pytest.param({"model": {"trust_remote_code": 0}}, "config.model.trust_remote_code", id="int-for-bool"),
    pytest.param(
        {"reward": {"functions": [{"name": "format", "weight": "1"}]}}, "config.reward.functions.0.weight", id="weight"
    ),
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("config", "field"), NOT_NUMBERS)
def test_bools_and_strings_are_not_numbers(client: TestClient, alice: Caller, config: Any, field: str) -> None:
    problem = assert_problem(_post_job(client, alice, {"config": config}), 422, field)
    assert [e["field"] for e in problem["errors"]] == [field]


# Sizes no real RFT job reaches, each accepted before and then failing (or never ending) on a worker.
BEYOND_ANY_REAL_JOB = [
    pytest.param({"seed": 2**64}, "config.seed", id="seed-2**64"),
    pytest.param({"seed": 2**32}, "config.seed", id="seed-2**32"),
    pytest.param({"keep_checkpoints": 1_000_000_000, "checkpoint_every": 1}, "config.keep_checkpoints", id="keep"),
    pytest.param({"keep_best_checkpoints": 101}, "config.keep_best_checkpoints", id="keep-best"),
    pytest.param({"total_steps": 100_001}, "config.total_steps", id="steps"),
    pytest.param({"checkpoint_every": 100_001}, "config.checkpoint_every", id="checkpoint-every"),
    pytest.param({"log_completions": 65}, "config.log_completions", id="log-completions"),
    pytest.param({"data": {"eval_size": 100_001}}, "config.data.eval_size", id="eval-size"),
    pytest.param({"rollout": {"prompts_per_step": 8193}}, "config.rollout.prompts_per_step", id="prompts"),
    pytest.param({"rollout": {"group_size": 257}}, "config.rollout.group_size", id="group"),
    pytest.param({"rollout": {"max_new_tokens": 65537}}, "config.rollout.max_new_tokens", id="tokens"),
    pytest.param({"rollout": {"generation_batch_size": 65537}}, "config.rollout.generation_batch_size", id="gen"),
    pytest.param({"rollout": {"top_k": 2**20 + 1}}, "config.rollout.top_k", id="top-k"),
    pytest.param({"algorithm": {"minibatch_size": 65537}}, "config.algorithm.minibatch_size", id="minibatch"),
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("config", "field"), BEYOND_ANY_REAL_JOB)
def test_counts_beyond_any_real_job_are_422(client: TestClient, alice: Caller, config: Any, field: str) -> None:
    problem = assert_problem(_post_job(client, alice, {"config": config}), 422, field)
    assert [e["field"] for e in problem["errors"]] == [field]


@pytest.mark.usefixtures("unchanged")
def test_a_rollout_too_big_to_generate_is_422_naming_the_rollout_fields(client: TestClient, alice: Caller) -> None:
    # The review's 65536 prompts x 1024 responses x 131072 tokens: every field is over its own bound...
    hostile = {"prompts_per_step": 65536, "group_size": 1024, "max_new_tokens": 131072}
    problem = assert_problem(_post_job(client, alice, {"config": {"rollout": hostile}}), 422)
    assert {e["field"] for e in problem["errors"]} == {f"config.rollout.{k}" for k in hostile}
    # ...and fields each within bounds still cannot multiply past REMIX_MAX_TOKENS_PER_STEP (2**25).
    large = {"prompts_per_step": 1024, "group_size": 64, "max_new_tokens": 1024}
    problem = assert_problem(_post_job(client, alice, {"config": {"rollout": large}}), 422, "67108864 tokens")
    assert [e["field"] for e in problem["errors"]] == [f"config.rollout.{k}" for k in large]


# Sampling the learner could not score exactly: each would bias importance ratios, or fail on the GPU.
NOT_SCORED_AS_SAMPLED = [
    pytest.param({"top_p": 0.9}, "config.rollout.top_p", "whole tempered distribution", id="top-p-filter"),
    pytest.param({"top_k": 20}, "config.rollout.top_k", "whole tempered distribution", id="top-k-filter"),
    pytest.param(
        {"backend": "vllm", "temperature": 0.005}, "config.rollout.temperature", "below 0.01 to 0.01", id="vllm-cold"
    ),
    pytest.param(
        {"backend": "vllm", "temperature": 3.0}, "config.rollout.temperature", "refuses those above 2", id="vllm-hot"
    ),
    # The builtin tiny model has 64 positions: 64 new tokens leave vLLM no room for a prompt.
    pytest.param(
        {"backend": "vllm", "max_new_tokens": 64},
        "config.rollout.max_new_tokens",
        "serves at most 64 tokens per sequence",
        id="vllm-no-room-for-a-prompt",
    ),
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("rollout", "field", "reason"), NOT_SCORED_AS_SAMPLED)
def test_sampling_the_learner_cannot_score_exactly_is_422_naming_the_field(
    client: TestClient, alice: Caller, rollout: dict[str, Any], field: str, reason: str
) -> None:
    problem = assert_problem(_post_job(client, alice, {"config": {"rollout": rollout}}), 422, field)
    assert [e["field"] for e in problem["errors"]] == [field]
    assert reason in problem["errors"][0]["message"]


def test_a_vllm_job_whose_prompts_still_fit_is_accepted(client: TestClient, alice: Caller) -> None:
    # 63 new tokens of the tiny model's 64 positions: prompts are left-truncated to one token, not refused.
    rollout = {"backend": "vllm", "max_new_tokens": 63, "temperature": 0.01}
    response = _post_job(client, alice, {"config": {"total_steps": 1, "rollout": rollout}})
    assert response.status_code == 202, response.text


BAD_TEMPLATES = [
    pytest.param("{prompt}{prompt:>1000000000}", id="gigabyte-format-spec"),
    pytest.param("{prompt!r}", id="conversion"),
    pytest.param("{prompt} {prompt.__class__}", id="attribute"),
    pytest.param("{prompt} {prompt[0]}", id="index"),
    pytest.param("Answer in \\boxed{}.", id="no-placeholder"),
    pytest.param("{prompt}" + " " * 16 * 1024, id="over-16-KiB"),
    pytest.param("{prompt}" * 9, id="nine-copies"),
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("template", BAD_TEMPLATES)
def test_bad_prompt_templates_are_422_naming_the_field(client: TestClient, alice: Caller, template: str) -> None:
    response = _post_job(client, alice, {"config": {"data": {"prompt_template": template}}})
    problem = assert_problem(response, 422, "config.data.prompt_template")
    assert [e["field"] for e in problem["errors"]] == ["config.data.prompt_template"]


def test_templates_with_literal_braces_are_accepted_as_written(client: TestClient, alice: Caller) -> None:
    # Braces other than {prompt} are text (remix_engine/prompt_template.py renders by plain replacement).
    for template in ("{prompt} Put the final answer within \\boxed{}.", "{prompt}{0}", "\\frac{1}{2} of {prompt}"):
        response = _post_job(client, alice, {"config": {"total_steps": 1, "data": {"prompt_template": template}}})
        assert response.status_code == 202, response.text
        assert response.json()["config"]["data"]["prompt_template"] == template


BAD_REWARDS = [
    pytest.param({"name": "regex", "kwargs": {"pattern": "("}}, "kwargs.pattern", id="regex-unbalanced"),
    pytest.param({"name": "regex"}, "kwargs.pattern", id="regex-without-pattern"),
    pytest.param({"name": "regex", "kwargs": {"pattern": ""}}, "kwargs.pattern", id="regex-empty"),
    pytest.param({"name": "regex", "kwargs": {"pattern": "(a)\\1"}}, "kwargs.pattern", id="regex-backreference"),
    pytest.param({"name": "regex", "kwargs": {"pattern": "a" * 1025}}, "kwargs.pattern", id="regex-too-long"),
    pytest.param({"name": "regex", "kwargs": {"pattern": ["a"]}}, "kwargs.pattern", id="regex-not-a-string"),
    pytest.param({"name": "regex", "kwargs": {"pattern": "a", "target": "x"}}, "kwargs.target", id="regex-target"),
    pytest.param({"name": "regex", "kwargs": {"pattern": "a", "flags": 2}}, "kwargs.flags", id="regex-unknown"),
    pytest.param({"name": "math_verify", "kwargs": {"tolerance": 1}}, "kwargs.tolerance", id="math-verify-kwarg"),
    pytest.param({"name": "exact_match", "kwargs": {"pattern": "a"}}, "kwargs.pattern", id="exact-match-kwarg"),
    pytest.param({"name": "format", "kwargs": {"x": 1}}, "kwargs.x", id="format-kwarg"),
    pytest.param({"name": "python", "kwargs": {"code": "x = 1"}}, "kwargs", id="python-without-reward"),
    pytest.param({"name": "string_check", "kwargs": {"field": "label"}}, "kwargs.operation", id="string-check-op"),
    pytest.param({"name": "judge", "kwargs": {"rubric": "no placeholder"}}, "kwargs.rubric", id="judge-rubric"),
    # SSRF: the judge's endpoint is the operator's (REMIX_JUDGE_URL); a job can never name one.
    pytest.param(
        {"name": "judge", "kwargs": {"rubric": "{completion}", "url": "http://169.254.169.254/latest/meta-data/"}},
        "kwargs.url",
        id="judge-url-from-a-tenant",
    ),
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("reward", "field"), BAD_REWARDS)
def test_reward_kwargs_are_checked_at_submission(client: TestClient, alice: Caller, reward: Any, field: str) -> None:
    body = {"config": {"reward": {"functions": [{"name": "math_verify"}, reward]}}}
    problem = assert_problem(_post_job(client, alice, body), 422, f"config.reward.functions.1.{field}")
    assert [e["field"] for e in problem["errors"]] == [f"config.reward.functions.1.{field}"]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_reward_weights_are_422(client: TestClient, alice: Caller, literal: str) -> None:
    raw = f'{{"config": {{"reward": {{"functions": [{{"name": "format", "weight": {literal}}}]}}}}}}'.encode()
    response = client.post("/v1/jobs", content=raw, headers=alice.headers | JSON_HEADERS)
    problem = assert_problem(response, 422, "config.reward.functions.0.weight")
    assert "finite" in problem["detail"]


# ----------------------------------------------------------------------------- models and paths

BAD_MODELS = [
    pytest.param("builtin:no-such-model", "unknown builtin model", id="unknown-builtin"),
    pytest.param("../../etc/passwd", "hub id", id="relative-traversal"),
    pytest.param("/etc", "hub id", id="absolute-path"),
    pytest.param("org/../../secret", "hub id", id="traversal-inside-hub-id"),
    pytest.param("~/models/x", "hub id", id="home-path"),
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("model", "message"), BAD_MODELS)
def test_models_the_api_can_rule_out_are_422(client: TestClient, alice: Caller, model: str, message: str) -> None:
    for body in ({"base_model": model}, {"config": {"model": {"name_or_path": model}}}):
        assert_problem(_post_job(client, alice, body), 422, message)


BAD_DATA_PATHS = [
    pytest.param({"data": {"train_path": "../../etc/passwd"}}, "config.data.train_path", id="train-traversal"),
    pytest.param({"data": {"train_path": "/etc/passwd"}}, "config.data.train_path", id="train-absolute"),
    pytest.param({"data": {"eval_path": "/var/artifacts/x.jsonl"}}, "config.data.eval_path", id="eval-abs"),
    pytest.param(
        {"data": {"train_path": "datasets/00000000-0000-0000-0000-000000000000/other-tenant.jsonl"}},
        "config.data.train_path",
        id="other-tenants-artifact-key",
    ),
    pytest.param({"data": {"train_path": "builtin:no-such-set"}}, "unknown builtin dataset", id="unknown-builtin"),
    pytest.param(
        {"eval_sets": [{"name": "leak", "path": "/etc/passwd.jsonl"}]}, "config.eval_sets", id="eval-set-path"
    ),
    pytest.param(
        {"eval_sets": [{"name": "../../x", "path": "builtin:addition"}]},
        "config.eval_sets.0.name",
        id="eval-name",
    ),
    pytest.param(
        {"eval_sets": ["aime24", {"name": "leak", "path": "/etc/passwd.jsonl"}]},
        "config.eval_sets.1.path: server paths are reserved to admin keys",
        id="eval-set-path-next-to-a-builtin",
    ),
    pytest.param(
        {"eval_sets": ["../../etc/passwd"]},
        "config.eval_sets.0.name: Value error, unknown builtin eval set '../../etc/passwd'; available: aime24",
        id="eval-set-traversal-name",
    ),
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("config", "message"), BAD_DATA_PATHS)
def test_dataset_paths_outside_the_tenant_are_rejected(
    client: TestClient, alice: Caller, config: dict[str, Any], message: str
) -> None:
    assert_problem(_post_job(client, alice, {"config": config}), 422, message)


@pytest.mark.usefixtures("unchanged")
def test_unknown_dataset_ids_are_422(client: TestClient, alice: Caller) -> None:
    missing = str(uuid.uuid4())
    for field in ("dataset_id", "eval_dataset_id"):
        assert_problem(_post_job(client, alice, {field: missing}), 422, f"dataset {missing} not found")


@pytest.mark.usefixtures("unchanged")
def test_oversized_idempotency_key_is_422(client: TestClient, alice: Caller) -> None:
    response = client.post("/v1/jobs", json={}, headers=alice.headers | {"Idempotency-Key": "k" * 256})
    assert_problem(response, 422, "idempotency-key")


# ----------------------------------------------------------------------------- path parameters

BAD_PATHS = [
    pytest.param("GET", "/v1/jobs/not-a-uuid", 422, id="job-id-not-uuid"),
    # An encoded '/' is decoded before routing: the traversal matches no route at all.
    pytest.param("GET", "/v1/jobs/..%2F..%2Fetc%2Fpasswd", 404, id="job-id-encoded-traversal"),
    pytest.param("GET", "/v1/jobs/{job}/checkpoints/-1/download", 422, id="negative-step"),
    pytest.param("GET", "/v1/jobs/{job}/checkpoints/99999999999999999999/download", 422, id="huge-step"),
    pytest.param("GET", "/v1/jobs/{job}/checkpoints/..%2F..%2Fstate/download", 404, id="step-traversal"),
    pytest.param("GET", "/v1/jobs/{job}/checkpoints/1e3/download", 422, id="step-float"),
    pytest.param("GET", "/v1/jobs/{job}/checkpoints/7/download", 404, id="step-without-checkpoint"),
    pytest.param("GET", "/v1/datasets/..%2F..%2Fetc", 404, id="dataset-id-traversal"),
    pytest.param("GET", "/v1/jobs?limit=0", 422, id="limit-zero"),
    pytest.param("GET", "/v1/jobs?limit=abc", 422, id="limit-text"),
    pytest.param("GET", "/v1/jobs?status=exploded", 422, id="unknown-status"),
    pytest.param("GET", "/v1/jobs?after=%%%garbage", 400, id="garbage-cursor"),
    pytest.param("GET", "/v1/datasets?after=eyJ0IjoxfQ", 400, id="cursor-wrong-shape"),
    pytest.param("GET", "/v1/jobs/{job}/metrics?from_step=5&to_step=1", 422, id="inverted-step-range"),
    pytest.param("GET", "/v1/jobs/{job}/metrics?from_step=-1", 422, id="negative-from-step"),
    pytest.param("GET", "/v1/jobs/{job}/events?after=-5", 422, id="negative-event-cursor"),
    pytest.param("GET", "/v1/jobs/{job}/stream?last_event_id=../../x", 400, id="bad-stream-cursor"),
    pytest.param("POST", "/v1/jobs/{job}/cancel?checkpoint=perhaps", 422, id="cancel-flag-text"),
]


@pytest.fixture(scope="module")
def existing_job(client: TestClient, database_url: str) -> tuple[Caller, str]:
    from reliability_testing import make_caller

    owner = make_caller(database_url)
    response = _post_job(client, owner, {"config": {"total_steps": 3}})
    assert response.status_code == 202, response.text
    return owner, response.json()["id"]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("method", "path", "status"), BAD_PATHS)
def test_bad_path_and_query_parameters(
    client: TestClient, existing_job: tuple[Caller, str], method: str, path: str, status: int
) -> None:
    owner, job_id = existing_job
    assert_problem(client.request(method, path.format(job=job_id), headers=owner.headers), status)


# ----------------------------------------------------------------------------- dataset uploads


def _upload(client: TestClient, caller: Caller, filename: str, data: bytes, **fields: str) -> Any:
    return client.post("/v1/datasets", files={"file": (filename, data)}, data=fields, headers=caller.headers)


def _parquet(rows: list[dict[str, Any]]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


GOOD_ROW = b'{"prompt": "1+1=", "answer": "2"}\n'


def _nested_row(depth: int) -> bytes:
    return b'{"prompt": "2+2=", "answer": "4", "x": ' + b"[" * depth + b"]" * depth + b"}"


TOO_DEEP = "nested more than 64 levels deep"
BAD_UPLOADS = [
    pytest.param("d.jsonl", b"", 400, "empty dataset", id="empty-file"),
    pytest.param("d.jsonl", b"\n\n  \n", 400, "empty dataset", id="only-blank-lines"),
    pytest.param("d.json", b"[]", 400, "empty", id="empty-json-list"),
    pytest.param("d.jsonl", GOOD_ROW * (UPLOAD_LIMIT // len(GOOD_ROW) + 1), 413, "upload limit", id="huge"),
    pytest.param("d.jsonl", b'{"text": "1+1=", "answer": "2"}\n', 400, "prompt", id="missing-prompt"),
    pytest.param("d.jsonl", b'{"prompt": "1+1="}\n', 400, "answer", id="missing-answer-column"),
    pytest.param("d.jsonl", GOOD_ROW + b'{"prompt": "2+2="}\n', 400, "line 2", id="missing-answer-row-2"),
    pytest.param("d.jsonl", b'{"prompt": 12, "answer": "2"}\n', 400, "prompt", id="prompt-not-text"),
    pytest.param("d.jsonl", b'{"prompt": "", "answer": "2"}\n', 400, "prompt", id="prompt-empty"),
    pytest.param("d.jsonl", b'["1+1=", "2"]\n', 400, "JSON object", id="row-not-object"),
    pytest.param("d.jsonl", b'{"prompt": "\xff\xfe", "answer": "2"}\n', 400, "UTF-8", id="non-utf8-bytes"),
    pytest.param("d.jsonl", b"\xef\xbb\xbf" + b"\x80" * 10, 400, "UTF-8", id="bom-then-garbage"),
    pytest.param("d.jsonl", GOOD_ROW + b'{"prompt": "oops", \n', 400, "line 2", id="truncated-row"),
    pytest.param("d.json", b'{"prompt": "1+1=", "answer": "2"}', 400, "list", id="json-object-not-list"),
    pytest.param("d.parquet", b"PAR1 this is not parquet PAR1", 400, "parquet", id="fake-parquet"),
    pytest.param("d.parquet", _parquet([{"text": "1+1=", "answer": "2"}]), 400, "prompt", id="parquet-col"),
    # ~2 KB of brackets used to crash the JSON parser (RecursionError, a 500 that reset the connection).
    pytest.param("d.jsonl", GOOD_ROW + _nested_row(990) + b"\n", 400, f"line 2: {TOO_DEEP}", id="deep-jsonl"),
    pytest.param("d.json", b"[" + GOOD_ROW + b"," + _nested_row(20_000) + b"]", 400, TOO_DEEP, id="deep-json"),
    pytest.param("d.json", b"[" + GOOD_ROW + b"," + _nested_row(70) + b"]", 400, f"row 2: {TOO_DEEP}", id="deep-row"),
    pytest.param(
        "d.parquet",
        _parquet([{"prompt": "1+1=", "answer": "2", "notes": "n" * 300_000}]),
        400,
        "row 1: a text value is 300000 characters, over the limit of 262144",
        id="parquet-cell-too-long",
    ),
    pytest.param("d.jsonl", b'{"prompt": "1+1=", "answer": 1' + b"0" * 5000 + b"}\n", 400, "4300 digits", id="big-int"),
    pytest.param("d.csv", GOOD_ROW, 415, "extension", id="unsupported-extension"),
    pytest.param("noextension", GOOD_ROW, 415, "extension", id="no-extension"),
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("filename", "data", "status", "message"), BAD_UPLOADS)
def test_bad_datasets_are_rejected_with_the_reason(
    client: TestClient, alice: Caller, filename: str, data: bytes, status: int, message: str
) -> None:
    assert_problem(_upload(client, alice, filename, data), status, message)


@pytest.mark.usefixtures("unchanged")
def test_bad_upload_envelopes(client: TestClient, alice: Caller) -> None:
    as_json = client.post("/v1/datasets", json={"rows": []}, headers=alice.headers)
    assert_problem(as_json, 415, "multipart/form-data")
    no_file = client.post("/v1/datasets", data={"name": "x"}, files={"other": ("a.txt", b"x")}, headers=alice.headers)
    assert_problem(no_file, 422, "file")
    two_files = client.post(
        "/v1/datasets",
        files=[("file", ("a.jsonl", GOOD_ROW)), ("file", ("b.jsonl", GOOD_ROW))],
        headers=alice.headers,
    )
    assert_problem(two_files, 400, "malformed multipart body")
    broken = client.post(
        "/v1/datasets",
        content=b'--xyz\r\nContent-Disposition: form-data; name="file"',
        headers=alice.headers | {"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert broken.status_code in (400, 422), broken.text
    assert broken.headers["content-type"] == "application/problem+json"
    long_field = _upload(client, alice, "d.jsonl", GOOD_ROW, prompt_field="p" * 201)
    assert_problem(long_field, 422, "prompt_field")
    huge_declared = client.post(
        "/v1/datasets",
        content=b"x",
        headers=alice.headers | {"Content-Type": "multipart/form-data; boundary=b", "Content-Length": "1"},
    )
    assert huge_declared.status_code in (400, 422), huge_declared.text


def test_traversal_in_an_uploaded_file_name_stays_inside_the_dataset_folder(
    client: TestClient, alice: Caller, settings: Settings
) -> None:
    # The file name is reduced to safe characters: the upload lands in datasets/<id>/ and nowhere else.
    for hostile in ("../../../../tmp/evil.jsonl", "..\\..\\evil.jsonl", "/etc/cron.d/evil.jsonl"):
        before = set(files_under(settings.artifacts_dir))
        response = _upload(client, alice, hostile, GOOD_ROW)
        assert response.status_code == 201, response.text
        dataset_id = response.json()["id"]
        added = set(files_under(settings.artifacts_dir)) - before
        assert added == {f"datasets/{dataset_id}/evil.jsonl"}


# ----------------------------------------------------------------------------- unknown hub models


def test_an_unknown_hub_model_is_accepted_and_explained_at_submission(client: TestClient, alice: Caller) -> None:
    # The API has no hub access, so a well-formed hub id is accepted; the worker fails the job with
    # a clear reason (tests/reliability/test_worker_failures.py::test_unknown_hub_model_fails_the_job_clearly).
    response = _post_job(client, alice, {"base_model": "no-such-org/no-such-model", "config": {"total_steps": 1}})
    assert response.status_code == 202, response.text
    assert response.json()["config"]["model"]["name_or_path"] == "no-such-org/no-such-model"


UNSTORABLE_BODIES = [
    pytest.param({"name": "a\u0000b"}, "name", id="nul-in-name"),
    pytest.param({"name": "\ud800 lone surrogate"}, "name", id="surrogate-in-name"),
    pytest.param({"config": {"data": {"prompt_template": "{prompt}\u0000"}}}, "config.data.prompt_template", id="nul"),
    pytest.param(
        {"config": {"reward": {"functions": [{"name": "regex", "kwargs": {"pattern": "\ud83d"}}]}}},
        "config.reward.functions.0.kwargs.pattern",
        id="surrogate-in-kwargs",
    ),
    pytest.param(
        {"config": {"reward": {"functions": [{"name": "regex", "kwargs": {"p\u0000": 1}}]}}},
        "config.reward.functions.0.kwargs",
        id="nul-in-key",
    ),
]


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(("body", "field"), UNSTORABLE_BODIES)
def test_text_the_database_cannot_store_is_422(client: TestClient, alice: Caller, body: Any, field: str) -> None:
    # Valid JSON escapes, but Postgres refuses NUL and unpaired surrogates in TEXT and JSONB.
    raw = json.dumps(body).encode()
    response = client.post("/v1/jobs", content=raw, headers=alice.headers | JSON_HEADERS)
    problem = assert_problem(response, 422, field)
    assert problem["errors"][0]["field"] == field


@pytest.mark.usefixtures("unchanged")
def test_uploads_with_text_the_database_cannot_store_are_rejected(client: TestClient, alice: Caller) -> None:
    nul_row = b'{"prompt": "1+1=\\u0000", "answer": "2"}\n'
    assert_problem(_upload(client, alice, "d.jsonl", nul_row), 400, "rows.0.prompt")
    nul_column = b'{"prompt": "1+1=", "answer": "2", "x\\u0000": 1}\n'
    assert_problem(_upload(client, alice, "d.jsonl", nul_column), 400, "columns")
    assert_problem(_upload(client, alice, "d.jsonl", GOOD_ROW, name="a\x00b"), 422, "name")
