"""Replaying dead deliveries in bulk, on SQLite and PostgreSQL: the same rows as replaying
them one by one, in a number of statements that does not grow with them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import event
from sqlmodel import Session, col, select

from schemas.store.deliveries import replay_dead, replay_delivery
from schemas.store.endpoints import create_endpoint, set_enabled
from schemas.store.outbox import event_row
from schemas.store.sessions import engine_for, session_scope
from schemas.store.tenants import create_tenant
from schemas.tables import Delivery, DeliveryStatus, Tenant, WebhookEndpoint, utcnow

HOOKS = ("https://hooks.example.com/a", "https://hooks.example.com/b")


def _world(session: Session, dead: int) -> Tenant:
    """A tenant with two endpoints (the first disabled), ``dead`` dead deliveries spread
    over both, with attempts and schedules of their own, and one delivered and one
    pending delivery that a replay of the dead must leave alone."""
    tenant = create_tenant(session=session, name=f"t-{uuid.uuid4().hex[:8]}")
    for n, url in enumerate(HOOKS):
        endpoint, _ = create_endpoint(session=session, tenant_id=tenant.id, url=url, key=None)
        if n == 0:
            set_enabled(session=session, endpoint=endpoint, enabled=False, reason="410 Gone")
    past = utcnow() - timedelta(hours=1)
    rows = []
    for i in range(dead + 2):
        row = event_row(
            tenant_id=tenant.id,
            job_id=None,
            event_type="job.succeeded",
            url=HOOKS[i % 2],
            payload=f'{{"n":{i}}}',
            now=past,
        )
        after = [DeliveryStatus.delivered, DeliveryStatus.pending]
        status = DeliveryStatus.dead if i < dead else after[i - dead]
        row.update(status=status, attempts=3 + i % 5, schedule_from=i % 2, last_error="boom")
        rows.append(row)
    session.execute(Delivery.__table__.insert(), rows)  # type: ignore[attr-defined]
    return tenant


def _state(session: Session, tenant: Tenant, now_is: Any) -> dict[str, Any]:
    """What a replay leaves, with the replay's clock reading as ``now_is``."""
    deliveries = session.exec(
        select(Delivery).where(Delivery.tenant_id == tenant.id).order_by(col(Delivery.payload))
    ).all()
    endpoints = session.exec(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.tenant_id == tenant.id)
        .order_by(col(WebhookEndpoint.url))
    ).all()
    return {
        "deliveries": [
            (
                d.payload,
                d.status,
                d.attempts,
                d.schedule_from,
                d.last_error,
                d.sending_until,
                now_is if d.next_attempt_at >= now_is else "as it was",
            )
            for d in deliveries
        ],
        "endpoints": [(e.url, e.disabled_at is None, e.disabled_reason) for e in endpoints],
    }


@contextmanager
def counted(url: str) -> Iterator[list[str]]:
    statements: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    engine = engine_for(url)
    event.listen(engine, "before_cursor_execute", count)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", count)


def test_replaying_all_dead_leaves_what_replaying_each_leaves(database_url: str) -> None:
    with session_scope(database_url) as session:
        one_by_one, in_bulk = _world(session, 12), _world(session, 12)
    started = utcnow()
    with session_scope(database_url) as session:
        dead = session.exec(
            select(Delivery.id).where(
                Delivery.tenant_id == one_by_one.id, Delivery.status == DeliveryStatus.dead
            )
        ).all()
        for delivery_id in dead:
            replay_delivery(session=session, tenant_id=one_by_one.id, delivery_id=delivery_id)
    with session_scope(database_url) as session:
        assert replay_dead(session=session, tenant_id=in_bulk.id) == 12
    with session_scope(database_url) as session:
        expected = _state(session, one_by_one, started)
        assert _state(session, in_bulk, started) == expected
    assert [d[1] for d in expected["deliveries"]].count(DeliveryStatus.pending) == 13
    assert expected["endpoints"] == [(HOOKS[0], True, None), (HOOKS[1], True, None)]


def test_replaying_one_endpoints_dead_leaves_the_others(database_url: str) -> None:
    with session_scope(database_url) as session:
        tenant, other = _world(session, 6), _world(session, 6)
    with session_scope(database_url) as session:
        assert replay_dead(session=session, tenant_id=tenant.id, url=HOOKS[1]) == 3
        assert replay_dead(session=session, tenant_id=tenant.id, url=HOOKS[1]) == 0
    with session_scope(database_url) as session:
        state = _state(session, tenant, utcnow())
        untouched = _state(session, other, utcnow())
    dead_left = [d[0] for d in state["deliveries"] if d[1] == DeliveryStatus.dead]
    assert len(dead_left) == 3  # the first endpoint's
    assert state["endpoints"][0][1] is False, "an endpoint with nothing replayed was re-enabled"
    assert [d[1] for d in untouched["deliveries"]].count(DeliveryStatus.dead) == 6


def test_replaying_dead_takes_as_many_statements_for_fifty_as_for_one(database_url: str) -> None:
    counts = []
    for dead in (1, 50):
        with session_scope(database_url) as session:
            tenant = _world(session, dead)
        with session_scope(database_url) as session, counted(database_url) as statements:
            assert replay_dead(session=session, tenant_id=tenant.id) == dead
        counts.append([s for s in statements if not s.lstrip().upper().startswith("BEGIN")])
    assert len(counts[0]) == len(counts[1]) == 2, counts
