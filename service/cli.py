"""`remix-service`: administration of the service (API keys, migrations, serving).

The end-to-end demo is `remix-demo` (worker/demo.py): it starts a worker, which this package never imports.

Add commands with `@app.command()`; each reads the same Settings as the API (REMIX_* env).
"""

from __future__ import annotations

from typing import Annotated

import typer

from service.settings import get_settings

app = typer.Typer(help="Administer the ReMix finetuning service.", no_args_is_help=True)


@app.command("create-key")
def create_key(
    tenant: Annotated[str, typer.Option(help="Tenant name; created if it does not exist.")],
    admin: Annotated[bool, typer.Option("--admin", help="Allow local model paths and remote code.")] = False,
    name: Annotated[str, typer.Option(help="Label of the key (e.g. who uses it).")] = "",
) -> None:
    """Create an API key for TENANT and print it once (only its hash is stored)."""
    from service.db import session_scope
    from service.repositories.tenants import create_api_key, get_or_create_tenant

    with session_scope(get_settings().database_url) as session:
        row, clear = create_api_key(session, get_or_create_tenant(session, tenant), name=name, is_admin=admin)
        prefix = row.prefix
    typer.echo(clear)
    typer.echo(f"tenant={tenant} prefix={prefix} admin={admin} (store this key now: it is not shown again)", err=True)


@app.command("revoke-key")
def revoke_key(
    prefix: Annotated[str, typer.Argument(help="Public prefix of the key, e.g. rmx_AbCdEfGh.")],
) -> None:
    """Revoke every active key with this public prefix."""
    from service.db import session_scope
    from service.repositories.tenants import revoke_key as revoke

    with session_scope(get_settings().database_url) as session:
        count = revoke(session, prefix)
    typer.echo(f"revoked {count} key(s)")
    if count == 0:
        raise typer.Exit(code=1)


@app.command()
def migrate(revision: Annotated[str, typer.Argument(help="Target revision.")] = "head") -> None:
    """Upgrade the database schema (alembic upgrade)."""
    from service.migrate import upgrade

    upgrade(get_settings().database_url, revision)
    typer.echo(f"database migrated to {revision}")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Uvicorn worker processes.")] = 1,
    reload: Annotated[bool, typer.Option(help="Reload on code changes (development).")] = False,
) -> None:
    """Run the HTTP API with uvicorn."""
    import uvicorn

    uvicorn.run("service.main:app", host=host, port=port, workers=workers, reload=reload, proxy_headers=True)


if __name__ == "__main__":
    app()
