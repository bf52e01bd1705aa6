"""`remix`: the command line of the ReMix finetuning service, built on `RemixClient`.

    remix submit examples/tiny-remix-grpo.yaml --follow
    remix list --status running
    remix follow JOB_ID
    remix download JOB_ID -o out/
    remix keys list
    remix keys rotate KEY_ID
    remix submit job.yaml --metadata team=search
    remix list --metadata team=search
    remix webhooks create https://example.com/hooks --event job.succeeded
    remix webhooks deliveries WEBHOOK_ID
    remix usage --from 2026-12-01T00:00:00Z
    remix quotas get
    remix quotas set --tenant acme --max-running-jobs 2   (admin key)

The service address and API key come from --url/--api-key (before the command) or
$REMIX_URL/$REMIX_API_KEY. Errors are printed to stderr; the exit status tells what happened
(see `ExitCode`). Every command talks to the service over HTTP only, `remix tenants ...` and
`remix keys create` included (those need an admin key; the first admin key comes from the
operator's `remix-service create-key --admin`).
"""

from __future__ import annotations

import enum
import functools
import itertools
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from rich.console import Console
from rich.table import Table

from remix_client import errors
from remix_client.client import DEFAULT_URL, RemixClient
from remix_client.follow import follow_job
from remix_client.models import ApiKey, CreatedApiKey, CreatedWebhook, Dataset, Job

F = TypeVar("F", bound=Callable[..., Any])
JOB_REQUEST_KEYS = {"name", "base_model", "dataset_id", "eval_dataset_id", "config", "metadata"}


class ExitCode(enum.IntEnum):
    """Exit statuses of `remix` (also of `submit --wait/--follow` and `follow`, by job outcome)."""

    OK = 0  # done; a waited-for job succeeded
    FAILED = 1  # the job failed, or the API answered an unexpected error
    USAGE = 2  # bad command line or job file, or the API rejected the request (400/413/415/422)
    NOT_FOUND = 3  # no such job, dataset or checkpoint (404/410)
    AUTH = 4  # missing, invalid or revoked API key (401/403)
    CONFLICT = 5  # the job's state forbids it (409), e.g. cancelling a finished job
    CANCELLED = 6  # the waited-for job was cancelled
    UNAVAILABLE = 7  # the service cannot be reached or stays unavailable (connection, 429, 5xx)
    QUOTA = 8  # a quota of the tenant is exhausted (problem type quota-exceeded)


EXIT_STATUS_HELP = (
    "Exit status: 0 ok (job succeeded), 1 job failed or API error, 2 usage error or rejected request, "
    "3 not found, 4 authentication, 5 conflict, 6 job cancelled, 7 service unreachable/unavailable, "
    "8 quota exceeded."
)
app = typer.Typer(
    help="Finetune language models with ReMix on a remote service.",
    epilog=EXIT_STATUS_HELP,
    no_args_is_help=True,
)
datasets_app = typer.Typer(help="Upload and inspect prompt/answer datasets.", no_args_is_help=True)
keys_app = typer.Typer(
    help="Your API keys: list, rotate, revoke; with an admin key, create keys for any tenant.", no_args_is_help=True
)
tenants_app = typer.Typer(help="Tenants (admin keys only): create and list.", no_args_is_help=True)
webhooks_app = typer.Typer(
    help="Webhooks: endpoints that receive signed job and checkpoint events, and their delivery logs.",
    no_args_is_help=True,
)
app.add_typer(datasets_app, name="datasets")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(keys_app, name="keys")
quotas_app = typer.Typer(
    help="Quotas: read your tenant's limits; with an admin key, read and set any tenant's.", no_args_is_help=True
)
app.add_typer(quotas_app, name="quotas")
app.add_typer(tenants_app, name="tenants")


def stdout() -> Console:
    return Console(highlight=False)


def stderr() -> Console:
    return Console(stderr=True, highlight=False)


def job_exit_code(job: Job) -> ExitCode:
    return {"succeeded": ExitCode.OK, "cancelled": ExitCode.CANCELLED}.get(job.status, ExitCode.FAILED)


