"""`RemixClient`: a typed, retrying Python client of the ReMix finetuning HTTP API.

    from remix_client import RemixClient
    with RemixClient("http://127.0.0.1:8000", api_key="rmx_...") as remix:
        job = remix.create_job({"total_steps": 40}, base_model="builtin:tiny-arith")
        for item in remix.stream(job.id):
            ...
        remix.download_checkpoint(job.id, dest_dir="out")

Responses are parsed into the models of `remix_client.models`; error answers raise the
`remix_client.errors` class matching their status. GETs (and job creation, which always carries
an Idempotency-Key) are retried on connection errors and 429/502/503/504; other POSTs are not.
"""

from __future__ import annotations

import os
import tarfile
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from remix_client.errors import NotFound, RemixAPIError, RemixConnectionError
from remix_client.models import (
    ApiKey,
    Checkpoint,
    CreatedApiKey,
    CreatedWebhook,
    Dataset,
    DatasetsPage,
    Event,
    Job,
    JobsPage,
    JobUsage,
    MetricPoint,
    StreamItem,
    Tenant,
    TenantQuotas,
    UsageReport,
    Webhook,
    WebhookDeliveriesPage,
    WebhookDelivery,
)
from remix_client.retry import RETRY_STATUSES, RetryPolicy
from remix_client.streaming import resumable_stream

DEFAULT_URL = "http://127.0.0.1:8000"
USER_AGENT = "remix-client/0.1.0"
STREAM_READ_TIMEOUT = 60.0  # the server sends a keepalive comment at least every 15 s
CHUNK = 1 << 20
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})

JobId = str | uuid.UUID


