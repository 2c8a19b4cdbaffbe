"""Deliveries as a tenant (or an operator) sees them: listed, read with their attempts,
and replayed, one or every dead one, same ``webhook-id`` and body, with a fresh retry
schedule. What a delivery is and how it is sent: :mod:`schemas.store.outbox`."""

from __future__ import annotations

from sqlalchemy import exists, update
from sqlmodel import Session, col, select

from schemas.store.endpoints import find_endpoint, set_enabled
from schemas.store.tenants import owned_row
from schemas.tables import Delivery, DeliveryAttempt, DeliveryStatus, WebhookEndpoint, utcnow


def list_deliveries(
    *, session: Session, tenant_id: str | None, status: DeliveryStatus | None, limit: int = 100
) -> list[Delivery]:
    """Newest first; ``tenant_id`` None lists every tenant's (operators, the CLI)."""
    query = select(Delivery)
    if tenant_id is not None:
        query = query.where(Delivery.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Delivery.status == status)
    query = query.order_by(col(Delivery.created_at).desc()).limit(limit)
    return list(session.exec(query).all())


def replay_delivery(*, session: Session, tenant_id: str | None, delivery_id: str) -> Delivery:
    """Send a dead (or delivered) event again, same ``webhook-id`` and body, with a fresh
    retry schedule; beat dispatches it on its next tick. The endpoint is re-enabled if
    it was disabled (a replay is the tenant saying "it is back")."""
    delivery = get_delivery(session=session, tenant_id=tenant_id, delivery_id=delivery_id)
    if delivery.status == DeliveryStatus.pending:
        return delivery
    delivery.status = DeliveryStatus.pending
    delivery.schedule_from = delivery.attempts  # the count goes on; the schedule restarts
    delivery.next_attempt_at = utcnow()
    delivery.sending_until = None
    session.add(delivery)
    endpoint = find_endpoint(session=session, tenant_id=delivery.tenant_id, url=delivery.url)
    if endpoint is not None and endpoint.disabled_at is not None:
        set_enabled(session=session, endpoint=endpoint, enabled=True)
    session.flush()
    return delivery


def replay_dead(*, session: Session, tenant_id: str | None, url: str | None = None) -> int:
    """Replay every dead delivery (of one endpoint URL if given) as :func:`replay_delivery`
    does, in two statements whatever their number; returns how many."""
    dead = [col(Delivery.status) == DeliveryStatus.dead]
    dead += [col(Delivery.tenant_id) == tenant_id] if tenant_id is not None else []
    dead += [col(Delivery.url) == url] if url is not None else []
    now = utcnow()
    session.execute(
        update(WebhookEndpoint)
        .where(
            col(WebhookEndpoint.disabled_at).is_not(None),
            exists().where(
                col(Delivery.tenant_id) == col(WebhookEndpoint.tenant_id),
                col(Delivery.url) == col(WebhookEndpoint.url),
                *dead,
            ),
        )
        .values(disabled_at=None, disabled_reason=None, updated_at=now)
        .execution_options(synchronize_session="fetch")
    )
    replayed = session.execute(
        update(Delivery)
        .where(*dead)
        .values(status=DeliveryStatus.pending, schedule_from=col(Delivery.attempts))
        .values(next_attempt_at=now, sending_until=None)
        .execution_options(synchronize_session="fetch")
    )
    return int(replayed.rowcount)  # type: ignore[attr-defined]


def get_delivery(*, session: Session, tenant_id: str | None, delivery_id: str) -> Delivery:
    """The tenant's delivery (any tenant's for ``tenant_id`` None); ``not_found`` if none."""
    return owned_row(
        session=session, table=Delivery, row_id=delivery_id, tenant_id=tenant_id, what="delivery"
    )


def list_attempts(*, session: Session, delivery_id: str) -> list[DeliveryAttempt]:
    """Every attempt made to send a delivery, in order."""
    query = (
        select(DeliveryAttempt)
        .where(DeliveryAttempt.delivery_id == delivery_id)
        .order_by(col(DeliveryAttempt.attempt), col(DeliveryAttempt.id))
    )
    return list(session.exec(query).all())
