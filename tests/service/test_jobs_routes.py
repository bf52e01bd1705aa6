"""POST/GET /v1/jobs: creation and dispatch, validation, pagination, cancellation."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from redis import Redis
from service_testing import Caller, assert_problem, queued_messages, submit
from sqlalchemy.orm import Session, sessionmaker
from testing_support import claim_as_worker

from service import lifecycle
from service.models import JobStatus
from service.repositories import jobs as jobs_repo
from service.settings import Settings


def test_create_job_returns_202_location_and_enqueues(
    client: TestClient, alice: Caller, settings: Settings, redis_client: Redis
) -> None:
    before = redis_client.llen(settings.task_queue)
    response = client.post(
        "/v1/jobs",
        json={"name": "first", "base_model": "builtin:tiny-arith", "config": {"total_steps": 7, "seed": 3}},
        headers=alice.headers,
    )
    assert response.status_code == 202
    job = response.json()
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] == "queued" and job["name"] == "first" and job["total_steps"] == 7
    assert job["base_model"] == "builtin:tiny-arith"
    assert job["config"]["model"]["name_or_path"] == "builtin:tiny-arith"
    assert job["config"]["seed"] == 3
    assert job["config"]["algorithm"]["off_policy_fraction"] == 0.4  # defaults are filled in and stored
    # The message really landed in the Redis list of the training queue.
    assert redis_client.llen(settings.task_queue) == before + 1
    sent = [m for m in queued_messages(redis_client, settings.task_queue) if m["kwargs"] == {"job_id": job["id"]}]
    assert len(sent) == 1 and sent[0]["task"] == "worker.train_job"
    fetched = client.get(response.headers["location"], headers=alice.headers)
    assert fetched.status_code == 200 and fetched.json()["id"] == job["id"]


def test_celery_task_id_is_stored(
    client: TestClient, alice: Caller, db: Session, settings: Settings, redis_client: Redis
) -> None:
    job = submit(client, alice)
    row = jobs_repo.get_job(db, alice.tenant_id, uuid.UUID(job["id"]))
    assert row is not None and row.celery_task_id
    ids = {m["id"] for m in queued_messages(redis_client, settings.task_queue) if m["kwargs"]["job_id"] == job["id"]}
    assert ids == {row.celery_task_id}


def test_invalid_hyperparameters_name_the_field(client: TestClient, alice: Caller) -> None:
    cases = {
        "config.algorithm.off_policy_fraction": {"algorithm": {"off_policy_fraction": 1.5}},
        "config.algorithm.history_window": {"algorithm": {"history_window": 0}},
        "config.algorithm.reincarnation_step": {"algorithm": {"reincarnation_step": -1}},
        "config.algorithm.not_a_knob": {"algorithm": {"not_a_knob": 1}},
        "config.algorithm.advantage_estimator": {"algorithm": {"advantage_estimator": "vtrace"}},
        "config.algorithm.policy_loss": {"algorithm": {"policy_loss": "dpo"}},
        "config.total_steps": {"total_steps": "many"},
    }
    for field, config in cases.items():
        response = client.post("/v1/jobs", json={"config": config}, headers=alice.headers)
        body = assert_problem(response, 422, field)
        assert body["type"] == "urn:remix:problem:validation-error"
        assert [e["field"] for e in body["errors"]] == [field]


def test_cross_field_rule_of_the_config_is_enforced(client: TestClient, alice: Caller) -> None:
    response = client.post("/v1/jobs", json={"config": {"rollout": {"group_size": 1}}}, headers=alice.headers)
    assert_problem(response, 422, "rollout.group_size must be >= 2")


def test_incoherent_algorithm_parts_are_refused_naming_the_part(client: TestClient, alice: Caller) -> None:
    replaying_ppo_clip = {"algorithm": {"name": "grpo", "replay": True}}
    response = client.post("/v1/jobs", json={"config": replaying_ppo_clip}, headers=alice.headers)
    assert_problem(response, 422, "algorithm.policy_loss 'ppo_clip' cannot train replayed rollouts")
    reincarnating_without_replay = {"algorithm": {"replay": False, "reincarnation_step": 3}}
    response = client.post("/v1/jobs", json={"config": reincarnating_without_replay}, headers=alice.headers)
    assert_problem(response, 422, "algorithm.reincarnation_step 3 needs algorithm.replay true")


def test_request_body_errors_are_problems(client: TestClient, alice: Caller) -> None:
    response = client.post("/v1/jobs", json={"config": {}, "surprise": 1}, headers=alice.headers)
    assert_problem(response, 422, "surprise: Extra inputs are not permitted")
    response = client.post(
        "/v1/jobs", content=b"{not json", headers=alice.headers | {"content-type": "application/json"}
    )
    problem = assert_problem(response, 422, "body: invalid JSON at character 1")
    assert [e["field"] for e in problem["errors"]] == ["body"]


def test_base_model_policy(client: TestClient, alice: Caller, admin: Caller) -> None:
    assert_problem(
        client.post("/v1/jobs", json={"base_model": "/etc/models/x", "config": {}}, headers=alice.headers),
        422,
        "config.model.name_or_path: must be a hub id",
    )
    assert_problem(
        client.post(
            "/v1/jobs",
            json={"base_model": "org/a", "config": {"model": {"name_or_path": "org/b"}}},
            headers=alice.headers,
        ),
        422,
        "base_model: differs from config.model.name_or_path",
    )
    assert_problem(
        client.post(
            "/v1/jobs",
            json={"config": {"data": {"train_path": "/srv/other/data.jsonl"}}},
            headers=alice.headers,
        ),
        422,
        "config.data.train_path: only builtin datasets here",
    )
    assert_problem(
        client.post("/v1/jobs", json={"config": {"model": {"trust_remote_code": True}}}, headers=alice.headers),
        403,
        "trust_remote_code requires an admin API key",
    )
    # Operators (admin keys) may train from a local model directory.
    job = submit(client, admin, base_model="/srv/models/base")
    assert job["base_model"] == "/srv/models/base"
    assert submit(client, alice, base_model="Qwen/Qwen2.5-0.5B-Instruct")["base_model"] == "Qwen/Qwen2.5-0.5B-Instruct"


def test_unknown_job_is_404(client: TestClient, alice: Caller) -> None:
    missing = uuid.uuid4()
    assert_problem(client.get(f"/v1/jobs/{missing}", headers=alice.headers), 404, f"job {missing} not found")
    assert_problem(
        client.get("/v1/jobs/not-a-uuid", headers=alice.headers), 422, "job_id: Input should be a valid UUID"
    )


def test_list_jobs_cursor_pagination(client: TestClient, alice: Caller) -> None:
    created = [submit(client, alice, name=f"job-{i}")["id"] for i in range(5)]
    seen: list[str] = []
    cursor = None
    pages = []
    while True:
        params = {"limit": 2} | ({"after": cursor} if cursor else {})
        page = client.get("/v1/jobs", params=params, headers=alice.headers).json()
        pages.append((len(page["data"]), page["has_more"]))
        seen += [j["id"] for j in page["data"]]
        cursor = page["next_cursor"]
        if not page["has_more"]:
            assert cursor is None
            break
    assert pages == [(2, True), (2, True), (1, False)]
    assert seen == list(reversed(created))  # newest first, each exactly once


def test_list_jobs_status_filter_and_bad_parameters(client: TestClient, alice: Caller) -> None:
    first, second = submit(client, alice), submit(client, alice)
    assert client.post(f"/v1/jobs/{first['id']}/cancel", headers=alice.headers).status_code == 200
    cancelled = client.get("/v1/jobs", params={"status": "cancelled"}, headers=alice.headers).json()
    assert [j["id"] for j in cancelled["data"]] == [first["id"]]
    queued = client.get("/v1/jobs", params={"status": "queued"}, headers=alice.headers).json()
    assert [j["id"] for j in queued["data"]] == [second["id"]]
    assert_problem(
        client.get("/v1/jobs", params={"status": "sleeping"}, headers=alice.headers),
        422,
        "status: Input should be",
    )
    assert_problem(
        client.get("/v1/jobs", params={"after": "garbage!"}, headers=alice.headers), 400, "after: not a valid"
    )
    assert_problem(client.get("/v1/jobs", params={"limit": 0}, headers=alice.headers), 422, "limit:")


def test_cancel_queued_job_is_immediate(client: TestClient, alice: Caller) -> None:
    job = submit(client, alice)
    response = client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice.headers)
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled" and response.json()["finished_at"] is not None
    events = client.get(f"/v1/jobs/{job['id']}/events", headers=alice.headers).json()["data"]
    assert [e["kind"] for e in events] == ["queued", "cancelled"]
    again = client.post(f"/v1/jobs/{job['id']}/cancel", headers=alice.headers)
    assert_problem(again, 409, f"job {job['id']} is already cancelled")


def test_cancel_running_job_requests_cancellation(
    client: TestClient, alice: Caller, sessions: sessionmaker[Session]
) -> None:
    job = submit(client, alice)
    job_id = uuid.UUID(job["id"])
    writer = claim_as_worker(sessions, job_id, worker_id="w1")
    response = client.post(f"/v1/jobs/{job_id}/cancel", params={"checkpoint": "true"}, headers=alice.headers)
    assert response.status_code == 202
    body = response.json()
    assert (body["status"], body["cancel_requested"], body["checkpoint_on_cancel"]) == (
        "cancelling",
        True,
        True,
    )
    assert client.post(f"/v1/jobs/{job_id}/cancel", headers=alice.headers).status_code == 202  # repeat is harmless
    # The worker notices the flag between steps and stops (finish raises LeaseLost if the job is not its own).
    writer.finish(JobStatus.cancelled, step=0, message="cancelled after step 0")
    assert_problem(client.post(f"/v1/jobs/{job_id}/cancel", headers=alice.headers), 409, "is already cancelled")


def test_cancel_finished_job_is_409(client: TestClient, alice: Caller, sessions: sessionmaker[Session]) -> None:
    job_id = uuid.UUID(submit(client, alice)["id"])
    writer = claim_as_worker(sessions, job_id, worker_id="w1")
    writer.finish(JobStatus.succeeded, step=0, message="done", summary={"accuracy_after": 0.5})
    body = assert_problem(client.post(f"/v1/jobs/{job_id}/cancel", headers=alice.headers), 409, "is already succeeded")
    assert body["type"] == "urn:remix:problem:job-terminal"
    assert client.get(f"/v1/jobs/{job_id}", headers=alice.headers).json()["summary"] == {"accuracy_after": 0.5}


def test_cancelled_job_cannot_be_claimed(client: TestClient, alice: Caller, sessions: sessionmaker[Session]) -> None:
    job_id = uuid.UUID(submit(client, alice)["id"])
    client.post(f"/v1/jobs/{job_id}/cancel", headers=alice.headers)
    assert not lifecycle.claim_job(sessions, job_id, worker_id="late-worker")  # the claim run_job makes
