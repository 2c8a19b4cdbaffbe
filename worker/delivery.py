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

A deliver task carries a batch of rows, one URL's as a rule (``schemas.broker``):
one transaction takes them all, one kept-alive connection per endpoint sends them,
one transaction records every attempt (:func:`send_batch`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import insert, or_, update
from sqlmodel import Session, col, select

from schemas.db import per_row, session_scope
from schemas.settings import WorkerSettings
from schemas.tables import Delivery, DeliveryAttempt, DeliveryStatus, WebhookEndpoint, utcnow
from schemas.webhooks import PING, ensure_endpoint, set_enabled, signing_secrets
from worker import callbacks
from worker.callbacks import AttemptResult

log = logging.getLogger("captionq.delivery")
# A taken delivery's lease is the POST deadline and this margin. A POST starts only if
# its deadline leaves a fifth of the margin, to record it, before the lease ends.
LEASE_MARGIN_S = 5.0


def _not_being_sent(now):  # type: ignore[no-untyped-def]
    return or_(col(Delivery.sending_until).is_(None), col(Delivery.sending_until) < now)


def dispatch_due(*, session: Session, lock_s: float, limit: int) -> list[tuple[str, str]]:
    """Reserve the deliveries that are due (for ``lock_s``); returns (id, url) of each."""
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
    if not due:
        return []
    table = Delivery.__table__  # type: ignore[attr-defined]
    reserved = session.connection().execute(
        update(table)
        .where(
            table.c.id.in_(due),
            table.c.status == DeliveryStatus.pending,
            table.c.next_attempt_at <= now,
        )
        .values(next_attempt_at=now + timedelta(seconds=lock_s))
        .returning(table.c.id, table.c.url)
    )
    return [(row[0], row[1]) for row in reserved]


class Taken(NamedTuple):
    """A delivery this worker now sends: what sending needs, read as it was taken."""

    id: str
    tenant_id: str
    url: str
    event_type: str
    payload: str


def take(
    *, session: Session, delivery_ids: Sequence[str], window_s: float, lock_s: float
) -> list[Taken]:
    """Become the one sender of these deliveries for ``window_s``; returns those taken.
    Skipped: delivered, dead, being sent, or rescheduled beyond any dispatch reservation
    (a stale message)."""
    if not delivery_ids:
        return []
    now = utcnow()
    table = Delivery.__table__  # type: ignore[attr-defined]
    taken = session.connection().execute(
        update(table)
        .where(
            table.c.id.in_(list(delivery_ids)),
            table.c.status == DeliveryStatus.pending,
            table.c.next_attempt_at <= now + timedelta(seconds=lock_s),
            _not_being_sent(now),
        )
        .values(sending_until=now + timedelta(seconds=window_s))
        .returning(table.c.id, table.c.tenant_id, table.c.url, table.c.event_type, table.c.payload)
    )
    return [Taken(*row) for row in taken]


@dataclass
class Sent:
    """What a batch did: each taken delivery's attempt (with its endpoint), or its
    return untried."""

    attempts: dict[str, tuple[str, AttemptResult]] = field(default_factory=dict)
    untried: list[str] = field(default_factory=list)


def send_batch(delivery_ids: Sequence[str], *, settings: WorkerSettings) -> Sent:
    """Take, send and record a batch of deliveries: one transaction to take them, one
    connection per endpoint, one transaction to record every attempt.

    A POST starts only if its deadline falls inside the lease (``callback_timeout_s``
    and a margin) with time left to record it; what cannot is handed back untried, for
    the next dispatch. After a POST that times out,
    that endpoint's other callbacks in the batch are not sent: each is recorded as a
    failed attempt (so a hanging receiver costs one deadline per batch, not one per
    callback) and retried on the schedule.
    """
    window_s = settings.callback_timeout_s + LEASE_MARGIN_S
    last_end = time.monotonic() + window_s - LEASE_MARGIN_S / 5  # before the lease's start
    with session_scope(settings.database_url) as session:
        rows = take(
            session=session,
            delivery_ids=delivery_ids,
            window_s=window_s,
            lock_s=settings.delivery_lock_s,
        )
        groups: dict[tuple[str, str], list[Taken]] = {}
        for row in rows:
            groups.setdefault((row.tenant_id, row.url), []).append(row)
        endpoints = {
            key: endpoint_for(session=session, tenant_id=key[0], url=key[1], settings=settings)
            for key in groups
        }
    sent = Sent()
    for key, group in groups.items():
        _send_group(group, endpoints[key], settings=settings, last_end=last_end, sent=sent)
    if rows:
        with session_scope(settings.database_url) as session:
            record(session=session, sent=sent, schedule_s=settings.callback_schedule_s)
    return sent


def _send_group(
    group: Sequence[Taken],
    endpoint: WebhookEndpoint,
    *,
    settings: WorkerSettings,
    last_end: float,
    sent: Sent,
) -> None:
    if endpoint.disabled_at is not None:
        disabled = f"endpoint disabled: {endpoint.disabled_reason}"
        for row in group:
            sent.attempts[row.id] = (endpoint.id, AttemptResult(None, disabled, 0.0, refused=True))
        return
    with callbacks.Sender(
        endpoint.url,
        secrets=signing_secrets(endpoint, key=settings.webhook_secrets_key),
        timeout_s=settings.callback_timeout_s,
        allowed_ports=settings.callback_allowed_ports,
        allow_networks=settings.url_allow_cidrs,
    ) as sender:
        stopped: AttemptResult | None = None
        for row in group:
            if stopped is not None:
                result = stopped
            elif time.monotonic() + settings.callback_timeout_s > last_end:
                sent.untried.append(row.id)
                continue
            elif not _subscribed(endpoint, row.event_type):
                unsubscribed = f"endpoint does not subscribe to {row.event_type}"
                result = AttemptResult(None, unsubscribed, 0.0, refused=True)
            else:
                result = sender.post(msg_id=row.id, body=row.payload)
                if result.timed_out:
                    stopped = AttemptResult(None, f"not sent: {row.id} timed out before it", 0.0)
                elif result.status_code == 410:
                    stopped = AttemptResult(None, "endpoint answered 410 Gone", 0.0, refused=True)
            sent.attempts[row.id] = (endpoint.id, result)


def _subscribed(endpoint: WebhookEndpoint, event_type: str) -> bool:
    return event_type == PING or not endpoint.event_types or event_type in endpoint.event_types


def endpoint_for(
    *, session: Session, tenant_id: str, url: str, settings: WorkerSettings
) -> WebhookEndpoint:
    return ensure_endpoint(
        session=session, tenant_id=tenant_id, url=url, key=settings.webhook_secrets_key
    )


def record(*, session: Session, sent: Sent, schedule_s: Sequence[float]) -> None:
    """Log each attempt and move its row (delivered, rescheduled or dead), and hand
    back the untried rows: three statements for the whole batch. Rows deleted
    meanwhile (with their job) are skipped."""
    table = Delivery.__table__  # type: ignore[attr-defined]
    connection = session.connection()
    ids = [*sent.attempts, *sent.untried]
    attempts = dict(
        connection.execute(select(table.c.id, table.c.attempts).where(table.c.id.in_(ids))).all()
    )
    now = utcnow()
    moves: dict[str, dict[str, object]] = {}
    log_rows: list[dict[str, object]] = []
    for delivery_id, (endpoint_id, result) in sent.attempts.items():
        if delivery_id not in attempts:
            continue
        attempt = attempts[delivery_id] + 1
        if result.status_code == 410:
            _disable(session, endpoint_id)
        moves[delivery_id] = _after_attempt(
            attempt=attempt, result=result, schedule_s=schedule_s, now=now
        )
        if moves[delivery_id]["status"] == DeliveryStatus.dead and not result.refused:
            log.warning("delivery %s is dead after %d attempts", delivery_id, attempt)
        log_rows.append(
            {
                "delivery_id": delivery_id,
                "attempt": attempt,
                "status_code": result.status_code,
                "duration_ms": result.duration_ms,
                "error": result.error,
                "at": now,
            }
        )
    for delivery_id in sent.untried:
        if delivery_id in attempts:  # back to pending, as it was taken
            moves[delivery_id] = {"status": DeliveryStatus.pending.value}
    if not moves:
        return

    def each(column: str) -> Any:
        new = {i: move[column] for i, move in moves.items() if column in move}
        return per_row(table.c.id, table.c[column], new) if new else table.c[column]

    connection.execute(
        update(table)
        .where(table.c.id.in_(list(moves)))
        .values(
            sending_until=None,
            **{
                column: each(column)
                for column in (
                    "status",
                    "attempts",
                    "last_status_code",
                    "last_error",
                    "delivered_at",
                    "next_attempt_at",
                )
            },
        )
    )
    if log_rows:
        connection.execute(insert(DeliveryAttempt.__table__), log_rows)  # type: ignore[attr-defined]


def _disable(session: Session, endpoint_id: str) -> None:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is not None and endpoint.disabled_at is None:
        log.warning("endpoint %s answered 410 Gone: disabled", endpoint.id)
        set_enabled(session=session, endpoint=endpoint, enabled=False, reason="410 Gone")


def _after_attempt(
    *, attempt: int, result: AttemptResult, schedule_s: Sequence[float], now: datetime
) -> dict[str, object]:
    """A delivery's new columns after its ``attempt``-th attempt (1 is the first):
    delivered; dead (410, refused, or the schedule's last attempt); or pending again,
    at the schedule's next delay (longer if a 429 asked, up to the schedule's
    longest). A column left out keeps its value."""
    move: dict[str, object] = {
        "attempts": attempt,
        "last_status_code": result.status_code,
        "last_error": result.error,
    }
    if result.ok:
        move.update(status=DeliveryStatus.delivered.value, delivered_at=now)
    elif result.status_code == 410 or result.refused or attempt >= len(schedule_s):
        move.update(status=DeliveryStatus.dead.value)
    else:
        delay = schedule_s[attempt]
        if result.status_code == 429 and result.retry_after_s is not None:
            delay = max(delay, min(result.retry_after_s, max(schedule_s)))
        move.update(
            status=DeliveryStatus.pending.value, next_attempt_at=now + timedelta(seconds=delay)
        )
    return move