def _error_exit_code(exc: errors.RemixError) -> ExitCode:
    table: list[tuple[type[errors.RemixError], ExitCode]] = [
        (errors.QuotaExceeded, ExitCode.QUOTA),
        (errors.NotFound, ExitCode.NOT_FOUND),
        (errors.Unauthorized, ExitCode.AUTH),
        (errors.Forbidden, ExitCode.AUTH),
        (errors.Conflict, ExitCode.CONFLICT),
        (errors.BadRequest, ExitCode.USAGE),
        (errors.ValidationFailed, ExitCode.USAGE),
        (errors.PayloadTooLarge, ExitCode.USAGE),
        (errors.UnsupportedMediaType, ExitCode.USAGE),
        (errors.ServerUnavailable, ExitCode.UNAVAILABLE),
        (errors.RateLimited, ExitCode.UNAVAILABLE),
        (errors.RemixConnectionError, ExitCode.UNAVAILABLE),
    ]
    return next((code for cls, code in table if isinstance(exc, cls)), ExitCode.FAILED)


def _report(exc: errors.RemixError) -> None:
    console = stderr()
    if isinstance(exc, errors.RemixAPIError):
        console.print(f"error: {exc.status} {exc.title}: {exc.detail}", markup=False)
        if isinstance(exc, errors.QuotaExceeded):
            usage = "" if exc.usage is None else f", usage {exc.usage:g}"
            console.print(f"  quota {exc.quota}: limit {exc.limit:g}{usage}", markup=False)
        for item in exc.body.get("errors") or []:
            console.print(f"  {item.get('field')}: {item.get('message')}", markup=False)
    else:
        console.print(f"error: {exc}", markup=False)


def api_command(fn: F) -> F:
    """Turn client errors into a message on stderr and the matching exit status."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except errors.RemixError as exc:
            _report(exc)
            raise typer.Exit(_error_exit_code(exc)) from exc

    return wrapper  # type: ignore[return-value]


@app.callback()
def main(
    ctx: typer.Context,
    url: Annotated[str, typer.Option(envvar="REMIX_URL", help="Service base URL.")] = DEFAULT_URL,
    api_key: Annotated[str | None, typer.Option(envvar="REMIX_API_KEY", help="API key (rmx_...).")] = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds per request.")] = 30.0,
    max_retries: Annotated[int, typer.Option(min=0, help="Retries of a failed request (with backoff).")] = 3,
) -> None:
    """Configure the connection used by every command."""
    ctx.obj = {"url": url, "api_key": api_key, "timeout": timeout, "max_retries": max_retries}


def client_of(ctx: typer.Context) -> RemixClient:
    options = ctx.find_root().obj or {}
    if not options.get("api_key"):
        stderr().print("error: no API key: pass --api-key or set REMIX_API_KEY", markup=False)
        raise typer.Exit(ExitCode.AUTH)
    return RemixClient(
        options["url"], options["api_key"], timeout=options["timeout"], max_retries=options["max_retries"]
    )


# --------------------------------------------------------------------------- jobs

MetadataOption = Annotated[
    list[str] | None,
    typer.Option("--metadata", "-m", help="KEY=VALUE; repeat for several pairs.", metavar="KEY=VALUE"),
]


def parse_metadata(pairs: list[str] | None) -> dict[str, str]:
    """["team=search", "run=7"] -> {"team": "search", "run": "7"} (a value may contain '=')."""
    metadata: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise typer.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="--metadata")
        metadata[key] = value
    return metadata


def load_job_file(path: Path) -> dict[str, Any]:
    """create_job keyword arguments from a YAML/JSON file: either a job request
    {config, name?, base_model?, dataset_id?, eval_dataset_id?} or a bare TrainConfig mapping."""
    try:
        text = path.read_text()
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise typer.BadParameter(f"{path}: expected a mapping at the top level")
    if "config" not in data:
        return {"config": data}
    unknown = sorted(set(data) - JOB_REQUEST_KEYS)
    if unknown:
        raise typer.BadParameter(f"{path}: unknown keys next to 'config': {', '.join(unknown)}")
    return dict(data)


@app.command()
@api_command
def submit(
    ctx: typer.Context,
    job_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JOB.yaml or JOB.json")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job to end (exit status by outcome).")] = False,
    follow: Annotated[bool, typer.Option("--follow", help="Show live progress until the job ends.")] = False,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Reuse to make a repeated submission return the same job.")
    ] = None,
    name: Annotated[str | None, typer.Option(help="Job name (overrides the file's).")] = None,
    metadata: MetadataOption = None,
) -> None:
    """Submit a job; prints its id on stdout."""
    request = load_job_file(job_file)
    if name is not None:
        request["name"] = name
    if metadata:
        request["metadata"] = {**(request.get("metadata") or {}), **parse_metadata(metadata)}
    with client_of(ctx) as client:
        job = client.create_job(**request, idempotency_key=idempotency_key)
        typer.echo(str(job.id))
        stderr().print(f"job {job.id} {job.status} ({job.total_steps} steps)", markup=False)
        if follow:
            raise typer.Exit(job_exit_code(follow_job(client, job.id, stdout())))
        if wait:
            job = client.wait(job.id)
            stdout().print(f"job {job.id} {job.status}", markup=False)
            raise typer.Exit(job_exit_code(job))


@app.command("list")
@api_command
def list_jobs(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, failed, ...")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many jobs.")] = 20,
    metadata: MetadataOption = None,
) -> None:
    """List your jobs, newest first (with --metadata, only those having every pair given)."""
    filters = parse_metadata(metadata)
    with client_of(ctx) as client:
        found = client.list_jobs(status=status, page_size=min(limit, 100), metadata=filters)
        jobs = list(itertools.islice(found, limit))
    table = Table("id", "name", "status", "step", "base model", "metadata", "created", title=f"{len(jobs)} job(s)")
    for job in jobs:
        table.add_row(
            str(job.id),
            job.name,
            job.status,
            f"{job.current_step}/{job.total_steps}",
            job.base_model,
            _pairs(job.metadata),
            f"{job.created_at:%Y-%m-%d %H:%M:%S}",
        )
    stdout().print(table)


def _pairs(metadata: dict[str, str]) -> str:
    return " ".join(f"{key}={value}" for key, value in sorted(metadata.items())) or "-"


@app.command("set-metadata")
@api_command
def set_metadata(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    pairs: Annotated[list[str] | None, typer.Argument(help="KEY=VALUE pairs; none clears the metadata.")] = None,
) -> None:
    """Replace a job's metadata with the pairs given."""
    metadata = parse_metadata(pairs)
    with client_of(ctx) as client:
        job = client.update_job_metadata(job_id, metadata)
    stdout().print(f"job {job.id} metadata: {_pairs(job.metadata)}", markup=False)


