"""Signed callbacks (Standard Webhooks): sign, POST, record the attempt.

A callback never fails a caption: results are committed before the outbox row
is sent, and delivery problems only ever change the delivery row.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
from sqlmodel import Session
from standardwebhooks.webhooks import Webhook

from schemas.tables import Delivery, DeliveryAttempt, DeliveryStatus, Tenant, utcnow

# Seconds before attempt 2, 3, ...: all shorter than the broker's visibility timeout.
RETRY_DELAYS_S = (5, 30, 120, 600, 1800, 1800, 1800)


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    error: str | None
    duration_ms: float

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def signed_headers(*, secret: str, msg_id: str, body: str, now: datetime) -> dict[str, str]:
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id=msg_id, timestamp=now, data=body),
        "user-agent": "captionq-webhooks/1",
    }


def post(*, delivery: Delivery, secret: str, timeout_s: float) -> AttemptResult:
    headers = signed_headers(
        secret=secret, msg_id=delivery.id, body=delivery.payload, now=datetime.now(UTC)
    )
    started = time.perf_counter()
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
            response = client.post(delivery.url, content=delivery.payload.encode(), headers=headers)
    except httpx.HTTPError as exc:
        return AttemptResult(None, f"{type(exc).__name__}: {exc}", _ms(started))
    error = None if 200 <= response.status_code < 300 else response.text[:500]
    return AttemptResult(response.status_code, error, _ms(started))


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def record(
    *, session: Session, delivery: Delivery, result: AttemptResult, max_attempts: int
) -> float | None:
    """Log the attempt and update the row; returns seconds until the next try, or None."""
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
    if result.ok:
        delivery.status = DeliveryStatus.delivered
        delivery.delivered_at = utcnow()
        return None
    if delivery.attempts >= max_attempts:
        delivery.status = DeliveryStatus.dead
        return None
    delay = RETRY_DELAYS_S[min(delivery.attempts - 1, len(RETRY_DELAYS_S) - 1)]
    delivery.next_attempt_at = utcnow() + timedelta(seconds=delay)
    return float(delay)


def tenant_secret(session: Session, delivery: Delivery) -> str:
    tenant = session.get(Tenant, delivery.tenant_id)
    assert tenant is not None, f"delivery {delivery.id} has no tenant"
    return tenant.webhook_secret
