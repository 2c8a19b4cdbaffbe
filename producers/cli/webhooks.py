"""``captionq webhooks``: a tenant's callback endpoints and their deliveries.

Endpoints (add, list, rotate, enable, delete, ping) and deliveries (list, one
delivery with its attempts, replay of one or of every dead one).
"""

from __future__ import annotations

import time
from typing import Annotated

import typer

from producers.cli.errors import fail
from producers.cli.output import JsonOpt, as_json, emit, group
from producers.cli.tenants import TenantOpt, require_tenant
from schemas.errors import ErrorCode

app = group("Webhook endpoints and callback deliveries.")


@app.command("add")
def add(
    url: str,
    tenant: TenantOpt = "default",
    event: Annotated[
        list[str] | None, typer.Option("--event", help="Event type (repeatable; default: all)")
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Register an endpoint; prints its id and secret (the secret is shown once)."""
    from producers.submit import callback_target
    from schemas.settings import core_settings
    from schemas.store import endpoints
    from schemas.store.sessions import session_scope

    settings = core_settings()
    target = callback_target(url, settings=settings, field="url")
    with session_scope(settings.database_url) as session:
        endpoint, secret = endpoints.create_endpoint(
            session=session,
            tenant_id=require_tenant(tenant, session=session).id,
            url=target.url,
            key=settings.webhook_secrets_key,
            event_types=event or [],
        )
        row = {**_endpoint_row(endpoint), "secret": secret}
    typer.echo(as_json(row) if json_out else f"{row['id']} {secret}")


@app.command("list")
def list_(tenant: TenantOpt = "default", json_out: JsonOpt = False) -> None:
    """The tenant's endpoints."""
    from schemas.settings import core_settings
    from schemas.store import endpoints
    from schemas.store.sessions import read_scope

    with read_scope(core_settings().database_url) as session:
        owner = require_tenant(tenant, session=session)
        rows = [
            _endpoint_row(e) for e in endpoints.list_endpoints(session=session, tenant_id=owner.id)
        ]
    emit(
        rows,
        columns=["id", "url", "events", "state"],
        json_out=json_out,
        empty=f"no endpoints for tenant {tenant!r}",
    )


def _endpoint_row(e) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {
        "id": e.id,
        "url": e.url,
        "events": list(e.event_types),
        "state": f"disabled: {e.disabled_reason}" if e.disabled_at else "enabled",
        "created_at": e.created_at,
    }


def _endpoint(session, tenant: str, endpoint_id: str):  # type: ignore[no-untyped-def]
    from schemas.store import endpoints

    owner = require_tenant(tenant, session=session)
    return endpoints.get_endpoint(session=session, tenant_id=owner.id, endpoint_id=endpoint_id)


@app.command()
def rotate(endpoint_id: str, tenant: TenantOpt = "default") -> None:
    """A new secret (printed); the old one keeps signing for WEBHOOK_ROTATION_GRACE_S."""
    from schemas.settings import core_settings
    from schemas.store import endpoints
    from schemas.store.sessions import session_scope

    settings = core_settings()
    with session_scope(settings.database_url) as session:
        secret = endpoints.rotate_secret(
            session=session,
            endpoint=_endpoint(session, tenant, endpoint_id),
            key=settings.webhook_secrets_key,
            grace_s=settings.webhook_rotation_grace_s,
        )
    typer.echo(secret)


@app.command()
def enable(
    endpoint_id: str,
    tenant: TenantOpt = "default",
    off: Annotated[bool, typer.Option("--off", help="Disable it instead")] = False,
) -> None:
    """Enable an endpoint (--off disables it)."""
    from schemas.settings import core_settings
    from schemas.store import endpoints
    from schemas.store.sessions import session_scope

    with session_scope(core_settings().database_url) as session:
        endpoint = _endpoint(session, tenant, endpoint_id)
        endpoints.set_enabled(session=session, endpoint=endpoint, enabled=not off)
    typer.echo(f"{endpoint_id} {'disabled' if off else 'enabled'}")


@app.command()
def delete(endpoint_id: str, tenant: TenantOpt = "default") -> None:
    """Delete an endpoint; its past deliveries stay listed."""
    from schemas.settings import core_settings
    from schemas.store import endpoints
    from schemas.store.sessions import session_scope

    with session_scope(core_settings().database_url) as session:
        endpoints.delete_endpoint(session=session, endpoint=_endpoint(session, tenant, endpoint_id))
    typer.echo(f"deleted {endpoint_id}")


@app.command()
def ping(
    endpoint_id: str,
    tenant: TenantOpt = "default",
    wait: Annotated[float, typer.Option(help="Seconds to wait for the outcome")] = 20.0,
) -> None:
    """Send a signed webhook.ping through the IO workers and report the outcome."""
    from producers.publish import publish_deliveries
    from schemas.messages import DeliveryRef
    from schemas.settings import core_settings
    from schemas.store import outbox
    from schemas.store.sessions import read_scope, session_scope
    from schemas.tables import Delivery, DeliveryStatus

    settings = core_settings()
    with session_scope(settings.database_url) as session:
        endpoint = _endpoint(session, tenant, endpoint_id)
        delivery_id, url = outbox.create_ping(session=session, endpoint=endpoint).id, endpoint.url
    publish_deliveries(redis_url=settings.redis_url, deliveries=[DeliveryRef(delivery_id, url)])
    deadline = time.monotonic() + wait
    while True:
        with read_scope(settings.database_url) as session:
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
        fail(
            f"{delivery_id} was not attempted within {wait:g} s",
            code=ErrorCode.wait_timeout,
            hint="are IO workers running? (captionq worker --queues io)",
        )
    typer.echo(
        f"{delivery_id}: {state}, HTTP {code}"
        + ("" if state == DeliveryStatus.delivered else f", {error}")
    )
    raise typer.Exit(0 if state == DeliveryStatus.delivered else 1)


@app.command()
def deliveries(
    tenant: TenantOpt = "default",
    dead: Annotated[bool, typer.Option("--dead", help="Only the dead ones")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    json_out: JsonOpt = False,
) -> None:
    """Recent deliveries, newest first."""
    from schemas.settings import core_settings
    from schemas.store import deliveries
    from schemas.store.sessions import read_scope
    from schemas.tables import DeliveryStatus

    with read_scope(core_settings().database_url) as session:
        owner = require_tenant(tenant, session=session)
        found = deliveries.list_deliveries(
            session=session,
            tenant_id=owner.id,
            status=DeliveryStatus.dead if dead else None,
            limit=limit,
        )
        rows = [_delivery_row(d) for d in found]
    columns = ["id", "job_id", "event_type", "status", "attempts", "last"]
    emit(rows, columns=columns, json_out=json_out, empty="no deliveries")


def _delivery_row(d) -> dict[str, object]:  # type: ignore[no-untyped-def]
    return {
        "id": d.id,
        "job_id": d.job_id,
        "event_type": d.event_type,
        "status": d.status,
        "attempts": d.attempts,
        "last": d.last_status_code or d.last_error,
        "next_attempt_at": d.next_attempt_at,
        "delivered_at": d.delivered_at,
    }


@app.command()
def delivery(delivery_id: str, tenant: TenantOpt = "default", json_out: JsonOpt = False) -> None:
    """One delivery and every attempt made to send it."""
    from schemas.settings import core_settings
    from schemas.store import deliveries
    from schemas.store.sessions import read_scope

    with read_scope(core_settings().database_url) as session:
        owner = require_tenant(tenant, session=session)
        found = deliveries.get_delivery(
            session=session, tenant_id=owner.id, delivery_id=delivery_id
        )
        row = _delivery_row(found)
        attempts = [
            {
                "attempt": a.attempt,
                "at": a.at,
                "status_code": a.status_code,
                "duration_ms": round(a.duration_ms, 1),
                "error": a.error,
            }
            for a in deliveries.list_attempts(session=session, delivery_id=found.id)
        ]
    if json_out:
        typer.echo(as_json({**row, "attempts": attempts, "attempt_count": row["attempts"]}))
        return
    typer.echo(f"{row['id']} {row['event_type']} {row['status']}, {row['attempts']} attempts")
    emit(
        attempts,
        columns=["attempt", "at", "status_code", "duration_ms", "error"],
        json_out=False,
        empty="no attempt yet",
    )


@app.command()
def replay(
    delivery_id: Annotated[
        str | None, typer.Argument(help="One delivery; omit with --all-dead")
    ] = None,
    tenant: TenantOpt = "default",
    all_dead: Annotated[bool, typer.Option("--all-dead", help="Every dead delivery")] = False,
) -> None:
    """Send events again: same webhook-id and body, a fresh retry schedule; the attempt
    count goes on from where it was."""
    from schemas.settings import core_settings
    from schemas.store import deliveries
    from schemas.store.sessions import session_scope

    if all_dead == (delivery_id is not None):
        fail("give a delivery id or --all-dead", code=ErrorCode.invalid_request)
    with session_scope(core_settings().database_url) as session:
        owner = require_tenant(tenant, session=session)
        if all_dead:
            typer.echo(f"replayed {deliveries.replay_dead(session=session, tenant_id=owner.id)}")
            return
        deliveries.replay_delivery(
            session=session, tenant_id=owner.id, delivery_id=delivery_id or ""
        )
    typer.echo(f"replaying {delivery_id}")
