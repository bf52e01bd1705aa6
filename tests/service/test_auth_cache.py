"""API-key lookups are cached per process for at most REMIX_AUTH_CACHE_SECONDS: a key revoked by
another process is refused within that bound, and at once by the process that revoked it."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient
from service_testing import Caller, assert_problem
from sqlalchemy import text
from sqlalchemy.orm import Session

from service.main import create_app
from service.settings import Settings

BOUND = 0.5


def _me(client: TestClient, caller: Caller) -> int:
    return client.get("/v1/jobs", headers=caller.headers).status_code


def test_a_key_revoked_elsewhere_is_refused_within_the_cache_bound(
    settings: Settings, alice: Caller, db: Session
) -> None:
    client = TestClient(create_app(settings.model_copy(update={"auth_cache_seconds": BOUND})))
    assert _me(client, alice) == 200  # the lookup is now cached
    # another API process (or the admin CLI) revokes the key: nothing tells this process
    db.execute(text("UPDATE api_keys SET revoked_at = now() WHERE tenant_id = :t"), {"t": alice.tenant_id})
    db.commit()
    revoked_at = time.monotonic()
    while _me(client, alice) == 200:
        assert time.monotonic() - revoked_at <= BOUND + 0.1, "a revoked key was accepted past the bound"
        time.sleep(0.02)
    assert time.monotonic() - revoked_at <= BOUND + 0.1
    assert_problem(client.get("/v1/jobs", headers=alice.headers), 401, "revoked")


def test_revoking_through_this_process_takes_effect_at_once(client: TestClient, alice: Caller) -> None:
    assert _me(client, alice) == 200
    key_id = client.get("/v1/keys", headers=alice.headers).json()["data"][0]["id"]
    assert client.delete(f"/v1/keys/{key_id}", headers=alice.headers).status_code in (200, 204)
    assert_problem(client.get("/v1/jobs", headers=alice.headers), 401)


def test_rotating_refuses_the_old_key_at_once_and_accepts_the_new_one(client: TestClient, alice: Caller) -> None:
    assert _me(client, alice) == 200
    key_id = client.get("/v1/keys", headers=alice.headers).json()["data"][0]["id"]
    rotated = client.post(f"/v1/keys/{key_id}/rotate", headers=alice.headers)
    assert rotated.status_code in (200, 201), rotated.text
    assert_problem(client.get("/v1/jobs", headers=alice.headers), 401)
    fresh = {"Authorization": f"Bearer {rotated.json()['key']}"}
    assert client.get("/v1/jobs", headers=fresh).status_code == 200
