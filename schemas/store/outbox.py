"""The callback outbox: its rows, which are due, who sends them, what an attempt means.

A delivery row (``Delivery``) is written in the same transaction as the result it
announces (:func:`event_row`). From there the database alone decides::

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

A deliver message carries a batch of rows, one URL's as a rule (``schemas.broker``),
and an IO worker sends the rows of the messages it gathered for that URL together
(``worker.gather``): one transaction takes them all (:func:`take`), one kept-alive
connection per endpoint sends them (``worker.sender``), one transaction records every
attempt (:func:`record`). Rows are listed, read and replayed in :mod:`schemas.store.deliveries`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from pydantic import TypeAdapter
from sqlalchemy import bindparam, or_, update
from sqlmodel import Session, col, select

from schemas.messages import DeliveryRef
from schemas.store.endpoints import set_enabled
from schemas.store.sessions import insert_rows, update_rows
from schemas.tables import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    WebhookEndpoint,
    new_id,
    utcnow,
)

log = logging.getLogger("captionq.outbox")
_JSON_TIME = TypeAdapter(datetime)
PING = "webhook.ping"  # sent on request to any endpoint, whatever it subscribes to


def event_row(
    *, tenant_id: str, job_id: str | None, event_type: str, url: str, payload: str, now: datetime
) -> dict[str, Any]:
    """A ``Delivery`` row as column values, every default given (a multi-row insert does
    not apply the model's defaults)."""
    return {
        "id": new_id("msg"),
        "tenant_id": tenant_id,
        "job_id": job_id,
        "event_type": event_type,
        "url": url,
        "payload": payload,
        "status": DeliveryStatus.pending.value,
        "attempts": 0,
        "schedule_from": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


Subscriptions = dict[tuple[str, str], list[str]]
"""The event types each endpoint subscribes to (empty: all), by (tenant id, URL)."""


def subscriptions(session: Session, endpoints: Iterable[tuple[str, str]]) -> Subscriptions:
    """The subscriptions of these (tenant id, URL) endpoints, those that exist; one
    query, of the two columns it needs."""
    pairs = set(endpoints)
    if not pairs:
        return {}
    found = session.connection().execute(
        _SUBSCRIPTIONS,
        {"tenants": list({tenant_id for tenant_id, _ in pairs}),
         "urls": list({url for _, url in pairs})},
    )  # fmt: skip
    return {(row.tenant_id, row.url): row.event_types for row in found}


# Built once: building a statement costs about as much CPU as running it.
_ENDPOINT = WebhookEndpoint.__table__  # type: ignore[attr-defined]
_SUBSCRIPTIONS = select(_ENDPOINT.c.tenant_id, _ENDPOINT.c.url, _ENDPOINT.c.event_types).where(
    _ENDPOINT.c.tenant_id.in_(bindparam("tenants", expanding=True)),
    _ENDPOINT.c.url.in_(bindparam("urls", expanding=True)),
)


def keep_wanted(
    rows: Sequence[dict[str, Any]], subscribed_to: Subscriptions
) -> list[dict[str, Any]]:
    """The event rows that their endpoint subscribes to: an event the endpoint does not
    want is not a delivery at all (never sent, never dead, never replayed). A row with
    no endpoint is kept: the sender records it as refused. (A tenant who narrows an
    endpoint's subscriptions after a row was written sees that row dead, with the
    reason, rather than lost.)"""
    return [
        row
        for row in rows
        if (event_types := subscribed_to.get((row["tenant_id"], row["url"]))) is None
        or _wants(event_types, row["event_type"])
    ]


def wanted(session: Session, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`keep_wanted`, the subscriptions read in ``session``."""
    if not rows:
        return []
    return keep_wanted(rows, subscriptions(session, ((r["tenant_id"], r["url"]) for r in rows)))


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    error: str | None
    duration_ms: float
    retry_after_s: float | None = None
    refused: bool = False  # never sent, and never will be: the delivery is dead
    timed_out: bool = False  # no answer within the deadline

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _not_being_sent(now):  # type: ignore[no-untyped-def]
    return or_(col(Delivery.sending_until).is_(None), col(Delivery.sending_until) < now)


def dispatch_due(*, session: Session, lock_s: float, limit: int) -> list[DeliveryRef]:
    """Reserve the deliveries that are due (for ``lock_s``) and return them."""
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
    return [DeliveryRef(row.id, row.url) for row in reserved]


class Taken(NamedTuple):
    """A delivery this worker now sends: what sending needs, read as it was taken."""

    id: str
    tenant_id: str
    url: str
    event_type: str
    payload: str
    created_at: datetime  # when the row was written (aware UTC): the delivery lag's start


def take(
    *, session: Session, delivery_ids: Sequence[str], window_s: float, lock_s: float
) -> list[Taken]:
    """Become the one sender of these deliveries for ``window_s``; returns those taken.
    Skipped: delivered, dead, being sent, or rescheduled beyond any dispatch reservation
    (a stale message)."""
    if not delivery_ids:
        return []
    now = utcnow()
    params = {"ids": list(delivery_ids), "now": now, "due_by": now + timedelta(seconds=lock_s),
              "until": now + timedelta(seconds=window_s)}  # fmt: skip
    taken = session.connection().execute(_taking(), params)
    return [Taken(row.id, row.tenant_id, row.url, row.event_type, row.payload,
                  _aware(row.created_at)) for row in taken]  # fmt: skip


@lru_cache(maxsize=1)
def _taking() -> Any:
    """:func:`take`'s UPDATE, built once per process (the IO worker runs it inside
    SQLite's write lock, and building it costs about as much CPU as running it)."""
    table = Delivery.__table__  # type: ignore[attr-defined]
    now = bindparam("now", type_=table.c.sending_until.type)
    return (
        update(table)
        .where(
            table.c.id.in_(bindparam("ids", expanding=True)),
            table.c.status == DeliveryStatus.pending,
            table.c.next_attempt_at <= bindparam("due_by", type_=table.c.next_attempt_at.type),
            _not_being_sent(now),
        )
        .values(sending_until=bindparam("until", type_=table.c.sending_until.type))
        .returning(
            table.c.id,
            table.c.tenant_id,
            table.c.url,
            table.c.event_type,
            table.c.payload,
            table.c.created_at,
        )
    )


def _aware(at: datetime) -> datetime:
    """A stored time as UTC (SQLite gives it back without its zone)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


@dataclass
class Sent:
    """What a batch did: each taken delivery's attempt (with its endpoint), or its
    return untried."""

    attempts: dict[str, tuple[str | None, AttemptResult]] = field(default_factory=dict)
    untried: list[str] = field(default_factory=list)


def subscribed(endpoint: WebhookEndpoint, event_type: str) -> bool:
    return _wants(endpoint.event_types, event_type)


def _wants(event_types: Sequence[str], event_type: str) -> bool:
    return event_type == PING or not event_types or event_type in event_types


def record(*, session: Session, sent: Sent, schedule_s: Sequence[float]) -> None:
    """Log each attempt and move its row (delivered, rescheduled or dead), and hand
    back the untried rows: three statements for the whole batch (one more for each
    further kind of move). Rows deleted meanwhile (with their job) are skipped."""
    table = Delivery.__table__  # type: ignore[attr-defined]
    connection = session.connection()
    ids = [*sent.attempts, *sent.untried]
    known = connection.execute(_KNOWN, {"ids": ids}).all()
    attempts = {row[0]: row[1] for row in known}
    schedule_from = {row[0]: row[2] for row in known}
    now = utcnow()
    moves: dict[str, dict[str, object]] = {}
    log_rows: list[dict[str, object]] = []
    for delivery_id, (endpoint_id, result) in sent.attempts.items():
        if delivery_id not in attempts:
            continue
        attempt = attempts[delivery_id] + 1
        if result.status_code == 410 and endpoint_id is not None:
            _disable(session, endpoint_id)
        moves[delivery_id] = _after_attempt(
            attempt=attempt,
            in_schedule=attempt - schedule_from[delivery_id],
            result=result,
            schedule_s=schedule_s,
            now=now,
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

    update_rows(connection, table, moves, every={"sending_until": None})
    if log_rows:
        insert_rows(connection, DeliveryAttempt.__table__, log_rows)  # type: ignore[attr-defined]


# Built once: building a statement costs about as much CPU as running it.
_DELIVERY = Delivery.__table__  # type: ignore[attr-defined]
_KNOWN = select(_DELIVERY.c.id, _DELIVERY.c.attempts, _DELIVERY.c.schedule_from).where(
    _DELIVERY.c.id.in_(bindparam("ids", expanding=True))
)


def _disable(session: Session, endpoint_id: str) -> None:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is not None and endpoint.disabled_at is None:
        log.warning("endpoint %s answered 410 Gone: disabled", endpoint.id)
        set_enabled(session=session, endpoint=endpoint, enabled=False, reason="410 Gone")


def _after_attempt(
    *,
    attempt: int,
    in_schedule: int,
    result: AttemptResult,
    schedule_s: Sequence[float],
    now: datetime,
) -> dict[str, object]:
    """A delivery's new columns after its ``attempt``-th attempt (1 is the first), the
    ``in_schedule``-th of its current schedule (a replay starts a new one):
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
    elif result.status_code == 410 or result.refused or in_schedule >= len(schedule_s):
        move.update(status=DeliveryStatus.dead.value)
    else:
        delay = schedule_s[in_schedule]
        if result.status_code == 429 and result.retry_after_s is not None:
            delay = max(delay, min(result.retry_after_s, max(schedule_s)))
        move.update(
            status=DeliveryStatus.pending.value, next_attempt_at=now + timedelta(seconds=delay)
        )
    return move


def create_ping(*, session: Session, endpoint: WebhookEndpoint) -> Delivery:
    """A signed test event for ``endpoint``, sent through the outbox like any other
    (same signing, retries and attempt log); its delivery row tells how it went."""
    now = utcnow()
    body = {
        "type": PING,
        "timestamp": _JSON_TIME.dump_python(now, mode="json"),  # as job events write it
        "data": {"endpoint_id": endpoint.id, "url": endpoint.url},
    }
    delivery = Delivery(
        tenant_id=endpoint.tenant_id,
        job_id=None,
        event_type=PING,
        url=endpoint.url,
        payload=json.dumps(body, separators=(",", ":")),
    )
    session.add(delivery)
    session.flush()
    return delivery
