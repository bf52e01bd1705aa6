"""Job metadata against real Postgres: set at submission, returned wherever a job is, replaced with
PATCH /v1/jobs/{id}, filtered with ?metadata[key]=value (several filters all match), bounded (16 pairs,
keys of 64 characters, values of 512) with 422s naming the field."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from service_testing import Caller, assert_problem, make_caller, submit

from service.main import create_app
from service.migrate import upgrade
from service.settings import Settings


def _listed(client: TestClient, caller: Caller, **filters: str) -> list[str]:
    params = {f"metadata[{key}]": value for key, value in filters.items()}
    response = client.get("/v1/jobs", params=params, headers=caller.headers)
    assert response.status_code == 200, response.text
    return [job["id"] for job in response.json()["data"]]


def test_metadata_set_at_submission_comes_back_everywhere(client: TestClient, alice: Caller) -> None:
    job = submit(client, alice, metadata={"team": "search", "run": "7"})
    assert job["metadata"] == {"team": "search", "run": "7"}
    assert client.get(f"/v1/jobs/{job['id']}", headers=alice.headers).json()["metadata"] == job["metadata"]
    listed = client.get("/v1/jobs", headers=alice.headers).json()["data"]
    assert next(item for item in listed if item["id"] == job["id"])["metadata"] == job["metadata"]
    assert submit(client, alice)["metadata"] == {}


def test_the_list_filters_by_every_metadata_pair_given(client: TestClient, alice: Caller, bob: Caller) -> None:
    tag = uuid.uuid4().hex[:8]
    search_a = submit(client, alice, metadata={"tag": tag, "team": "search", "phase": "a"})["id"]
    search_b = submit(client, alice, metadata={"tag": tag, "team": "search", "phase": "b"})["id"]
    ranking = submit(client, alice, metadata={"tag": tag, "team": "ranking", "phase": "a"})["id"]
    submit(client, bob, metadata={"tag": tag, "team": "search", "phase": "a"})

    assert _listed(client, alice, tag=tag) == [ranking, search_b, search_a]
    assert _listed(client, alice, tag=tag, team="search") == [search_b, search_a]
    assert _listed(client, alice, tag=tag, team="search", phase="a") == [search_a]
    assert _listed(client, alice, tag=tag, team="nobody") == []
    assert _listed(client, alice, tag=tag, missing="key") == []
    assert len(_listed(client, bob, tag=tag)) == 1  # another tenant's jobs never match


def test_filters_combine_with_status_and_pagination(client: TestClient, alice: Caller) -> None:
    tag = uuid.uuid4().hex[:8]
    ids = [submit(client, alice, metadata={"tag": tag})["id"] for _ in range(3)]
    client.post(f"/v1/jobs/{ids[0]}/cancel", headers=alice.headers)
    first = client.get("/v1/jobs", params={"metadata[tag]": tag, "limit": 2}, headers=alice.headers).json()
    rest = client.get(
        "/v1/jobs", params={"metadata[tag]": tag, "limit": 2, "after": first["next_cursor"]}, headers=alice.headers
    ).json()
    assert [j["id"] for j in first["data"] + rest["data"]] == list(reversed(ids)) and not rest["has_more"]
    cancelled = client.get("/v1/jobs", params={"metadata[tag]": tag, "status": "cancelled"}, headers=alice.headers)
    assert [j["id"] for j in cancelled.json()["data"]] == [ids[0]]


def test_patch_replaces_the_metadata(client: TestClient, alice: Caller, bob: Caller) -> None:
    job = submit(client, alice, metadata={"team": "search", "old": "yes"})
    response = client.patch(f"/v1/jobs/{job['id']}", json={"metadata": {"team": "ranking"}}, headers=alice.headers)
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == {"team": "ranking"}
    assert response.json()["status"] == "queued" and response.json()["config"] == job["config"]
    assert client.get(f"/v1/jobs/{job['id']}", headers=alice.headers).json()["metadata"] == {"team": "ranking"}
    assert _listed(client, alice, old="yes") == []
    assert_problem(client.patch(f"/v1/jobs/{job['id']}", json={"metadata": {}}, headers=bob.headers), 404)
    body = assert_problem(client.patch(f"/v1/jobs/{job['id']}", json={"name": "x"}, headers=alice.headers), 422)
    assert {error["field"] for error in body["errors"]} == {"metadata", "name"}
    cleared = client.patch(f"/v1/jobs/{job['id']}", json={"metadata": {}}, headers=alice.headers)
    assert cleared.json()["metadata"] == {}


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({f"k{i}": "v" for i in range(17)}, "metadata"),
        ({"k" * 65: "v"}, "metadata"),
        ({"": "v"}, "metadata"),
        ({"k": "v" * 513}, "metadata.k"),
        ({"k": 3}, "metadata.k"),
        ({"k": "nul\u0000"}, "metadata"),
        (["not", "a", "mapping"], "metadata"),
    ],
)
def test_metadata_out_of_bounds_is_a_422_naming_it(
    client: TestClient, alice: Caller, metadata: Any, field: str
) -> None:
    response = client.post("/v1/jobs", json={"config": {"total_steps": 5}, "metadata": metadata}, headers=alice.headers)
    body = assert_problem(response, 422)
    assert [error["field"] for error in body["errors"]][0].startswith(field), body["errors"]


def test_the_bounds_themselves_are_accepted(client: TestClient, alice: Caller) -> None:
    metadata = {f"{i:02d}" + "k" * 62: "v" * 512 for i in range(16)}
    assert submit(client, alice, metadata=metadata)["metadata"] == metadata


def test_a_filter_out_of_bounds_is_a_422_naming_it(client: TestClient, alice: Caller) -> None:
    too_long_key = "k" * 65
    response = client.get("/v1/jobs", params={f"metadata[{too_long_key}]": "v"}, headers=alice.headers)
    body = assert_problem(response, 422, f"metadata[{too_long_key}]")
    assert body["errors"][0]["field"] == f"metadata[{too_long_key}]"
    body = assert_problem(client.get("/v1/jobs", params={"metadata[k]": "v" * 513}, headers=alice.headers), 422)
    assert body["errors"][0]["field"] == "metadata[k]"


def test_an_idempotent_replay_compares_the_metadata(client: TestClient, alice: Caller) -> None:
    headers = alice.headers | {"Idempotency-Key": uuid.uuid4().hex}
    body = {"config": {"total_steps": 5}, "metadata": {"team": "search"}}
    first = client.post("/v1/jobs", json=body, headers=headers)
    replay = client.post("/v1/jobs", json=body, headers=headers)
    assert replay.headers.get("idempotent-replayed") == "true" and replay.json()["id"] == first.json()["id"]
    changed = client.post("/v1/jobs", json=body | {"metadata": {"team": "other"}}, headers=headers)
    assert_problem(changed, 422, "Idempotency-Key")


def test_the_embedded_sqlite_database_filters_metadata_too(tmp_path: Path) -> None:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path}/remix.db",
        broker_url=f"sqla+sqlite:///{tmp_path}/broker.db",
        artifacts_dir=str(tmp_path / "artifacts"),
    )
    upgrade(settings.database_url)
    caller = make_caller(settings.database_url)
    embedded = TestClient(create_app(settings))
    search = submit(embedded, caller, metadata={"team": "search", "phase": "a"})["id"]
    submit(embedded, caller, metadata={"team": "ranking", "phase": "a"})
    assert _listed(embedded, caller, team="search", phase="a") == [search]
    patched = embedded.patch(f"/v1/jobs/{search}", json={"metadata": {"team": "x"}}, headers=caller.headers)
    assert patched.json()["metadata"] == {"team": "x"} and _listed(embedded, caller, team="search") == []
