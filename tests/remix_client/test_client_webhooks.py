"""RemixClient and `remix` against the real API: webhooks (create, list, get, rotate, delete, the
delivery log and redelivery) and job metadata (set at submission, replaced, filtered).

Deliveries go to a receiver (a local HTTP server standing in for the tenant's), attempted through
`service.webhooks.delivery.deliver`, the body of the worker's task.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from client_testing import serve_in_thread
from sqlalchemy.orm import Session, sessionmaker
from testing_support import Caller, WebhookReceiver
from typer.testing import CliRunner

from remix_client import Conflict, CreatedWebhook, NotFound, RemixClient, ValidationFailed, Webhook
from remix_client.cli import ExitCode, app
from service.main import create_app
from service.settings import Settings
from service.webhooks.delivery import deliver

runner = CliRunner()


@pytest.fixture(scope="module")
def open_settings(settings: Settings) -> Settings:
    """Private destinations allowed (the receiver is on 127.0.0.1); no wait between retries."""
    return settings.model_copy(update={"webhook_allow_private": True, "webhook_retry_schedule": "0"})


@pytest.fixture(scope="module")
def open_url(open_settings: Settings) -> Iterator[str]:
    with serve_in_thread(create_app(open_settings)) as url:
        yield url


@pytest.fixture
def hooks(open_url: str, alice: Caller) -> Iterator[RemixClient]:
    with RemixClient(open_url, alice.key, timeout=10, backoff_base=0.01) as client:
        yield client


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


@pytest.fixture
def cli(open_url: str, alice: Caller) -> Any:
    def invoke(*args: str) -> Any:
        env = {"REMIX_URL": open_url, "REMIX_API_KEY": alice.key, "COLUMNS": "250"}
        return runner.invoke(app, list(args), env=env)

    return invoke


def _cancelled_job(client: RemixClient, **metadata: str) -> uuid.UUID:
    job = client.create_job({"total_steps": 5}, metadata=metadata or None)
    assert client.cancel_job(job.id).status == "cancelled"
    return job.id


def test_the_client_manages_webhooks_and_reads_their_deliveries(
    hooks: RemixClient,
    receiver: WebhookReceiver,
    open_settings: Settings,
    sessions: sessionmaker[Session],
    base_url: str,
    bob: Caller,
) -> None:
    created = hooks.create_webhook(receiver.url, event_types=["job.cancelled"], description="ci")
    assert isinstance(created, CreatedWebhook) and created.secret.startswith("whsec_")
    listed = hooks.list_webhooks()
    assert [w.id for w in listed] == [created.id] and type(listed[0]) is Webhook
    assert hooks.get_webhook(created.id).event_types == ["job.cancelled"]

    job_id = _cancelled_job(hooks, team="search")
    [pending] = list(hooks.list_webhook_deliveries(created.id))
    assert (pending.status, pending.event_type, pending.attempts) == ("pending", "job.cancelled", 0)
    with pytest.raises(Conflict):
        hooks.redeliver_webhook(created.id, pending.id)
    assert deliver(sessions, open_settings, pending.id) is not None
    done = hooks.get_webhook_delivery(created.id, pending.id)
    assert (done.status, done.attempts, done.last_status_code) == ("succeeded", 1, 200)
    assert done.payload["data"]["id"] == str(job_id) and done.payload["data"]["metadata"] == {"team": "search"}

    again = hooks.redeliver_webhook(created.id, pending.id)
    assert again.status == "pending"
    deliver(sessions, open_settings, pending.id)
    assert hooks.get_webhook_delivery(created.id, pending.id).attempts == 2
    assert [r.signed_with(created.secret) for r in receiver.received] == [True, True]

    rotated = hooks.rotate_webhook_secret(created.id)
    assert rotated.secret != created.secret and rotated.secret_rotated_at is not None

    with RemixClient(base_url, bob.key, timeout=10, backoff_base=0.01) as other:
        with pytest.raises(NotFound):
            other.get_webhook(created.id)
        with pytest.raises(NotFound):
            other.delete_webhook(created.id)
    hooks.delete_webhook(created.id)
    with pytest.raises(NotFound):
        hooks.get_webhook(created.id)


def test_the_default_api_refuses_a_private_destination(remix: RemixClient, receiver: WebhookReceiver) -> None:
    with pytest.raises(ValidationFailed, match="REMIX_WEBHOOK_ALLOW_PRIVATE") as refused:
        remix.create_webhook(receiver.url)
    assert refused.value.body["errors"][0]["field"] == "url"


def test_the_client_sets_replaces_and_filters_job_metadata(hooks: RemixClient) -> None:
    tag = uuid.uuid4().hex[:8]
    first = hooks.create_job({"total_steps": 5}, metadata={"tag": tag, "team": "search"})
    second = hooks.create_job({"total_steps": 5}, metadata={"tag": tag, "team": "ranking"})
    assert first.metadata == {"tag": tag, "team": "search"}
    assert [j.id for j in hooks.list_jobs(metadata={"tag": tag})] == [second.id, first.id]
    assert [j.id for j in hooks.list_jobs_page(metadata={"tag": tag, "team": "search"}).data] == [first.id]
    replaced = hooks.update_job_metadata(first.id, {"tag": tag, "team": "ranking"})
    assert replaced.metadata == {"tag": tag, "team": "ranking"}
    assert {j.id for j in hooks.list_jobs(metadata={"tag": tag, "team": "ranking"})} == {first.id, second.id}
    with pytest.raises(ValidationFailed) as too_many:
        hooks.update_job_metadata(first.id, {f"k{i}": "v" for i in range(17)})
    assert too_many.value.body["errors"][0]["field"] == "metadata"


def test_the_cli_covers_webhooks(
    cli: Any, hooks: RemixClient, receiver: WebhookReceiver, open_settings: Settings, sessions: sessionmaker[Session]
) -> None:
    created = cli("webhooks", "create", receiver.url, "--event", "job.cancelled", "--event", "job.failed")
    assert created.exit_code == ExitCode.OK, created.output
    secret = created.stdout.strip()
    assert secret.startswith("whsec_") and "not shown again" in created.stderr
    [webhook] = hooks.list_webhooks()
    assert webhook.event_types == ["job.cancelled", "job.failed"]

    listing = cli("webhooks", "list")
    assert listing.exit_code == ExitCode.OK and str(webhook.id) in listing.stdout and receiver.url in listing.stdout

    _cancelled_job(hooks)
    [pending] = list(hooks.list_webhook_deliveries(webhook.id))
    deliver(sessions, open_settings, pending.id)
    log = cli("webhooks", "deliveries", str(webhook.id))
    assert log.exit_code == ExitCode.OK and str(pending.id) in log.stdout and "succeeded" in log.stdout
    again = cli("webhooks", "redeliver", str(webhook.id), str(pending.id))
    assert again.exit_code == ExitCode.OK and "pending" in again.stdout
    still_pending = cli("webhooks", "redeliver", str(webhook.id), str(pending.id))
    assert still_pending.exit_code == ExitCode.CONFLICT

    rotated = cli("webhooks", "rotate-secret", str(webhook.id))
    assert rotated.exit_code == ExitCode.OK and rotated.stdout.strip() not in ("", secret)
    refused = cli("webhooks", "create", "ftp://example.com/x")
    assert refused.exit_code == ExitCode.USAGE and "url" in refused.stderr
    assert cli("webhooks", "delete", str(webhook.id)).exit_code == ExitCode.OK
    assert cli("webhooks", "delete", str(webhook.id)).exit_code == ExitCode.NOT_FOUND
    assert hooks.list_webhooks() == []


def test_the_cli_sets_and_filters_job_metadata(cli: Any, hooks: RemixClient, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps({"config": {"total_steps": 5}, "metadata": {"from": "file"}}))
    submitted = cli("submit", str(job_file), "--metadata", f"tag={tag}", "-m", "expr=a=b")
    assert submitted.exit_code == ExitCode.OK, submitted.output
    job_id = submitted.stdout.strip()
    assert hooks.get_job(job_id).metadata == {"from": "file", "tag": tag, "expr": "a=b"}
    other = cli("submit", str(job_file), "--metadata", f"tag={tag}-other")
    assert other.exit_code == ExitCode.OK

    listed = cli("list", "--metadata", f"tag={tag}")
    assert listed.exit_code == ExitCode.OK and job_id in listed.stdout and other.stdout.strip() not in listed.stdout
    assert "1 job(s)" in listed.stdout

    replaced = cli("set-metadata", job_id, "team=search")
    assert replaced.exit_code == ExitCode.OK and "team=search" in replaced.stdout
    assert hooks.get_job(job_id).metadata == {"team": "search"}
    assert "team=search" in cli("show", job_id).stdout
    bad = cli("list", "--metadata", "no-equals-sign")
    assert bad.exit_code == ExitCode.USAGE
    too_long = cli("set-metadata", job_id, "k=" + "v" * 513)
    assert too_long.exit_code == ExitCode.USAGE and "metadata" in too_long.stderr