@app.command()
@api_command
def show(ctx: typer.Context, job_id: Annotated[str, typer.Argument(help="Job id.")]) -> None:
    """Show a job: status, progress, summary and its latest events."""
    with client_of(ctx) as client:
        job = client.get_job(job_id)
        events = client.events(job_id)[-5:]
    table = Table("field", "value", show_header=False, title=f"job {job.id}")
    rows: list[tuple[str, Any]] = [
        ("name", job.name),
        ("status", job.status),
        ("step", f"{job.current_step}/{job.total_steps}"),
        ("base model", job.base_model),
        ("dataset", job.dataset_id or "-"),
        ("metadata", _pairs(job.metadata)),
        ("attempts", job.attempts),
        ("created", job.created_at),
        ("started", job.started_at or "-"),
        ("finished", job.finished_at or "-"),
    ]
    if job.error:
        rows.append(("error", job.error))
    rows += [(f"summary.{k}", v) for k, v in sorted(job.summary.items())]
    for field, value in rows:
        table.add_row(field, str(value))
    console = stdout()
    console.print(table)
    for event in events:
        console.print(f"step {event.step}  {event.kind}: {event.message}", markup=False)


@app.command()
@api_command
def follow(ctx: typer.Context, job_id: Annotated[str, typer.Argument(help="Job id.")]) -> None:
    """Live progress (step, reward, accuracy, phase, ETA) until the job ends; exit status by outcome."""
    with client_of(ctx) as client:
        raise typer.Exit(job_exit_code(follow_job(client, job_id, stdout())))


