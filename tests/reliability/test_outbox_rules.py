"""The rules of the outbox and the job store, on SQLite, without processes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import select
from standardwebhooks.webhooks import Webhook

from producers.api.statuses import status_for
from schemas.api import JobRequest
from schemas.errors import ErrorCode, RequestError
from schemas.settings import ApiSettings
from schemas.store.endpoints import create_endpoint, rotate_secret, signing_secrets
from schemas.store.jobs import cancel_job, claim, create_job
from schemas.store.outbox import AttemptResult, Sent, record
from schemas.store.sessions import migrate, session_scope
from schemas.store.tenants import create_api_key, ensure_tenant
from schemas.tables import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Job,
    JobStatus,
    WebhookEndpoint,
    utcnow,
)
from tests.support.services import SECRETS_KEY
from worker.sender import signed_headers

pytestmark = pytest.mark.reliability
SCHEDULE = [0.0, 5.0, 300.0]


@pytest.fixture
def url(tmp_path: Path) -> str:
    database = f"sqlite:///{tmp_path / 'rules.db'}"
    migrate(database)
    return database


def _job(url: str, key: str = "k1") -> tuple[str, str]:
    request = JobRequest(
        image_url="https://example.com/a.png",
        styles=["playful"],
        platforms=["instagram"],
        idempotency_key=key,
        callback_url="https://example.com/hook",
    )
    with session_scope(url) as session:
        tenant = ensure_tenant(session=session, name="acme")
        job, _ = create_job(session=session, tenant=tenant, request=request, image_sha256=None)
        return tenant.id, job.id


def _delivery(url: str, tenant_id: str, job_id: str) -> str:
    with session_scope(url) as session:
        row = Delivery(
            tenant_id=tenant_id,
            job_id=job_id,
            event_type="job.succeeded",
            url="https://example.com/hook",
            payload="{}",
        )
        session.add(row)
        session.flush()
        return row.id


def test_replay_in_progress_is_409_then_same_job(url: str) -> None:
    tenant_id, job_id = _job(url)
    with pytest.raises(RequestError) as refused:
        _job(url)
    assert status_for(refused.value.code) == 409
    assert refused.value.code == ErrorCode.idempotency_in_progress
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.created_at = utcnow() - timedelta(seconds=60)  # its creator died long ago
    assert _job(url)[1] == job_id


def test_cancelled_job_is_never_claimed(url: str) -> None:
    tenant_id, job_id = _job(url)
    with session_scope(url) as session:
        assert cancel_job(session=session, tenant_id=tenant_id, job_id=job_id).status == "cancelled"
        assert claim(session=session, job_ids=[job_id]) == []
        assert session.get(Job, job_id).status == JobStatus.cancelled  # type: ignore[union-attr]


def _attempt(url: str, delivery_id: str, endpoint_id: str, result: AttemptResult) -> Delivery:
    with session_scope(url) as session:
        sent = Sent({delivery_id: (endpoint_id, result)})
        record(session=session, sent=sent, schedule_s=SCHEDULE)
    with session_scope(url) as session:
        row = session.get(Delivery, delivery_id)
        assert row is not None
        attempts = session.exec(
            select(DeliveryAttempt).where(DeliveryAttempt.delivery_id == delivery_id)
        ).all()
        assert [a.attempt for a in attempts] == list(range(1, row.attempts + 1))
        return row


def test_schedule_429_410_and_dead(url: str) -> None:
    tenant_id, job_id = _job(url, "k2")
    delivery_id = _delivery(url, tenant_id, job_id)
    gone_id = _delivery(url, tenant_id, job_id)
    with session_scope(url) as session:
        endpoint, _ = create_endpoint(
            session=session, tenant_id=tenant_id, url="https://example.com/hook", key=SECRETS_KEY
        )
    row = _attempt(url, delivery_id, endpoint.id, AttemptResult(500, "boom", 3.0))
    assert (row.status, row.attempts, row.last_status_code) == (DeliveryStatus.pending, 1, 500)
    assert 4 < (_aware(row.next_attempt_at) - utcnow()).total_seconds() <= 5
    row = _attempt(
        url, delivery_id, endpoint.id, AttemptResult(429, "slow down", 3.0, retry_after_s=1000.0)
    )
    assert 299 < (_aware(row.next_attempt_at) - utcnow()).total_seconds() <= 300  # capped
    row = _attempt(url, delivery_id, endpoint.id, AttemptResult(503, "x", 3.0))
    assert row.status == DeliveryStatus.dead  # after the last attempt
    assert row.delivered_at is None
    gone = _attempt(url, gone_id, endpoint.id, AttemptResult(410, "gone", 3.0))
    assert gone.status == DeliveryStatus.dead
    with session_scope(url) as session:
        assert session.get(WebhookEndpoint, endpoint.id).disabled_at is not None  # type: ignore[union-attr]


def test_delivered_refused_and_untried(url: str) -> None:
    tenant_id, job_id = _job(url, "k4")
    ok_id, refused_id, untried_id = (_delivery(url, tenant_id, job_id) for _ in range(3))
    with session_scope(url) as session:
        endpoint, _ = create_endpoint(
            session=session, tenant_id=tenant_id, url="https://example.com/hook", key=SECRETS_KEY
        )
        session.get(Delivery, untried_id).sending_until = utcnow()  # type: ignore[union-attr]
    sent = Sent(
        {
            ok_id: (endpoint.id, AttemptResult(204, None, 2.0)),
            refused_id: (endpoint.id, AttemptResult(None, "no", 0.0, refused=True)),
        },
        untried=[untried_id, "msg_deleted_meanwhile"],
    )
    with session_scope(url) as session:
        record(session=session, sent=sent, schedule_s=SCHEDULE)
    with session_scope(url) as session:
        ok, refused, untried = (session.get(Delivery, i) for i in (ok_id, refused_id, untried_id))
        assert ok is not None
        assert refused is not None
        assert untried is not None
        assert (ok.status, ok.attempts, ok.last_status_code) == (DeliveryStatus.delivered, 1, 204)
        assert ok.delivered_at is not None
        assert (refused.status, refused.attempts) == (DeliveryStatus.dead, 1)
        assert (untried.status, untried.attempts, untried.sending_until) == ("pending", 0, None)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def test_rotation_signs_with_both_secrets(url: str) -> None:
    tenant_id, _ = _job(url, "k3")
    with session_scope(url) as session:
        endpoint, old = create_endpoint(
            session=session, tenant_id=tenant_id, url="https://example.com/r", key=SECRETS_KEY
        )
        assert old not in endpoint.secret_encrypted  # encrypted at rest
        new = rotate_secret(session=session, endpoint=endpoint, key=SECRETS_KEY, grace_s=60)
        secrets = signing_secrets(endpoint, key=SECRETS_KEY)
    assert secrets == [new, old]
    headers = signed_headers(secrets=secrets, msg_id="msg_1", body="{}", now=utcnow())
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (old, new):
        Webhook(secret).verify("{}", headers)


def test_api_router_endpoints_and_dead_replay(url: str) -> None:
    from producers.api import webhooks as api
    from producers.api.app import _request_error

    tenant_id, job_id = _job(url, "k4")
    with session_scope(url) as session:
        tenant = ensure_tenant(session=session, name="acme")
        _, key = create_api_key(session=session, tenant=tenant)
    app = FastAPI()
    app.state.settings = ApiSettings(database_url=url, webhook_secrets_key=SECRETS_KEY)
    app.include_router(api.router)
    app.add_exception_handler(RequestError, _request_error)  # type: ignore[arg-type]
    client = TestClient(app, headers={"authorization": f"Bearer {key}"})
    made = client.post("/v1/webhooks", json={"url": "https://example.com/new"})
    assert made.status_code == 201
    assert made.json()["secret"].startswith("whsec_")
    assert client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/x"}).status_code == 422
    rotated = client.post(f"/v1/webhooks/{made.json()['id']}/rotate").json()
    assert rotated["secret"] != made.json()["secret"]
    dead = _delivery(url, tenant_id, job_id)
    with session_scope(url) as session:
        row = session.get(Delivery, dead)
        assert row is not None
        row.status = DeliveryStatus.dead
    listed = client.get("/v1/webhooks/deliveries", params={"status": "dead"}).json()
    assert [d["id"] for d in listed] == [dead]
    assert client.post(f"/v1/webhooks/deliveries/{dead}/replay").json()["status"] == "pending"