class RemixClient:
    """Client of one ReMix service, authenticated with one API key (a tenant)."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 30.0,
        max_retries: int = 3,
        backoff_base: float = 0.5,
    ) -> None:
        """`base_url`/`api_key` default to $REMIX_URL (else http://127.0.0.1:8000) and $REMIX_API_KEY."""
        self.base_url = (base_url or os.environ.get("REMIX_URL") or DEFAULT_URL).rstrip("/")
        api_key = api_key or os.environ.get("REMIX_API_KEY")
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if api_key:
            headers["Authorization"] = f"Bearer {api_key}"
        self.timeout = timeout
        self.retry = RetryPolicy(max_retries=max_retries, backoff_base=backoff_base)
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    # ----------------------------------------------------------------------- plumbing

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RemixClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def stream_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.timeout, read=max(self.timeout, STREAM_READ_TIMEOUT))

    def send(self, method: str, path: str, *, stream: bool = False, **kwargs: Any) -> httpx.Response:
        """One API call; error statuses raise a RemixAPIError subclass.

        GET/HEAD/PUT/DELETE, and POSTs carrying an Idempotency-Key, are retried on connection
        errors and 429/502/503/504; other POSTs never are (a retry could act twice).
        With stream=True the caller must close the returned response.
        """
        retry = is_retry_safe(method, kwargs.get("headers"))
        attempt = 0
        while True:
            try:
                response = self._http.send(self._http.build_request(method, path, **kwargs), stream=stream)
            except httpx.TransportError as exc:
                if not retry or attempt >= self.retry.max_retries:
                    raise RemixConnectionError(f"{method} {self.base_url}{path}: {exc}") from exc
                time.sleep(self.retry.delay(attempt))
                attempt += 1
                continue
            if response.status_code in RETRY_STATUSES and retry and attempt < self.retry.max_retries:
                response.close()
                time.sleep(self.retry.delay(attempt, response.headers.get("Retry-After")))
                attempt += 1
                continue
            if response.is_error:
                error = RemixAPIError.from_response(response)
                response.close()
                raise error
            return response

    def _get(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.send("GET", path, params=clean).json()

    # ----------------------------------------------------------------------- jobs

    def create_job(
        self,
        config: dict[str, Any],
        *,
        base_model: str | None = None,
        dataset_id: JobId | None = None,
        eval_dataset_id: JobId | None = None,
        name: str | None = None,
        idempotency_key: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Job:
        """Submit a job. A random Idempotency-Key is sent unless given, so retries never duplicate it."""
        body: dict[str, Any] = {"config": config}
        optional = {"base_model": base_model, "dataset_id": dataset_id, "eval_dataset_id": eval_dataset_id}
        body |= {k: str(v) for k, v in optional.items() if v is not None}
        if name is not None:
            body["name"] = name
        if metadata:
            body["metadata"] = dict(metadata)
        headers = {"Idempotency-Key": idempotency_key or str(uuid.uuid4())}
        return Job.model_validate(self.send("POST", "/v1/jobs", json=body, headers=headers).json())

    def get_job(self, job_id: JobId) -> Job:
        return Job.model_validate(self._get(f"/v1/jobs/{job_id}"))

    def list_jobs_page(
        self,
        *,
        status: str | None = None,
        limit: int = 20,
        after: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> JobsPage:
        """One page of the caller's jobs, newest first; pass `next_cursor` as `after` for the next.
        With `metadata`, only jobs having every one of those key/value pairs."""
        filters = {f"metadata[{key}]": value for key, value in (metadata or {}).items()}
        return JobsPage.model_validate(self._get("/v1/jobs", status=status, limit=limit, after=after, **filters))

    def list_jobs(
        self, *, status: str | None = None, page_size: int = 100, metadata: dict[str, str] | None = None
    ) -> Iterator[Job]:
        """Every job of the caller (with these metadata pairs), newest first, fetching pages as they are consumed."""
        after = None
        while True:
            page = self.list_jobs_page(status=status, limit=page_size, after=after, metadata=metadata)
            yield from page.data
            if not page.has_more or page.next_cursor is None:
                return
            after = page.next_cursor

    def update_job_metadata(self, job_id: JobId, metadata: dict[str, str]) -> Job:
        """Replace the job's metadata with `metadata` (an empty mapping clears it)."""
        return Job.model_validate(self.send("PATCH", f"/v1/jobs/{job_id}", json={"metadata": dict(metadata)}).json())

    def cancel_job(self, job_id: JobId, *, checkpoint: bool = False) -> Job:
        """Cancel now if queued, else ask the worker to stop (saving a checkpoint first if asked)."""
        params = {"checkpoint": "true" if checkpoint else "false"}
        return Job.model_validate(self.send("POST", f"/v1/jobs/{job_id}/cancel", params=params).json())

    def pause_job(self, job_id: JobId) -> Job:
        """Pause now if queued, else ask the worker to checkpoint and stop (status `pausing`, then
        `paused`); pausing a pausing or paused job changes nothing. A finished job is a ConflictError."""
        return Job.model_validate(self.send("POST", f"/v1/jobs/{job_id}/pause").json())

    def resume_job(self, job_id: JobId) -> Job:
        """Queue a paused job again; it continues from its newest checkpoint. A queued or running job is
        left as it is; a pausing, cancelling or finished job is a ConflictError."""
        return Job.model_validate(self.send("POST", f"/v1/jobs/{job_id}/resume").json())

    def metrics(self, job_id: JobId, from_step: int | None = None, to_step: int | None = None) -> list[MetricPoint]:
        """Per-step metrics with from_step <= step <= to_step, ascending (all pages)."""
        out: list[MetricPoint] = []
        while True:
            page = self._get(f"/v1/jobs/{job_id}/metrics", from_step=from_step, to_step=to_step)
            out += [MetricPoint.model_validate(m) for m in page["data"]]
            if not page["has_more"] or not page["data"]:
                return out
            from_step = out[-1].step + 1

    def events(self, job_id: JobId, after: int | None = None) -> list[Event]:
        """Lifecycle events with id > after, oldest first (all pages)."""
        out: list[Event] = []
        while True:
            page = self._get(f"/v1/jobs/{job_id}/events", after=after, limit=1000)
            out += [Event.model_validate(e) for e in page["data"]]
            if not page["has_more"] or not page["data"]:
                return out
            after = out[-1].id

    def stream(self, job_id: JobId, last_event_id: str | None = None) -> Iterator[StreamItem]:
        """Live metrics and events until the job ends (last item: StreamEnd).

        A dropped connection is resumed with Last-Event-ID; no item is ever yielded twice.
        """
        return resumable_stream(self, str(job_id), last_event_id)

    def wait(self, job_id: JobId, *, poll_interval: float = 2.0, timeout: float | None = None) -> Job:
        """Poll until the job is terminal and return it; TimeoutError after `timeout` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if job.is_terminal:
                return job
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout} s")
            time.sleep(poll_interval)

    # ----------------------------------------------------------------------- checkpoints

    def checkpoints(self, job_id: JobId) -> list[Checkpoint]:
        return [Checkpoint.model_validate(c) for c in self._get(f"/v1/jobs/{job_id}/checkpoints")["data"]]

    def download_checkpoint(
        self, job_id: JobId, step: int | None = None, dest_dir: str | Path = ".", *, extract: bool = True
    ) -> Path:
        """Stream a checkpoint (default: the latest) to `dest_dir`.

        Returns the extracted Hugging Face folder (`dest_dir/step-000040`, the archive removed),
        or the `.tar.gz` itself with extract=False.
        """
        if step is None:
            step = self.latest_checkpoint_step(job_id)
        dest = Path(dest_dir)
        dest.mkdir(parents=True, exist_ok=True)
        path = f"/v1/jobs/{job_id}/checkpoints/{step}/download"
        response = self.send("GET", path, stream=True, timeout=self.stream_timeout)
        archive = dest / _attachment_name(response, f"{job_id}-step-{step:06d}.tar.gz")
        partial = archive.with_name(archive.name + ".part")
        try:
            with partial.open("wb") as fh:
                for chunk in response.iter_bytes(CHUNK):
                    fh.write(chunk)
        except httpx.TransportError as exc:
            partial.unlink(missing_ok=True)
            raise RemixConnectionError(f"download of {path} interrupted: {exc}") from exc
        finally:
            response.close()
        partial.replace(archive)
        if not extract:
            return archive
        folder = _extract(archive, dest)
        archive.unlink()
        return folder

    def latest_checkpoint_step(self, job_id: JobId) -> int:
        """Step of the job's newest checkpoint; NotFound if it has none."""
        steps = [c.step for c in self.checkpoints(job_id)]
        if not steps:
            raise NotFound(404, "Not Found", f"job {job_id} has no checkpoint yet")
        return max(steps)

    # ----------------------------------------------------------------------- datasets

    def upload_dataset(
        self,
        path: str | Path,
        *,
        prompt_field: str = "prompt",
        answer_field: str = "answer",
        name: str | None = None,
    ) -> Dataset:
        """Upload a .jsonl/.json/.parquet file; the server validates every row (not retried)."""
        path = Path(path)
        fields = {"prompt_field": prompt_field, "answer_field": answer_field}
        if name:
            fields["name"] = name
        with path.open("rb") as fh:
            files = {"file": (path.name, fh, "application/octet-stream")}
            response = self.send("POST", "/v1/datasets", data=fields, files=files)
        return Dataset.model_validate(response.json())

    def get_dataset(self, dataset_id: JobId) -> Dataset:
        return Dataset.model_validate(self._get(f"/v1/datasets/{dataset_id}"))

    def list_datasets_page(self, *, limit: int = 20, after: str | None = None) -> DatasetsPage:
        return DatasetsPage.model_validate(self._get("/v1/datasets", limit=limit, after=after))

    def list_datasets(self, *, page_size: int = 100) -> Iterator[Dataset]:
        """Every dataset of the caller, newest first."""
        after = None
        while True:
            page = self.list_datasets_page(limit=page_size, after=after)
            yield from page.data
            if not page.has_more or page.next_cursor is None:
                return
            after = page.next_cursor

    def config_schema(self) -> dict[str, Any]:
        """JSON Schema of a job's `config` (every hyperparameter with bounds and defaults)."""
        schema: dict[str, Any] = self._get("/v1/config/schema")
        return schema

    # ----------------------------------------------------------------------- tenants and API keys

    def create_tenant(self, name: str) -> Tenant:
        """Create a tenant (admin keys only; not retried)."""
        return Tenant.model_validate(self.send("POST", "/v1/tenants", json={"name": name}).json())

    def list_tenants(self, *, name: str | None = None) -> list[Tenant]:
        """Every tenant, oldest first, or the one called `name` (admin keys only)."""
        return [Tenant.model_validate(t) for t in self._get("/v1/tenants", name=name)["data"]]

    def get_tenant(self, tenant_id: JobId) -> Tenant:
        return Tenant.model_validate(self._get(f"/v1/tenants/{tenant_id}"))

    def create_key(self, tenant_id: JobId, *, name: str = "", admin: bool = False) -> CreatedApiKey:
        """A new API key of the tenant, with its secret in `.key` (admin keys only; not retried)."""
        body = {"name": name, "admin": admin}
        return CreatedApiKey.model_validate(self.send("POST", f"/v1/tenants/{tenant_id}/keys", json=body).json())

    def list_keys(self, *, tenant_id: JobId | None = None) -> list[ApiKey]:
        """Your tenant's keys, newest first; with `tenant_id`, that tenant's (admin keys only)."""
        path = "/v1/keys" if tenant_id is None else f"/v1/tenants/{tenant_id}/keys"
        return [ApiKey.model_validate(k) for k in self._get(path)["data"]]

    def get_key(self, key_id: JobId) -> ApiKey:
        return ApiKey.model_validate(self._get(f"/v1/keys/{key_id}"))

    def rotate_key(self, key_id: JobId) -> CreatedApiKey:
        """Replace a key by a new one (its secret in `.key`) and revoke the old one (not retried:
        a repeat would rotate the new key too). A client using the rotated key needs the new one."""
        return CreatedApiKey.model_validate(self.send("POST", f"/v1/keys/{key_id}/rotate").json())

    def revoke_key(self, key_id: JobId) -> None:
        """Revoke a key: it is refused from the next request on (revoking twice is harmless)."""
        self.send("DELETE", f"/v1/keys/{key_id}")

    # ----------------------------------------------------------------------- webhooks

    def create_webhook(
        self, url: str, *, event_types: list[str] | None = None, description: str = ""
    ) -> CreatedWebhook:
        """Register an endpoint (default: every event type); its signing secret is in `.secret`, shown
        this once (not retried: a repeat would register a second endpoint)."""
        body: dict[str, Any] = {"url": url, "description": description}
        if event_types is not None:
            body["event_types"] = list(event_types)
        return CreatedWebhook.model_validate(self.send("POST", "/v1/webhooks", json=body).json())

    def list_webhooks(self) -> list[Webhook]:
        """Your tenant's endpoints, oldest first (without secrets)."""
        return [Webhook.model_validate(w) for w in self._get("/v1/webhooks")["data"]]

    def get_webhook(self, webhook_id: JobId) -> Webhook:
        return Webhook.model_validate(self._get(f"/v1/webhooks/{webhook_id}"))

    def delete_webhook(self, webhook_id: JobId) -> None:
        """Delete an endpoint and its delivery log."""
        self.send("DELETE", f"/v1/webhooks/{webhook_id}")

    def rotate_webhook_secret(self, webhook_id: JobId) -> CreatedWebhook:
        """Replace the endpoint's signing secret; the new one is in `.secret` (not retried)."""
        return CreatedWebhook.model_validate(self.send("POST", f"/v1/webhooks/{webhook_id}/rotate-secret").json())

    def list_webhook_deliveries_page(
        self, webhook_id: JobId, *, limit: int = 20, after: str | None = None
    ) -> WebhookDeliveriesPage:
        """One page of the endpoint's delivery log, newest first."""
        path = f"/v1/webhooks/{webhook_id}/deliveries"
        return WebhookDeliveriesPage.model_validate(self._get(path, limit=limit, after=after))

    def list_webhook_deliveries(self, webhook_id: JobId, *, page_size: int = 100) -> Iterator[WebhookDelivery]:
        """The endpoint's whole delivery log, newest first, fetching pages as they are consumed."""
        after = None
        while True:
            page = self.list_webhook_deliveries_page(webhook_id, limit=page_size, after=after)
            yield from page.data
            if not page.has_more or page.next_cursor is None:
                return
            after = page.next_cursor

    def get_webhook_delivery(self, webhook_id: JobId, delivery_id: JobId) -> WebhookDelivery:
        return WebhookDelivery.model_validate(self._get(f"/v1/webhooks/{webhook_id}/deliveries/{delivery_id}"))

    def redeliver_webhook(self, webhook_id: JobId, delivery_id: JobId) -> WebhookDelivery:
        """Send a succeeded or failed delivery again, with a fresh series of retries; Conflict while it is
        still pending."""
        path = f"/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"
        return WebhookDelivery.model_validate(self.send("POST", path).json())

    # ----------------------------------------------------------------------- quotas and usage

    def quotas(self, *, tenant_id: JobId | None = None) -> TenantQuotas:
        """Your tenant's limits in force, overrides, usage and job counts; with `tenant_id`, that
        tenant's (admin keys only)."""
        path = "/v1/quotas" if tenant_id is None else f"/v1/tenants/{tenant_id}/quotas"
        return TenantQuotas.model_validate(self._get(path))

    def set_quotas(self, tenant_id: JobId, **limits: float | None) -> TenantQuotas:
        """Replace a tenant's overrides (admin keys only): max_running_jobs, max_queued_jobs,
        requests_per_second, max_generated_tokens, max_device_seconds; one left out (or None) falls
        back to the operator's default."""
        response = self.send("PUT", f"/v1/tenants/{tenant_id}/quotas", json=limits)
        return TenantQuotas.model_validate(response.json())

    def usage(self, *, start: datetime | None = None, end: datetime | None = None) -> UsageReport:
        """Your tenant's usage recorded in [start, end) (all of it without bounds), in total and per job."""
        params = {"from": start.isoformat() if start else None, "to": end.isoformat() if end else None}
        return UsageReport.model_validate(self._get("/v1/usage", **params))

    def job_usage(self, job_id: JobId) -> JobUsage:
        """What one job consumed so far."""
        return JobUsage.model_validate(self._get(f"/v1/jobs/{job_id}/usage"))


def is_retry_safe(method: str, headers: dict[str, str] | None) -> bool:
    """Whether repeating the request cannot act twice: idempotent methods, or an Idempotency-Key."""
    keyed = any(name.lower() == "idempotency-key" for name in headers or {})
    return method.upper() in IDEMPOTENT_METHODS or keyed


def _attachment_name(response: httpx.Response, default: str) -> str:
    disposition = response.headers.get("content-disposition", "")
    if 'filename="' in disposition:
        name = Path(disposition.split('filename="', 1)[1].split('"', 1)[0]).name  # no directories
        if name and name not in (".", ".."):
            return name
    return default


def _extract(archive: Path, dest: Path) -> Path:
    """Extract safely (no absolute paths, links or '..' escapes); returns the archive's top folder."""
    with tarfile.open(archive, "r:gz") as tar:
        roots = {Path(m.name).parts[0] for m in tar.getmembers() if m.name not in ("", ".")}
        tar.extractall(dest, filter="data")
    return dest / roots.pop() if len(roots) == 1 else dest