@app.command()
@api_command
def cancel(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    checkpoint: Annotated[bool, typer.Option("--checkpoint", help="Save a checkpoint before stopping.")] = False,
) -> None:
    """Cancel a job (a running job stops at the next step)."""
    with client_of(ctx) as client:
        job = client.cancel_job(job_id, checkpoint=checkpoint)
    stdout().print(f"job {job.id} {job.status}", markup=False)


@app.command()
@api_command
def pause(ctx: typer.Context, job_id: Annotated[str, typer.Argument(help="Job id.")]) -> None:
    """Pause a job (a running job saves a checkpoint and stops at the next step); resume it later."""
    with client_of(ctx) as client:
        job = client.pause_job(job_id)
    stdout().print(f"job {job.id} {job.status}", markup=False)


@app.command()
@api_command
def resume(ctx: typer.Context, job_id: Annotated[str, typer.Argument(help="Job id.")]) -> None:
    """Resume a paused job from its newest checkpoint."""
    with client_of(ctx) as client:
        job = client.resume_job(job_id)
    stdout().print(f"job {job.id} {job.status}", markup=False)


@app.command()
@api_command
def download(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(help="Job id.")],
    step: Annotated[int | None, typer.Option(min=0, help="Checkpoint step (default: the latest).")] = None,
    output: Annotated[Path, typer.Option("--output", "-o", help="Directory to write to.")] = Path("."),
    extract: Annotated[bool, typer.Option(help="Extract the archive (else keep the .tar.gz).")] = True,
) -> None:
    """Download a checkpoint; prints the path of the Hugging Face folder (or archive)."""
    with client_of(ctx) as client:
        path = client.download_checkpoint(job_id, step, output, extract=extract)
    typer.echo(str(path))


# --------------------------------------------------------------------------- datasets


def print_dataset(dataset: Dataset) -> None:
    console = stdout()
    console.print(f"dataset {dataset.id}: {dataset.name}, {dataset.num_rows} rows, {dataset.format}", markup=False)
    # The preview holds rows as training reads them: {"prompt": ..., "answer": ...}.
    table = Table(f"prompt ({dataset.prompt_field})", f"answer ({dataset.answer_field})", title="preview")
    for row in dataset.preview:
        values = [row.get("prompt", ""), row.get("answer", "")] if isinstance(row, dict) else [row, ""]
        table.add_row(*(str(v) for v in values))
    console.print(table)


@datasets_app.command("upload")
@api_command
def datasets_upload(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help=".jsonl, .json or .parquet")],
    prompt_field: Annotated[str, typer.Option(help="Column holding the prompt.")] = "prompt",
    answer_field: Annotated[str, typer.Option(help="Column holding the verifiable answer.")] = "answer",
    name: Annotated[str | None, typer.Option(help="Name (default: the file name).")] = None,
) -> None:
    """Upload a dataset (validated by the server); prints its id, then a preview."""
    with client_of(ctx) as client:
        dataset = client.upload_dataset(file, prompt_field=prompt_field, answer_field=answer_field, name=name)
    typer.echo(str(dataset.id))
    print_dataset(dataset)


@datasets_app.command("show")
@api_command
def datasets_show(ctx: typer.Context, dataset_id: Annotated[str, typer.Argument(help="Dataset id.")]) -> None:
    """Show a dataset and a preview of its first rows."""
    with client_of(ctx) as client:
        dataset = client.get_dataset(dataset_id)
    print_dataset(dataset)


@datasets_app.command("list")
@api_command
def datasets_list(ctx: typer.Context) -> None:
    """List your datasets, newest first."""
    with client_of(ctx) as client:
        rows = list(client.list_datasets())
    table = Table("id", "name", "rows", "format", "created", title=f"{len(rows)} dataset(s)")
    for d in rows:
        table.add_row(str(d.id), d.name, str(d.num_rows), d.format, f"{d.created_at:%Y-%m-%d %H:%M:%S}")
    stdout().print(table)


# --------------------------------------------------------------------------- tenants and keys


def _when(moment: Any) -> str:
    return "-" if moment is None else f"{moment:%Y-%m-%d %H:%M:%S}"


