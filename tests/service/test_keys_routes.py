"""/v1/keys: a tenant lists, rotates and revokes its own keys (another tenant's are 404); an admin
key reaches every key; a revoked or rotated-away key is refused from the very next request."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from service_testing import Caller, assert_problem, make_caller


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _only_key_id(client: TestClient, caller: Caller) -> str:
    keys = client.get("/v1/keys", headers=caller.headers).json()["data"]
    assert len(keys) == 1, keys
    return keys[0]["id"]


def test_a_tenant_lists_its_own_keys_without_their_secrets(client: TestClient, alice: Caller, bob: Caller) -> None:
    response = client.get("/v1/keys", headers=alice.headers)
    assert response.status_code == 200, response.text
    [key] = response.json()["data"]
    assert key["object"] == "api_key"
    assert set(key) == {"id", "object", "tenant_id", "name", "prefix", "is_admin", "created_at", "revoked_at"}
    assert (key["tenant_id"], key["name"], key["prefix"]) == (str(alice.tenant_id), "test", alice.key[:12])
    assert key["revoked_at"] is None and alice.key not in response.text
    assert client.get(f"/v1/keys/{key['id']}", headers=alice.headers).json() == key
    assert _only_key_id(client, bob) != key["id"]  # bob's listing holds bob's key only


def test_a_revoked_key_gets_401_at_once(client: TestClient, database_url: str) -> None:
    caller = make_caller(database_url)
    key_id = _only_key_id(client, caller)
    assert client.get("/v1/jobs", headers=caller.headers).status_code == 200

    revoked = client.delete(f"/v1/keys/{key_id}", headers=caller.headers)
    assert revoked.status_code == 204 and revoked.content == b""
    response = client.get("/v1/jobs", headers=caller.headers)
    assert_problem(response, 401, "Invalid or revoked API key")
    assert_problem(client.get("/v1/keys", headers=caller.headers), 401, "Invalid or revoked API key")


def test_revoking_one_key_leaves_the_others_working_and_shows_when(client: TestClient, admin: Caller) -> None:
    tenant = client.post("/v1/tenants", json={"name": f"two-keys-{uuid.uuid4().hex[:6]}"}, headers=admin.headers)
    tenant_id = tenant.json()["id"]
    first, second = (
        client.post(f"/v1/tenants/{tenant_id}/keys", json={"name": name}, headers=admin.headers).json()
        for name in ("laptop", "ci")
    )
    assert client.delete(f"/v1/keys/{first['id']}", headers=_bearer(second["key"])).status_code == 204
    assert client.get("/v1/jobs", headers=_bearer(first["key"])).status_code == 401
    listed = {k["name"]: k for k in client.get("/v1/keys", headers=_bearer(second["key"])).json()["data"]}
    assert listed["laptop"]["revoked_at"] is not None and listed["ci"]["revoked_at"] is None
    # revoking again changes nothing
    assert client.delete(f"/v1/keys/{first['id']}", headers=_bearer(second["key"])).status_code == 204
    again = client.get(f"/v1/keys/{first['id']}", headers=_bearer(second["key"])).json()
    assert again["revoked_at"] == listed["laptop"]["revoked_at"]


def test_rotation_refuses_the_old_key_and_the_new_one_works(client: TestClient, database_url: str) -> None:
    caller = make_caller(database_url)
    old_id = _only_key_id(client, caller)

    rotated = client.post(f"/v1/keys/{old_id}/rotate", headers=caller.headers)
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert rotated.headers["location"] == f"/v1/keys/{new['id']}"
    assert new["id"] != old_id and new["key"].startswith("rmx_") and new["key"] != caller.key
    assert (new["tenant_id"], new["name"], new["is_admin"], new["revoked_at"]) == (
        str(caller.tenant_id),
        "test",
        False,
        None,
    )

    assert_problem(client.get("/v1/jobs", headers=caller.headers), 401, "Invalid or revoked API key")
    assert client.get("/v1/jobs", headers=_bearer(new["key"])).status_code == 200
    keys = {k["id"]: k for k in client.get("/v1/keys", headers=_bearer(new["key"])).json()["data"]}
    assert keys[old_id]["revoked_at"] is not None and keys[new["id"]]["revoked_at"] is None
    # a revoked key cannot be rotated (that would bring it back as a new key)
    assert_problem(client.post(f"/v1/keys/{old_id}/rotate", headers=_bearer(new["key"])), 409, "revoked")


def test_an_admin_key_rotates_into_an_admin_key(client: TestClient, database_url: str) -> None:
    admin = make_caller(database_url, admin=True)
    new = client.post(f"/v1/keys/{_only_key_id(client, admin)}/rotate", headers=admin.headers).json()
    assert new["is_admin"] is True
    assert client.get("/v1/tenants", headers=_bearer(new["key"])).status_code == 200


def test_another_tenants_key_does_not_exist(client: TestClient, alice: Caller, bob: Caller) -> None:
    bobs_key = _only_key_id(client, bob)
    for response in (
        client.get(f"/v1/keys/{bobs_key}", headers=alice.headers),
        client.post(f"/v1/keys/{bobs_key}/rotate", headers=alice.headers),
        client.delete(f"/v1/keys/{bobs_key}", headers=alice.headers),
    ):
        assert_problem(response, 404, f"API key {bobs_key} not found")
    missing = uuid.uuid4()
    assert_problem(client.delete(f"/v1/keys/{missing}", headers=alice.headers), 404, f"API key {missing} not found")
    # bob's key is untouched and still works
    assert client.get("/v1/jobs", headers=bob.headers).status_code == 200
    assert client.get(f"/v1/keys/{bobs_key}", headers=bob.headers).json()["revoked_at"] is None


def test_an_admin_revokes_any_tenants_key(client: TestClient, admin: Caller, database_url: str) -> None:
    victim = make_caller(database_url)
    key_id = _only_key_id(client, victim)
    assert client.get(f"/v1/keys/{key_id}", headers=admin.headers).json()["tenant_id"] == str(victim.tenant_id)
    assert client.delete(f"/v1/keys/{key_id}", headers=admin.headers).status_code == 204
    assert_problem(client.get("/v1/jobs", headers=victim.headers), 401, "Invalid or revoked API key")


def test_a_malformed_key_id_is_a_422_naming_it(client: TestClient, alice: Caller) -> None:
    body = assert_problem(client.delete("/v1/keys/not-a-uuid", headers=alice.headers), 422)
    assert [e["field"] for e in body["errors"]] == ["key_id"]
