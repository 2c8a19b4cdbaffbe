"""The callback outbox: which deliveries are due, who sends them, what an attempt means.

A delivery row (``Delivery``) is written in the same transaction as the result it
announces. From there the database alone decides::

    pending ──(beat: due, not being sent)──► dispatched (reserved delivery_lock_s)
       ▲                                            │ deliver task takes it
       │ failed: next_attempt_at = now + schedule[n] ▼ (sending_until = deadline)
       └──────────────────────────────────────── POST ──► delivered (2xx)
                                                     └──► dead (last attempt, 410)

The schedule lives in ``next_attempt_at``; beat sends what is due, so no Celery
countdown ever outlives the broker's visibility timeout, and a message lost with
Redis is sent again once its reservation passes. ``webhook-id`` is the row id and
the body is stored bytes: identical on every attempt, including after a crash
between the receiver's 2xx and the row being marked delivered.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from schemas.settings import WorkerSettings
from schemas.tables import Delivery, DeliveryAttempt, DeliveryStatus, WebhookEndpoint, utcnow
from schemas.webhooks import PING, ensure_endpoint, set_enabled, signing_secrets
from worker import callbacks
from worker.callbacks import AttemptResult

log = logging.getLogger("captionq.delivery")


def _not_being_sent(now):  # type: ignore[no-untyped-def]
    return or_(col(Delivery.sending_until).is_(None), col(Delivery.sending_until) < now)


def dispatch_due(*, session: Session, lock_s: float, limit: int) -> list[str]:
    """Reserve the deliveries that are due (for ``lock_s``) and return their ids."""
    now = utcnow()
    due = session.exec(
        select(Delivery.id)
        .where(
            Delivery.status == DeliveryStatus.pending,
            col(Delivery.next_attempt_at) <= now,
            _not_being_sent(now),
        )
        .order_by(col(Delivery.next_attempt_at))
        .limit(limit)
    ).all()
    reserved = []
    for delivery_id in due:
        moved = session.execute(
            update(Delivery)
            .where(
                col(Delivery.id) == delivery_id,
                col(Delivery.status) == DeliveryStatus.pending,
                col(Delivery.next_attempt_at) <= now,
            )
            .values(next_attempt_at=now + timedelta(seconds=lock_s))
        )
        if moved.rowcount:  # type: ignore[attr-defined]
            reserved.append(delivery_id)
    return reserved


def take(*, session: Session, delivery_id: str, window_s: float, lock_s: float) -> Delivery | None:
    """Become the one sender of a pending delivery for ``window_s``, or None (delivered,
    dead, being sent, or rescheduled beyond any dispatch reservation: a stale message)."""
    now = utcnow()
    moved = session.execute(
        update(Delivery)
        .where(
            col(Delivery.id) == delivery_id,
            col(Delivery.status) == DeliveryStatus.pending,
            col(Delivery.next_attempt_at) <= now + timedelta(seconds=lock_s),
            _not_being_sent(now),
        )
        .values(sending_until=now + timedelta(seconds=window_s))
    )
    if not moved.rowcount:  # type: ignore[attr-defined]
        return None
    return session.get(Delivery, delivery_id)


def send(delivery: Delivery, endpoint: WebhookEndpoint, settings: WorkerSettings) -> AttemptResult:
    if endpoint.disabled_at is not None:
        return AttemptResult(None, f"endpoint disabled: {endpoint.disabled_reason}", 0.0)
    subscribed = not endpoint.event_types or delivery.event_type in endpoint.event_types
    if not subscribed and delivery.event_type != PING:
        return AttemptResult(None, f"endpoint does not subscribe to {delivery.event_type}", 0.0)
    return callbacks.post(
        url=delivery.url,
        msg_id=delivery.id,
        body=delivery.payload,
        secrets=signing_secrets(endpoint, key=settings.webhook_secrets_key),
        timeout_s=settings.callback_timeout_s,
        allowed_ports=settings.callback_allowed_ports,
        allow_networks=settings.url_allow_cidrs,
    )


def endpoint_for(
    *, session: Session, delivery: Delivery, settings: WorkerSettings
) -> WebhookEndpoint:
    return ensure_endpoint(
        session=session,
        tenant_id=delivery.tenant_id,
        url=delivery.url,
        key=settings.webhook_secrets_key,
    )


def record(
    *,
    session: Session,
    delivery: Delivery,
    endpoint: WebhookEndpoint | None,
    result: AttemptResult,
    schedule_s: Sequence[float],
) -> None:
    """Log the attempt and move the row: delivered, rescheduled, or dead."""
    delivery.attempts += 1
    session.add(
        DeliveryAttempt(
            delivery_id=delivery.id,
            attempt=delivery.attempts,
            status_code=result.status_code,
            duration_ms=result.duration_ms,
            error=result.error,
        )
    )
    delivery.last_status_code = result.status_code
    delivery.last_error = result.error
    delivery.sending_until = None
    now = utcnow()
    if result.ok:
        delivery.status = DeliveryStatus.delivered
        delivery.delivered_at = now
    elif result.status_code == 410 or (endpoint is not None and endpoint.disabled_at is not None):
        delivery.status = DeliveryStatus.dead
        if endpoint is not None and endpoint.disabled_at is None:
            log.warning("endpoint %s answered 410 Gone: disabled", endpoint.id)
            set_enabled(session=session, endpoint=endpoint, enabled=False, reason="410 Gone")
    elif result.status_code is None and result.duration_ms == 0.0:  # refused before sending
        delivery.status = DeliveryStatus.dead
    elif delivery.attempts >= len(schedule_s):
        delivery.status = DeliveryStatus.dead
        log.warning("delivery %s is dead after %d attempts", delivery.id, delivery.attempts)
    else:
        delay = schedule_s[delivery.attempts]
        if result.status_code == 429 and result.retry_after_s is not None:
            delay = max(delay, min(result.retry_after_s, max(schedule_s)))
        delivery.next_attempt_at = now + timedelta(seconds=delay)
    session.add(delivery)