def _tenant_id(client: RemixClient, tenant: str) -> str:
    """A tenant given by id or by name (names are looked up: admin keys only)."""
    try:
        return str(uuid.UUID(tenant))
    except ValueError:
        pass  # not an id: a name
    found = client.list_tenants(name=tenant)
    if not found:
        stderr().print(f"error: no tenant named {tenant!r}", markup=False)
        raise typer.Exit(ExitCode.NOT_FOUND)
    return str(found[0].id)


def _print_secret(key: CreatedApiKey, what: str) -> None:
    typer.echo(key.key)
    stderr().print(
        f"{what} key {key.id} prefix={key.prefix} admin={key.is_admin} (store this key now: it is not shown again)",
        markup=False,
    )


@tenants_app.command("create")
@api_command
def tenants_create(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Unique tenant name.")]) -> None:
    """Create a tenant (admin key); prints its id. Give it a key with `remix keys create --tenant NAME`."""
    with client_of(ctx) as client:
        tenant = client.create_tenant(name)
    typer.echo(str(tenant.id))
    stderr().print(f"tenant {tenant.name} created", markup=False)


@tenants_app.command("list")
@api_command
def tenants_list(ctx: typer.Context) -> None:
    """List every tenant, oldest first (admin key)."""
    with client_of(ctx) as client:
        rows = client.list_tenants()
    table = Table("id", "name", "created", title=f"{len(rows)} tenant(s)")
    for tenant in rows:
        table.add_row(str(tenant.id), tenant.name, _when(tenant.created_at))
    stdout().print(table)


@keys_app.command("create")
@api_command
def keys_create(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="Tenant id or name (create one with `remix tenants create`).")],
    admin: Annotated[bool, typer.Option("--admin", help="An admin key (local paths, tenants, all keys).")] = False,
    name: Annotated[str, typer.Option(help="Label of the key (e.g. who uses it).")] = "",
) -> None:
    """Create an API key for a tenant (admin key); prints the new key once, on stdout."""
    with client_of(ctx) as client:
        key = client.create_key(_tenant_id(client, tenant), name=name, admin=admin)
    _print_secret(key, "created")


@keys_app.command("list")
@api_command
def keys_list(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Another tenant's keys, by id or name (admin key).")] = None,
) -> None:
    """List your keys (prefixes, never secrets), revoked ones included, newest first."""
    with client_of(ctx) as client:
        rows: list[ApiKey] = client.list_keys(tenant_id=None if tenant is None else _tenant_id(client, tenant))
    table = Table("id", "prefix", "name", "admin", "created", "revoked", title=f"{len(rows)} key(s)")
    for key in rows:
        admin = "yes" if key.is_admin else ""
        table.add_row(str(key.id), key.prefix, key.name, admin, _when(key.created_at), _when(key.revoked_at))
    stdout().print(table)


@keys_app.command("rotate")
@api_command
def keys_rotate(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="Id of the key to replace.")]) -> None:
    """Replace a key by a new one (printed once, on stdout) and revoke the old one at once."""
    with client_of(ctx) as client:
        key = client.rotate_key(key_id)
    _print_secret(key, "new")


@keys_app.command("revoke")
@api_command
def keys_revoke(ctx: typer.Context, key_id: Annotated[str, typer.Argument(help="Id of the key to revoke.")]) -> None:
    """Revoke a key: every request with it is refused from now on."""
    with client_of(ctx) as client:
        client.revoke_key(key_id)
    stderr().print(f"key {key_id} revoked", markup=False)


# --------------------------------------------------------------------------- webhooks


def _print_webhook_secret(webhook: CreatedWebhook, what: str) -> None:
    typer.echo(webhook.secret)
    stderr().print(
        f"{what} webhook {webhook.id} -> {webhook.url} ({', '.join(webhook.event_types)}); store this signing "
        "secret now: it is not shown again",
        markup=False,
    )


@webhooks_app.command("create")
@api_command
def webhooks_create(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="Where events are POSTed (http:// or https://).")],
    event: Annotated[
        list[str] | None,
        typer.Option("--event", "-e", help="An event type to receive; repeat for several (default: all)."),
    ] = None,
    description: Annotated[str, typer.Option(help="A label of the endpoint.")] = "",
) -> None:
    """Register a webhook; prints its signing secret once, on stdout (the id goes to stderr)."""
    with client_of(ctx) as client:
        webhook = client.create_webhook(url, event_types=event or None, description=description)
    _print_webhook_secret(webhook, "created")


