"""A batch of callbacks, sent by ``schemas.store.outbox.send_batch`` against real receivers on
loopback and a real database: one connection per endpoint, every attempt recorded, and
what a slow, hanging or gone receiver does to the rest of its batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta

import pytest
from prometheus_client import REGISTRY
from sqlmodel import col, select

from schemas.settings import WorkerSettings
from schemas.store.endpoints import create_endpoint, ensure_endpoint
from schemas.store.outbox import PING
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_tenant, webhook_secret
from schemas.tables import Delivery, DeliveryAttempt, DeliveryStatus, WebhookEndpoint, utcnow
from tests.support.receivers import Receiver
from tests.support.services import LOOPBACK, SECRETS_KEY
from worker import sender

TIMEOUT_S = 0.5


@dataclass
class World:
    settings: WorkerSettings
    tenant_id: str
    secret: str

    def outbox(self, url: str, count: int, event_type: str = "job.succeeded") -> list[str]:
        """``count`` outbox rows for ``url``, an endpoint of the tenant (registered, as a
        submission registers its callback URL, if it is not one yet)."""
        with session_scope(self.settings.database_url) as session:
            ensure_endpoint(session=session, tenant_id=self.tenant_id, url=url, key=SECRETS_KEY)
            rows = [
                Delivery(tenant_id=self.tenant_id, event_type=event_type, url=url, payload="{}")
                for _ in range(count)
            ]
            session.add_all(rows)
            return [row.id for row in rows]

    def rows(self, ids: list[str]) -> list[Delivery]:
        with session_scope(self.settings.database_url) as session:
            found = {
                row.id: row
                for row in session.exec(select(Delivery).where(col(Delivery.id).in_(ids)))
            }
            return [found[i] for i in ids]

    def attempts(self, delivery_id: str) -> list[DeliveryAttempt]:
        with session_scope(self.settings.database_url) as session:
            query = select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id)
            return list(session.exec(query.order_by(col(DeliveryAttempt.attempt))).all())


@pytest.fixture
def world(database_url: str) -> World:
    settings = WorkerSettings(
        database_url=database_url,
        callback_timeout_s=TIMEOUT_S,
        callback_retry_schedule_s=[0, 5, 60],
        **LOOPBACK,
        webhook_secrets_key=SECRETS_KEY,
    )
    with session_scope(database_url) as session:
        tenant = create_tenant(
            session=session, name=f"batches-{time.monotonic_ns()}", key=SECRETS_KEY
        )
        return World(settings, tenant.id, webhook_secret(tenant, key=SECRETS_KEY))


@pytest.fixture
def receiver(world: World, receivers: Callable[..., Receiver]) -> Iterator[Receiver]:
    """An HTTP/1.1 (keep-alive) receiver that counts its connections and signed requests."""
    receiver = receivers(world.secret)
    yield receiver
    assert all(request.verified for request in receiver.requests)


def test_a_batch_goes_over_one_connection_and_every_attempt_is_logged(
    world: World, receiver: Receiver
) -> None:
    ids = world.outbox(receiver.url, 6)
    sent = sender.send_batch(ids, settings=world.settings)
    assert receiver.ids == ids
    assert receiver.connections == 1
    assert [result.status_code for _, result in sent.attempts.values()] == [204] * 6
    for row in world.rows(ids):
        assert (row.status, row.attempts, row.last_status_code) == ("delivered", 1, 204)
        assert row.delivered_at is not None
        assert row.sending_until is None
        assert [a.status_code for a in world.attempts(row.id)] == [204]
    again = sender.send_batch(ids, settings=world.settings)  # a duplicate message
    assert again.attempts == {}
    assert len(receiver.ids) == 6


def lag_observed() -> tuple[float, float]:
    """The worker's delivery-lag histogram in this process: (count, sum)."""
    count = REGISTRY.get_sample_value("captionq_delivery_lag_seconds_count") or 0.0
    return count, REGISTRY.get_sample_value("captionq_delivery_lag_seconds_sum") or 0.0


def test_the_delivery_lag_runs_from_the_row_written_to_its_2xx_recorded(
    world: World, receiver: Receiver
) -> None:
    """Rows written 30 s ago: each 2xx adds one lag of 30 s and a little; a callback
    that is refused (its endpoint deleted) adds none. Stored times come back from
    SQLite without their zone; the lag is right on both databases."""
    ids = world.outbox(receiver.url, 3)
    written = utcnow() - timedelta(seconds=30)
    with session_scope(world.settings.database_url) as session:
        orphan = Delivery(tenant_id=world.tenant_id, event_type="job.succeeded",
                          url="https://gone.example/hook", payload="{}")  # fmt: skip
        session.add(orphan)
        session.flush()
        for row in session.exec(select(Delivery).where(col(Delivery.id).in_([*ids, orphan.id]))):
            row.created_at = written
            session.add(row)
    count, total = lag_observed()
    started = time.monotonic()
    sent = sender.send_batch([*ids, orphan.id], settings=world.settings)
    elapsed_s = time.monotonic() - started
    assert sent.attempts[orphan.id][1].refused
    after_count, after_total = lag_observed()
    assert after_count - count == 3
    assert 3 * 30 <= after_total - total <= 3 * (30 + elapsed_s + 1)


