"""RemixClient tenant and API-key operations against the real API: an admin creates tenants and keys,
a tenant lists, rotates and revokes its own; revoked and rotated-away keys are refused at once."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from client_testing import finish, record_steps, start_job
from sqlalchemy.orm import Session, sessionmaker
from testing_support import Caller, make_caller

from remix_client import ApiKey, Conflict, CreatedApiKey, Forbidden, NotFound, RemixClient, Tenant, Unauthorized


def _client(base_url: str, key: str) -> RemixClient:
    return RemixClient(base_url, key, timeout=10, backoff_base=0.01)


@pytest.fixture
def operator(base_url: str, admin: Caller) -> Iterator[RemixClient]:
    with _client(base_url, admin.key) as client:
        yield client


def test_an_admin_creates_a_tenant_whose_new_key_works(operator: RemixClient, base_url: str) -> None:
    tenant = operator.create_tenant(f"acme-{uuid.uuid4().hex[:8]}")
    assert isinstance(tenant, Tenant) and operator.get_tenant(tenant.id) == tenant
    assert operator.list_tenants(name=tenant.name) == [tenant]
    assert tenant.id in {t.id for t in operator.list_tenants()}

    key = operator.create_key(tenant.id, name="ci")
    assert isinstance(key, CreatedApiKey) and key.key.startswith("rmx_")
    assert (key.tenant_id, key.name, key.is_admin, key.active) == (tenant.id, "ci", False, True)
    listed = operator.list_keys(tenant_id=tenant.id)
    assert [k.id for k in listed] == [key.id]
    assert type(listed[0]) is ApiKey and not hasattr(listed[0], "key")  # listings carry no secret

    with _client(base_url, key.key) as acme:
        assert acme.list_jobs_page().data == []
        assert [k.id for k in acme.list_keys()] == [key.id]


def test_a_taken_tenant_name_is_a_conflict(operator: RemixClient) -> None:
    name = f"twice-{uuid.uuid4().hex[:8]}"
    operator.create_tenant(name)
    with pytest.raises(Conflict, match="already exists"):
        operator.create_tenant(name)


def test_a_tenant_key_cannot_create_tenants_or_keys(remix: RemixClient, alice: Caller) -> None:
    with pytest.raises(Forbidden, match="admin API key"):
        remix.create_tenant(f"sneaky-{uuid.uuid4().hex[:6]}")
    with pytest.raises(Forbidden):
        remix.list_tenants()
    with pytest.raises(Forbidden):
        remix.create_key(alice.tenant_id, admin=True)
    assert len(remix.list_keys()) == 1


def test_a_revoked_key_is_refused_at_once(operator: RemixClient, base_url: str) -> None:
    tenant = operator.create_tenant(f"revoked-{uuid.uuid4().hex[:8]}")
    key = operator.create_key(tenant.id)
    with _client(base_url, key.key) as user:
        assert user.list_jobs_page().data == []
        user.revoke_key(key.id)
        with pytest.raises(Unauthorized, match="Invalid or revoked API key"):
            user.list_jobs_page()
    assert operator.get_key(key.id).revoked_at is not None


def test_a_rotated_key_is_refused_and_its_replacement_works(operator: RemixClient, base_url: str) -> None:
    tenant = operator.create_tenant(f"rotating-{uuid.uuid4().hex[:8]}")
    old = operator.create_key(tenant.id, name="laptop")
    with _client(base_url, old.key) as user:
        new = user.rotate_key(old.id)
        with pytest.raises(Unauthorized):
            user.list_keys()
    assert new.id != old.id and new.key != old.key and (new.name, new.tenant_id) == ("laptop", tenant.id)
    with _client(base_url, new.key) as user:
        keys = {k.id: k for k in user.list_keys()}
        assert keys[new.id].active and not keys[old.id].active
        with pytest.raises(Conflict, match="revoked"):
            user.rotate_key(old.id)


def test_a_tenant_can_neither_see_nor_revoke_another_tenants_key(
    remix: RemixClient, base_url: str, bob: Caller
) -> None:
    with _client(base_url, bob.key) as bobs_client:
        [bobs_key] = bobs_client.list_keys()
        assert bobs_key.id not in {k.id for k in remix.list_keys()}
        for attempt in (remix.get_key, remix.rotate_key, remix.revoke_key):
            with pytest.raises(NotFound, match=f"API key {bobs_key.id} not found"):
                attempt(bobs_key.id)
        assert bobs_client.get_key(bobs_key.id).active  # untouched, still works


def test_an_admin_revokes_another_tenants_key(operator: RemixClient, remix: RemixClient, alice: Caller) -> None:
    [alices_key] = remix.list_keys()
    assert alices_key.tenant_id == alice.tenant_id
    operator.revoke_key(alices_key.id)
    with pytest.raises(Unauthorized):
        remix.list_jobs_page()


def test_an_open_stream_of_a_revoked_key_is_closed_and_not_reopened(
    operator: RemixClient, base_url: str, database_url: str, sessions: sessionmaker[Session]
) -> None:
    caller = make_caller(database_url)
    with _client(base_url, caller.key) as user:
        job = user.create_job({"total_steps": 5})
        start_job(sessions, job.id)
        record_steps(sessions, job.id, range(1, 2))
        [key] = user.list_keys()
        # Were the stream to outlive the revocation, it would end normally once the job finishes.
        finisher = threading.Timer(20, finish, args=(sessions, job.id))
        finisher.start()
        try:
            stream = user.stream(job.id)
            first = next(stream)
            assert first.kind != "end"  # the job runs: its stream stays open
            revoked_at = time.monotonic()
            operator.revoke_key(key.id)
            with pytest.raises(Unauthorized, match="Invalid or revoked API key"):
                for item in stream:
                    assert item.kind != "end", "the stream outlived its key's revocation"
            # one poll to close it, then the client's reconnection delay (the server's `retry: 2000`)
            assert time.monotonic() - revoked_at < 10
        finally:
            finisher.cancel()