@webhooks_app.command("list")
@api_command
def webhooks_list(ctx: typer.Context) -> None:
    """List your webhooks, oldest first."""
    with client_of(ctx) as client:
        rows = client.list_webhooks()
    table = Table("id", "url", "events", "description", "created", title=f"{len(rows)} webhook(s)")
    for webhook in rows:
        events = ", ".join(webhook.event_types)
        table.add_row(str(webhook.id), webhook.url, events, webhook.description, _when(webhook.created_at))
    stdout().print(table)


@webhooks_app.command("delete")
@api_command
def webhooks_delete(ctx: typer.Context, webhook_id: Annotated[str, typer.Argument(help="Webhook id.")]) -> None:
    """Delete a webhook and its delivery log."""
    with client_of(ctx) as client:
        client.delete_webhook(webhook_id)
    stderr().print(f"webhook {webhook_id} deleted", markup=False)


@webhooks_app.command("rotate-secret")
@api_command
def webhooks_rotate_secret(ctx: typer.Context, webhook_id: Annotated[str, typer.Argument(help="Webhook id.")]) -> None:
    """Replace a webhook's signing secret; prints the new one once, on stdout."""
    with client_of(ctx) as client:
        webhook = client.rotate_webhook_secret(webhook_id)
    _print_webhook_secret(webhook, "rotated")


@webhooks_app.command("deliveries")
@api_command
def webhooks_deliveries(
    ctx: typer.Context,
    webhook_id: Annotated[str, typer.Argument(help="Webhook id.")],
    limit: Annotated[int, typer.Option(min=1, help="Show at most this many deliveries.")] = 20,
) -> None:
    """A webhook's delivery log, newest first: status, attempts, last answer, next retry."""
    with client_of(ctx) as client:
        rows = list(itertools.islice(client.list_webhook_deliveries(webhook_id, page_size=min(limit, 100)), limit))
    table = Table(
        "id",
        "event",
        "status",
        "attempts",
        "last answer",
        "next retry",
        "delivered",
        title=f"{len(rows)} delivery(ies)",
    )
    for delivery in rows:
        answer = str(delivery.last_status_code) if delivery.last_status_code is not None else "-"
        if delivery.last_error and delivery.last_status_code is None:
            answer = delivery.last_error
        table.add_row(
            str(delivery.id),
            delivery.event_type,
            delivery.status,
            str(delivery.attempts),
            answer,
            _when(delivery.next_attempt_at),
            _when(delivery.delivered_at),
        )
    stdout().print(table)


@webhooks_app.command("redeliver")
@api_command
def webhooks_redeliver(
    ctx: typer.Context,
    webhook_id: Annotated[str, typer.Argument(help="Webhook id.")],
    delivery_id: Annotated[str, typer.Argument(help="Delivery id (see `remix webhooks deliveries`).")],
) -> None:
    """Send a finished (succeeded or failed) delivery again."""
    with client_of(ctx) as client:
        delivery = client.redeliver_webhook(webhook_id, delivery_id)
    stdout().print(f"delivery {delivery.id} {delivery.status}", markup=False)


# --------------------------------------------------------------------------- usage and quotas

USAGE_COLUMNS = ("steps", "fresh_rollouts", "generated_tokens", "trained_tokens", "device_seconds")
QUOTA_FIELDS = (
    "max_running_jobs",
    "max_queued_jobs",
    "requests_per_second",
    "max_generated_tokens",
    "max_device_seconds",
)


def _number(value: float | None) -> str:
    return "unlimited" if value is None else f"{value:g}"


