"""/v1/tenants: admin keys create and list tenants and their keys; every other key gets 403."""

from __future__ import annotations

import uuid

from fastapi.testclient import TestClient
from service_testing import Caller, assert_problem


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _new_tenant(client: TestClient, admin: Caller) -> dict:
    response = client.post("/v1/tenants", json={"name": f"acme-{uuid.uuid4().hex[:8]}"}, headers=admin.headers)
    assert response.status_code == 201, response.text
    return response.json()


def test_an_admin_creates_a_tenant_and_a_key_that_works_for_it(client: TestClient, admin: Caller) -> None:
    tenant = _new_tenant(client, admin)
    assert tenant["object"] == "tenant" and tenant["name"].startswith("acme-")
    assert client.get(f"/v1/tenants/{tenant['id']}", headers=admin.headers).json() == tenant

    created = client.post(f"/v1/tenants/{tenant['id']}/keys", json={"name": "ci"}, headers=admin.headers)
    assert created.status_code == 201, created.text
    key = created.json()
    assert created.headers["location"] == f"/v1/keys/{key['id']}"
    assert key["key"].startswith("rmx_") and key["prefix"] == key["key"][:12]
    assert (key["tenant_id"], key["name"], key["is_admin"], key["revoked_at"]) == (tenant["id"], "ci", False, None)

    # the new key works, for that tenant only: it lists its own key, and sees none of the admin's jobs
    assert client.get("/v1/jobs", headers=_bearer(key["key"])).json()["data"] == []
    own = client.get("/v1/keys", headers=_bearer(key["key"])).json()["data"]
    assert [k["id"] for k in own] == [key["id"]]
    # a listing never carries the secret
    listed = client.get(f"/v1/tenants/{tenant['id']}/keys", headers=admin.headers).json()["data"]
    assert [k["id"] for k in listed] == [key["id"]]
    assert "key" not in listed[0] and key["key"] not in str(listed)


def test_an_admin_key_created_over_the_api_can_administer(client: TestClient, admin: Caller) -> None:
    tenant = _new_tenant(client, admin)
    key = client.post(f"/v1/tenants/{tenant['id']}/keys", json={"admin": True}, headers=admin.headers).json()
    assert key["is_admin"] is True
    by_new_admin = {"name": f"by-new-admin-{uuid.uuid4().hex[:6]}"}
    assert client.post("/v1/tenants", json=by_new_admin, headers=_bearer(key["key"])).status_code == 201


def test_tenants_are_listed_and_found_by_name(client: TestClient, admin: Caller) -> None:
    first, second = _new_tenant(client, admin), _new_tenant(client, admin)
    names = [t["name"] for t in client.get("/v1/tenants", headers=admin.headers).json()["data"]]
    assert names.index(first["name"]) < names.index(second["name"])  # oldest first
    found = client.get("/v1/tenants", params={"name": second["name"]}, headers=admin.headers).json()["data"]
    assert found == [second]
    assert client.get("/v1/tenants", params={"name": "no-such-tenant"}, headers=admin.headers).json()["data"] == []


def test_a_taken_name_is_a_409_and_a_bad_name_a_422_naming_the_field(client: TestClient, admin: Caller) -> None:
    tenant = _new_tenant(client, admin)
    taken = client.post("/v1/tenants", json={"name": tenant["name"]}, headers=admin.headers)
    assert_problem(taken, 409, "already exists")
    for name in ("", "has space", "-leading-dash", "x" * 201, "nul\u0000"):
        body = assert_problem(client.post("/v1/tenants", json={"name": name}, headers=admin.headers), 422)
        assert [e["field"] for e in body["errors"]] == ["name"], body
    unknown = client.post("/v1/tenants", json={"name": "ok-name", "quota": 3}, headers=admin.headers)
    assert [e["field"] for e in assert_problem(unknown, 422)["errors"]] == ["quota"]


def test_a_key_name_the_database_cannot_store_is_a_422(client: TestClient, admin: Caller) -> None:
    tenant = _new_tenant(client, admin)
    response = client.post(f"/v1/tenants/{tenant['id']}/keys", json={"name": "a\u0000b"}, headers=admin.headers)
    assert [e["field"] for e in assert_problem(response, 422)["errors"]] == ["name"]


def test_keys_of_an_unknown_tenant_are_404(client: TestClient, admin: Caller) -> None:
    missing = uuid.uuid4()
    assert_problem(client.post(f"/v1/tenants/{missing}/keys", json={}, headers=admin.headers), 404, str(missing))
    assert_problem(client.get(f"/v1/tenants/{missing}/keys", headers=admin.headers), 404, str(missing))
    assert_problem(client.get(f"/v1/tenants/{missing}", headers=admin.headers), 404, str(missing))


def test_a_tenant_key_cannot_create_or_list_tenants_or_their_keys(
    client: TestClient, admin: Caller, alice: Caller
) -> None:
    name = f"sneaky-{uuid.uuid4().hex[:6]}"
    forbidden = [
        client.post("/v1/tenants", json={"name": name}, headers=alice.headers),
        client.get("/v1/tenants", headers=alice.headers),
        client.get(f"/v1/tenants/{alice.tenant_id}", headers=alice.headers),
        # not even a key for its own tenant: new keys come from an admin, or by rotating one
        client.post(f"/v1/tenants/{alice.tenant_id}/keys", json={"admin": True}, headers=alice.headers),
        client.get(f"/v1/tenants/{alice.tenant_id}/keys", headers=alice.headers),
    ]
    for response in forbidden:
        body = assert_problem(response, 403, "admin API key")
        assert body["type"] == "urn:remix:problem:admin-required"
    # nothing was created
    assert client.get("/v1/tenants", params={"name": name}, headers=admin.headers).json()["data"] == []
    assert len(client.get("/v1/keys", headers=alice.headers).json()["data"]) == 1


def test_without_a_key_the_tenant_routes_are_401(client: TestClient) -> None:
    assert_problem(client.post("/v1/tenants", json={"name": "anon"}), 401, "Missing API key")
    assert_problem(client.get("/v1/tenants"), 401, "Missing API key")
