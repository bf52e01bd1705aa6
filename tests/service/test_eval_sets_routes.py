"""POST /v1/jobs with `eval_sets`: builtin sets by name for every tenant, file paths for admin keys only."""

from __future__ import annotations

from fastapi.testclient import TestClient
from service_testing import Caller, assert_problem, submit

AVAILABLE = "available: aime24, amc23, math500, minerva"


def test_any_tenant_selects_builtin_eval_sets_by_name(client: TestClient, alice: Caller) -> None:
    job = submit(client, alice, {"total_steps": 5, "eval_sets": ["aime24", "math500"]})
    assert job["config"]["eval_sets"] == [
        {"name": "aime24", "size": None, "samples": None},
        {"name": "math500", "size": None, "samples": None},
    ]
    fetched = client.get(f"/v1/jobs/{job['id']}", headers=alice.headers).json()
    assert [spec["name"] for spec in fetched["config"]["eval_sets"]] == ["aime24", "math500"]
    job = submit(client, alice, {"eval_sets": [{"name": "amc23", "size": 10, "samples": 4}, "minerva"]})
    assert job["config"]["eval_sets"][0] == {"name": "amc23", "size": 10, "samples": 4}


def test_an_unknown_eval_set_is_422_listing_the_available_ones(client: TestClient, alice: Caller) -> None:
    response = client.post("/v1/jobs", json={"config": {"eval_sets": ["aime24", "gsm8k"]}}, headers=alice.headers)
    body = assert_problem(response, 422, f"unknown builtin eval set 'gsm8k'; {AVAILABLE}")
    assert [e["field"] for e in body["errors"]] == ["config.eval_sets.1.name"]
    assert body["detail"].startswith("config.eval_sets.1.name: ")
    response = client.post("/v1/jobs", json={"config": {"eval_sets": [{"name": "aime"}]}}, headers=alice.headers)
    assert_problem(response, 422, AVAILABLE)


def test_eval_set_paths_stay_admin_only(client: TestClient, alice: Caller, admin: Caller) -> None:
    config = {"eval_sets": ["aime24", {"name": "bench", "path": "/srv/bench.jsonl"}]}
    body = assert_problem(client.post("/v1/jobs", json={"config": config}, headers=alice.headers), 422, "admin keys")
    assert [e["field"] for e in body["errors"]] == ["config.eval_sets.1.path"]  # the builtin set is fine
    assert "aime24, amc23, math500, minerva" in body["errors"][0]["message"]
    job = submit(client, admin, config)
    assert job["config"]["eval_sets"][1]["path"] == "/srv/bench.jsonl"
