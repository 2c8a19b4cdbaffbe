"""``captionq webhooks``: a tenant's callback endpoints and deliveries (dead, replay)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from producers.publish import publish_delivery
from schemas.checks.urls import check_url, parse_networks
from schemas.errors import PermanentError
from schemas.settings import core_settings
from schemas.store import endpoints, outbox
from schemas.store.sessions import session_scope
from schemas.store.tenants import tenant_by_name
from schemas.tables import Delivery, DeliveryStatus

app = typer.Typer(help="Webhook endpoints and callback deliveries.", no_args_is_help=True)
console = Console()
TenantOpt = Annotated[str, typer.Option(help="Tenant name")]


def _tenant_id(session, name: str) -> str:  # type: ignore[no-untyped-def]
    tenant = tenant_by_name(session=session, name=name)
    if tenant is None:
        console.print(f"[red]no tenant {name!r}[/red]")
        raise typer.Exit(1)
    return tenant.id


@app.command("add")
def add(
    url: str,
    tenant: TenantOpt = "default",
    event: Annotated[
        list[str] | None, typer.Option("--event", help="Event type (repeatable)")
    ] = None,
) -> None:
    """Register an endpoint; prints its secret (shown once)."""
    settings = core_settings()
    try:
        target = check_url(
            url,
            allowed_ports=range(1, 65536),
            allow_networks=parse_networks(settings.url_allow_cidrs),
        )
        with session_scope(settings.database_url) as session:
            endpoint, secret = endpoints.create_endpoint(
                session=session,
                tenant_id=_tenant_id(session, tenant),
                url=target.url,
                key=settings.webhook_secrets_key,
                event_types=event or [],
            )
    except (PermanentError, ValueError) as exc:
        console.print(f"[red]refused[/red]: {exc}")
        raise typer.Exit(2) from exc
    typer.echo(f"{endpoint.id} {secret}")


@app.command("list")
def list_(tenant: TenantOpt = "default") -> None:
    """The tenant's endpoints."""
    settings = core_settings()
    table = Table("id", "url", "events", "state")
    with session_scope(settings.database_url) as session:
        for e in endpoints.list_endpoints(session=session, tenant_id=_tenant_id(session, tenant)):
            state = f"disabled: {e.disabled_reason}" if e.disabled_at else "enabled"
            table.add_row(e.id, e.url, ",".join(e.event_types), state)
    console.print(table)


@app.command()
def rotate(endpoint_id: str, tenant: TenantOpt = "default") -> None:
    """A new secret; the old one keeps signing for WEBHOOK_ROTATION_GRACE_S."""
    settings = core_settings()
    with session_scope(settings.database_url) as session:
        endpoint = endpoints.get_endpoint(
            session=session, tenant_id=_tenant_id(session, tenant), endpoint_id=endpoint_id
        )
        secret = endpoints.rotate_secret(
            session=session,
            endpoint=endpoint,
            key=settings.webhook_secrets_key,
            grace_s=settings.webhook_rotation_grace_s,
        )
    typer.echo(secret)


@app.command()
def ping(
    endpoint_id: str,
    tenant: TenantOpt = "default",
    wait: Annotated[float, typer.Option(help="Seconds to wait for the outcome")] = 20.0,
) -> None:
    """Send a signed ``webhook.ping`` through the IO workers and report what came back."""
    settings = core_settings()
    with session_scope(settings.database_url) as session:
        endpoint = endpoints.get_endpoint(
            session=session, tenant_id=_tenant_id(session, tenant), endpoint_id=endpoint_id
        )
        delivery_id = outbox.create_ping(session=session, endpoint=endpoint).id
    publish_delivery(redis_url=settings.redis_url, delivery_id=delivery_id, url=endpoint.url)
    deadline = time.monotonic() + wait
    while True:
        with session_scope(settings.database_url) as session:
            row = session.get(Delivery, delivery_id)
            assert row is not None
            attempts, code, error, state = (
                row.attempts,
                row.last_status_code,
                row.last_error,
                row.status,
            )
        if attempts or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if not attempts:
        console.print(f"{delivery_id}: not attempted yet (are IO workers running?)")
        raise typer.Exit(1)
    ok = state == DeliveryStatus.delivered
    console.print(f"{delivery_id}: {state}, HTTP {code}" + ("" if ok else f", {error}"))
    raise typer.Exit(0 if ok else 1)


@app.command()
def enable(endpoint_id: str, tenant: TenantOpt = "default", off: bool = False) -> None:
    """Enable an endpoint (``--off`` disables it)."""
    settings = core_settings()
    with session_scope(settings.database_url) as session:
        endpoint = endpoints.get_endpoint(
            session=session, tenant_id=_tenant_id(session, tenant), endpoint_id=endpoint_id
        )
        endpoints.set_enabled(session=session, endpoint=endpoint, enabled=not off)


@app.command()
def deliveries(
    tenant: TenantOpt = "default",
    dead: Annotated[bool, typer.Option(help="Only the dead ones")] = False,
    limit: int = 50,
) -> None:
    """Recent deliveries (newest first)."""
    settings = core_settings()
    table = Table("webhook-id", "job", "event", "status", "attempts", "last")
    with session_scope(settings.database_url) as session:
        rows = outbox.list_deliveries(
            session=session,
            tenant_id=_tenant_id(session, tenant),
            status=DeliveryStatus.dead if dead else None,
            limit=limit,
        )
        for d in rows:
            last = str(d.last_status_code or (d.last_error or "")[:40])
            table.add_row(d.id, d.job_id, d.event_type, d.status, str(d.attempts), last)
    console.print(table)


@app.command()
def replay(
    delivery_id: Annotated[
        str | None, typer.Argument(help="One delivery; omit with --all-dead")
    ] = None,
    tenant: TenantOpt = "default",
    all_dead: Annotated[bool, typer.Option("--all-dead")] = False,
) -> None:
    """Send events again: same webhook-id and body, fresh retry schedule."""
    settings = core_settings()
    with session_scope(settings.database_url) as session:
        tenant_id = _tenant_id(session, tenant)
        if all_dead:
            count = outbox.replay_dead(session=session, tenant_id=tenant_id)
            typer.echo(f"replayed {count}")
            return
        if delivery_id is None:
            raise typer.BadParameter("give a delivery id or --all-dead")
        try:
            outbox.replay_delivery(session=session, tenant_id=tenant_id, delivery_id=delivery_id)
        except PermanentError as exc:
            console.print(f"[red]{exc.code.value}[/red]: {exc.message}")
            raise typer.Exit(1) from exc
    typer.echo(f"replaying {delivery_id}")
