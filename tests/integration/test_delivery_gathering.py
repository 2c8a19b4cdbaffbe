"""A real IO worker gathers deliver messages: the callbacks of several GPU batches to
one endpoint go out as one batch (one take, one connection, one record), and each
endpoint's batch goes over a connection of its own."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlmodel import col, select

from producers.publish import producer_app
from schemas import broker
from schemas.messages import DeliveryRef
from schemas.settings import CoreSettings
from schemas.store.endpoints import ensure_endpoint
from schemas.store.sessions import session_scope
from schemas.tables import Delivery, DeliveryAttempt, DeliveryStatus
from tests.support.receivers import Receiver
from tests.support.services import LOOPBACK, LOOPBACK_ENV
from tests.support.stack import Stack
from tests.support.waiting import wait_for

GATHER_S = 1.0  # CALLBACK_BATCH_INTERVAL_S: long enough to show what the timer flushes


@pytest.fixture
def stack(database_url: str, redis_db: str, tmp_path: Path) -> Iterator[Stack]:
    settings = CoreSettings(database_url=database_url, redis_url=redis_db, **LOOPBACK)
    env = {"CALLBACK_BATCH_MAX": "32", "CALLBACK_BATCH_INTERVAL_S": str(GATHER_S), **LOOPBACK_ENV}
    stack = Stack.open(settings, env=env, logdir=tmp_path)
    try:
        yield stack
    finally:
        stack.stop()


def _outbox(stack: Stack, url: str, count: int) -> list[DeliveryRef]:
    with session_scope(stack.database_url) as session:
        key = stack.settings.webhook_secrets_key
        ensure_endpoint(session=session, tenant_id=stack.tenant_id, url=url, key=key)
        rows = [
            Delivery(tenant_id=stack.tenant_id, event_type="job.succeeded", url=url, payload="{}")
            for _ in range(count)
        ]
        session.add_all(rows)
        return [DeliveryRef(row.id, url) for row in rows]


def _delivered(stack: Stack, refs: list[DeliveryRef]) -> bool:
    with session_scope(stack.database_url) as session:
        statuses = session.exec(
            select(Delivery.status).where(col(Delivery.id).in_([r.id for r in refs]))
        ).all()
    return len(statuses) == len(refs) and set(statuses) == {DeliveryStatus.delivered}


def test_an_io_worker_sends_one_endpoints_gathered_messages_as_one_batch(
    stack: Stack, receivers: Callable[..., Receiver]
) -> None:
    busy, quiet = stack.receiver, receivers(stack.receiver.secret)
    # Four GPU batches' callbacks to one endpoint (a message of 8 each), and one to another.
    batches = [_outbox(stack, busy.url, 8) for _ in range(4)]
    lone = _outbox(stack, quiet.url, 2)
    stack.start("io")
    app = producer_app(stack.settings.redis_url)
    started = time.monotonic()
    for refs in [*batches, lone]:
        broker.send_deliveries(app, refs, batch_max=32)
    every = [ref for refs in batches for ref in refs]
    wait_for(lambda: bool(quiet.ids), timeout_s=60, what="the lone message's callbacks")
    waited_s = time.monotonic() - started
    wait_for(lambda: _delivered(stack, every + lone), timeout_s=60, what="every callback")
    # 32 rows to one endpoint: flushed as they arrived, one batch over one connection
    # (one deliver message at a time: four connections).
    assert busy.connections == 1
    assert sorted(busy.ids) == sorted(ref.id for ref in every)
    # The other endpoint's message waited for the timer, then went on its own connection.
    assert quiet.connections == 1
    assert sorted(quiet.ids) == sorted(ref.id for ref in lone)
    assert waited_s >= GATHER_S * 0.8
    with session_scope(stack.database_url) as session:
        attempts = session.exec(
            select(DeliveryAttempt.delivery_id).where(
                col(DeliveryAttempt.delivery_id).in_([r.id for r in every + lone])
            )
        ).all()
    assert sorted(attempts) == sorted(ref.id for ref in every + lone)  # each once