def test_a_timeout_stops_the_rest_of_the_endpoints_batch(world: World, receiver: Receiver) -> None:
    receiver.delay_s = TIMEOUT_S * 3
    ids = world.outbox(receiver.url, 4)
    started = time.monotonic()
    sender.send_batch(ids, settings=world.settings)
    assert time.monotonic() - started < TIMEOUT_S * 2.5  # one deadline, not four
    assert receiver.ids == ids[:1]
    first, *rest = world.rows(ids)
    assert first.last_error is not None
    assert "Timeout" in first.last_error
    for row in [first, *rest]:
        assert (row.status, row.attempts, row.sending_until) == ("pending", 1, None)
    for row in rest:
        assert row.last_error == f"not sent: {ids[0]} timed out before it"
        assert world.attempts(row.id)[0].status_code is None


def test_410_disables_the_endpoint_and_ends_its_batch(world: World, receiver: Receiver) -> None:
    receiver.status = 410
    ids = world.outbox(receiver.url, 3)
    sender.send_batch(ids, settings=world.settings)
    assert receiver.ids == ids[:1]
    assert [row.status for row in world.rows(ids)] == ["dead"] * 3
    with session_scope(world.settings.database_url) as session:
        endpoint = session.exec(
            select(WebhookEndpoint).where(WebhookEndpoint.url == receiver.url)
        ).one()
        assert endpoint.disabled_reason == "410 Gone"
    later = world.outbox(receiver.url, 1)
    sender.send_batch(later, settings=world.settings)
    assert world.rows(later)[0].status == DeliveryStatus.dead  # refused, never sent
    assert len(receiver.ids) == 1


def test_what_the_lease_cannot_cover_is_handed_back_untried(
    world: World, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The lease is the POST deadline and a margin; a POST starts only if it can end
    # inside it with time to record it. With answers taking 0.2 s and a 0.3 s margin,
    # the first one or two go and the rest wait for the next dispatch.
    monkeypatch.setattr(sender, "LEASE_MARGIN_S", 0.3)
    receiver.delay_s = 0.2
    ids = world.outbox(receiver.url, 6)
    sent = sender.send_batch(ids, settings=world.settings)
    assert 1 <= len(sent.attempts) < 6
    assert sent.untried == ids[len(sent.attempts) :]
    rows = world.rows(ids)
    for row in rows[: len(sent.attempts)]:
        assert row.status == "delivered"
    for row in rows[len(sent.attempts) :]:
        assert (row.status, row.attempts, row.sending_until) == ("pending", 0, None)
        assert world.attempts(row.id) == []
    monkeypatch.setattr(sender, "LEASE_MARGIN_S", 5.0)
    sender.send_batch(sent.untried, settings=world.settings)  # the next dispatch
    assert [row.status for row in world.rows(ids)] == ["delivered"] * 6
    assert receiver.ids == ids


def test_endpoints_in_one_batch_each_get_their_own_connection(
    world: World, receivers: Callable[..., Receiver]
) -> None:
    slow, fast = receivers(world.secret, status=500), receivers(world.secret)
    failing = world.outbox(slow.url, 2)
    good = world.outbox(fast.url, 2)
    sender.send_batch([*failing, *good], settings=world.settings)
    assert (slow.connections, fast.connections) == (1, 1)
    assert [row.status for row in world.rows(good)] == ["delivered"] * 2
    for row in world.rows(failing):
        assert (row.status, row.attempts, row.last_status_code) == ("pending", 1, 500)
        assert row.next_attempt_at is not None


def test_an_endpoint_gets_only_the_events_it_subscribes_to_and_pings(
    world: World, receiver: Receiver
) -> None:
    with session_scope(world.settings.database_url) as session:
        create_endpoint(
            session=session,
            tenant_id=world.tenant_id,
            url=receiver.url_for("failed-only"),
            key=SECRETS_KEY,
            event_types=["job.failed"],
            secret=world.secret,
        )
    url = receiver.url_for("failed-only")
    succeeded, failed, ping = (
        world.outbox(url, 1, event)[0] for event in ("job.succeeded", "job.failed", PING)
    )
    sender.send_batch([succeeded, failed, ping], settings=world.settings)
    assert receiver.ids == [failed, ping]
    statuses = [row.status for row in world.rows([succeeded, failed, ping])]
    assert statuses == ["dead", "delivered", "delivered"]


def test_a_delivery_whose_endpoint_is_gone_is_dead_at_once_and_no_endpoint_is_made(
    world: World, receiver: Receiver
) -> None:
    from sqlmodel import select

    from schemas.tables import WebhookEndpoint

    with session_scope(world.settings.database_url) as session:
        row = Delivery(
            tenant_id=world.tenant_id, event_type="job.succeeded", url=receiver.url, payload="{}"
        )
        session.add(row)
        delivery_id = row.id
    sender.send_batch([delivery_id], settings=world.settings)
    (stored,) = world.rows([delivery_id])
    assert (stored.status, stored.attempts) == ("dead", 1)
    assert "no endpoint" in (stored.last_error or "")
    assert receiver.requests == []
    with session_scope(world.settings.database_url) as session:
        made = session.exec(select(WebhookEndpoint).where(WebhookEndpoint.url == receiver.url))
        assert made.all() == []