@app.command("usage")
@api_command
def usage(
    ctx: typer.Context,
    start: Annotated[
        datetime | None, typer.Option("--from", help="Steps recorded at or after this time (ISO 8601).")
    ] = None,
    end: Annotated[datetime | None, typer.Option("--to", help="Steps recorded before this time (ISO 8601).")] = None,
    job: Annotated[str | None, typer.Option(help="Only this job's usage, all of it.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON document.")] = False,
) -> None:
    """What your jobs consumed: fresh rollouts, generated and trained tokens, device-seconds."""
    with client_of(ctx) as client:
        if job is not None:
            one = client.job_usage(job)
            rows, totals, title = [one], one, f"usage of job {job}"
            document: Any = one.model_dump(mode="json")
        else:
            report = client.usage(start=start, end=end)
            rows, totals, title = list(report.jobs), report.totals, f"usage of {len(report.jobs)} job(s)"
            document = report.model_dump(mode="json", by_alias=True)
    if as_json:
        typer.echo(json.dumps(document, indent=2))
        return
    table = Table("job", *USAGE_COLUMNS, title=title)
    for row in rows:
        table.add_row(str(getattr(row, "job_id", "")), *(f"{getattr(row, c):g}" for c in USAGE_COLUMNS))
    if job is None:
        table.add_row("total", *(f"{getattr(totals, c):g}" for c in USAGE_COLUMNS))
    stdout().print(table)


def _print_quotas(quotas: Any) -> None:
    table = Table("quota", "limit", "override", title=f"quotas of tenant {quotas.tenant_id}")
    for name in QUOTA_FIELDS:
        override = getattr(quotas.overrides, name)
        table.add_row(name, _number(getattr(quotas.limits, name)), "default" if override is None else f"{override:g}")
    stdout().print(table)
    used = quotas.usage
    stdout().print(
        f"running jobs {quotas.running_jobs}, queued jobs {quotas.queued_jobs}; used: "
        f"{used.generated_tokens} generated tokens, {used.device_seconds:g} device-seconds, "
        f"{used.fresh_rollouts} fresh rollouts",
        markup=False,
    )


@quotas_app.command("get")
@api_command
def quotas_get(
    ctx: typer.Context,
    tenant: Annotated[str | None, typer.Option(help="Another tenant's quotas, by id or name (admin key).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON document.")] = False,
) -> None:
    """Your tenant's limits in force (unlimited if unset), which are overrides, and the usage so far."""
    with client_of(ctx) as client:
        quotas = client.quotas(tenant_id=None if tenant is None else _tenant_id(client, tenant))
    if as_json:
        typer.echo(json.dumps(quotas.model_dump(mode="json"), indent=2))
    else:
        _print_quotas(quotas)


@quotas_app.command("set")
@api_command
def quotas_set(
    ctx: typer.Context,
    tenant: Annotated[str, typer.Option(help="Tenant id or name.")],
    max_running_jobs: Annotated[int | None, typer.Option(min=0, help="Jobs running at once.")] = None,
    max_queued_jobs: Annotated[int | None, typer.Option(min=0, help="Jobs waiting in the queue.")] = None,
    requests_per_second: Annotated[float | None, typer.Option(min=0.001, help="API requests per second.")] = None,
    max_generated_tokens: Annotated[int | None, typer.Option(min=0, help="Training budget, generated tokens.")] = None,
    max_device_seconds: Annotated[float | None, typer.Option(min=0, help="Training budget, device-seconds.")] = None,
    default: Annotated[
        list[str] | None, typer.Option(help="Put this quota back to the operator's default (repeatable).")
    ] = None,
) -> None:
    """Change a tenant's quotas (admin key); quotas not named keep their current override."""
    given = {
        "max_running_jobs": max_running_jobs,
        "max_queued_jobs": max_queued_jobs,
        "requests_per_second": requests_per_second,
        "max_generated_tokens": max_generated_tokens,
        "max_device_seconds": max_device_seconds,
    }
    unknown = sorted(set(default or ()) - set(QUOTA_FIELDS))
    if unknown:
        stderr().print(f"error: --default takes one of {', '.join(QUOTA_FIELDS)}; not {', '.join(unknown)}")
        raise typer.Exit(ExitCode.USAGE)
    with client_of(ctx) as client:
        tenant_id = _tenant_id(client, tenant)
        current = client.quotas(tenant_id=tenant_id).overrides.model_dump()
        chosen = {name: value for name, value in given.items() if value is not None}
        merged = current | chosen | dict.fromkeys(default or ())
        quotas = client.set_quotas(tenant_id, **merged)
    _print_quotas(quotas)


if __name__ == "__main__":
    app()
