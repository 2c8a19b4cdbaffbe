"""The whole path with real parts: client, DB, Redis, Celery worker, DB, signed callback."""

from __future__ import annotations

import pytest
from standardwebhooks.webhooks import Webhook

from producers.client import ApiError
from schemas.api import JobAccepted
from schemas.errors import ErrorCode, RequestError
from schemas.store.sessions import session_scope
from schemas.store.tenants import webhook_secret
from schemas.tables import Delivery, DeliveryStatus, Tenant, Variant
from tests.support.images import png
from tests.support.stack import Stack
from tests.support.waiting import wait_for

STYLES = ["playful", "luxury"]
PLATFORMS = ["instagram", "x"]


def test_jobs_succeed_with_variants_and_verified_callbacks(stack: Stack) -> None:
    accepted = stack.client.submit_bulk(
        [
            {
                "image": png((i * 60, 100, 200)),
                "styles": STYLES,
                "platforms": PLATFORMS,
                "variants": 2,
                "callback_url": stack.receiver.url,
                "metadata": {"n": i},
            }
            for i in range(3)
        ]
    )
    ids = [a.id for a in accepted]
    jobs = [stack.client.wait(job_id, timeout_s=120) for job_id in ids]
    for job in jobs:
        assert job.status == "succeeded", (job.error, stack.logs())
        assert job.caption
        assert job.model_id is not None
        assert job.model_id.endswith("tiny-blip")
        assert len(job.variants) == len(STYLES) * len(PLATFORMS) * 2
        assert {(v.style, v.platform) for v in job.variants} == {
            (s, p) for s in STYLES for p in PLATFORMS
        }
        for variant in job.variants:
            assert 0.0 <= variant.quality_score <= 1.0
            assert variant.review_state == "pending_review"  # no threshold calibrated: never auto
            assert variant.provenance["model_id"] == job.model_id
            assert "seed" in variant.provenance
    wait_for(lambda: {r.job_id for r in stack.receiver.received} >= set(ids))
    received = [r for r in stack.receiver.received if r.job_id in ids]
    assert all(r.verified for r in received)
    assert {r.event_type for r in received} == {"job.succeeded"}

    def deliveries() -> list[Delivery | None]:
        with session_scope(stack.settings.database_url) as session:
            found = [session.get(Delivery, r.webhook_id) for r in received]
            session.expunge_all()
            return found

    # The sender records a batch's attempts after its last POST: a moment after the
    # receiver has them.
    wait_for(
        lambda: all(d is not None and d.status == DeliveryStatus.delivered for d in deliveries())
    )
    assert {d.job_id for d in deliveries() if d} == set(ids)


def test_signature_verifies_with_standardwebhooks_and_fails_with_another_secret(
    stack: Stack,
) -> None:
    job_id = stack.client.submit(
        image=png(),
        styles=["minimal"],
        platforms=["x"],
        variants=1,
        callback_url=stack.receiver.url,
    ).id
    wait_for(lambda: any(r.job_id == job_id for r in stack.receiver.received))
    with session_scope(stack.settings.database_url) as session:
        delivery = session.exec(
            Delivery.__table__.select().where(Delivery.job_id == job_id)  # type: ignore[attr-defined]
        ).first()
        secret = webhook_secret(session.get(Tenant, stack.tenant_id))  # type: ignore[arg-type]
    assert delivery is not None
    from datetime import UTC, datetime

    from worker.sender import signed_headers

    headers = signed_headers(
        secret=secret, msg_id=delivery.id, body=delivery.payload, now=datetime.now(UTC)
    )
    assert headers["webhook-signature"].startswith("v1,")
    assert Webhook(secret).verify(delivery.payload, headers)["data"]["id"] == job_id
    from standardwebhooks.webhooks import WebhookVerificationError

    other = "whsec_" + "A" * 43 + "="
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(delivery.payload, headers)


def test_bad_image_fails_its_own_job_and_the_worker_keeps_serving(stack: Stack) -> None:
    truncated = png(size=(200, 200))[:120]  # a PNG header, then nothing: passes the sniff
    bad, good = stack.client.submit_bulk(
        [
            {
                "image": truncated,
                "styles": ["playful"],
                "platforms": ["x"],
                "variants": 1,
                "callback_url": stack.receiver.url,
            },
            {"image": png((10, 200, 10)), "styles": ["playful"], "platforms": ["x"], "variants": 1},
        ]
    )
    bad_job = stack.client.wait(bad, timeout_s=60)
    good_job = stack.client.wait(good, timeout_s=60)
    assert bad_job.status == "failed"
    assert bad_job.error is not None
    assert bad_job.error.code in {ErrorCode.image_truncated, ErrorCode.image_unreadable}
    assert bad_job.variants == []
    assert good_job.status == "succeeded"
    wait_for(
        lambda: any(
            r.job_id == bad.id and r.event_type == "job.failed" for r in stack.receiver.received
        )
    )
    # The worker is still serving.
    after = stack.client.submit(image=png(), styles=["minimal"], platforms=["x"], variants=1)
    assert stack.client.wait(after, timeout_s=60).status == "succeeded"


@pytest.mark.parametrize(
    ("job", "code"),
    [
        ({"image": b"this is not an image"}, ErrorCode.image_unreadable),
        ({"image": b""}, ErrorCode.image_empty),
        ({"styles": ["gothic"]}, ErrorCode.unknown_style),
        ({"platforms": ["myspace"]}, ErrorCode.unknown_platform),
        ({"variants": 0}, ErrorCode.variants_out_of_range),
        ({"variants": 11}, ErrorCode.variants_out_of_range),
    ],
    ids=[
        "not-an-image",
        "empty",
        "unknown-style",
        "unknown-platform",
        "zero-variants",
        "eleven-variants",
    ],
)
def test_bad_requests_are_refused_with_a_code(stack: Stack, job: dict, code: ErrorCode) -> None:
    request = {"image": png(), "styles": ["playful"], "platforms": ["x"], "variants": 1, **job}
    with pytest.raises(RequestError) as refused:
        stack.client.submit(**request)
    assert refused.value.code == code


def test_a_refused_item_does_not_stop_the_rest_of_a_batch(stack: Stack) -> None:
    job = {"image": png(), "platforms": ["x"], "variants": 1}
    good, bad = stack.client.submit_bulk(
        [
            {**job, "styles": ["playful"], "idempotency_key": "batch-good-1"},
            {**job, "styles": ["nope"]},
        ]
    )
    assert isinstance(bad, ApiError)
    assert (bad.code, bad.status) == (ErrorCode.unknown_style, 422)
    assert isinstance(good, JobAccepted)
    # The good one was submitted: replaying its key returns it.
    (again,) = stack.client.submit_bulk(
        [{**job, "styles": ["playful"], "idempotency_key": "batch-good-1"}]
    )
    assert isinstance(again, JobAccepted)
    assert (again.id, again.created) == (good.id, False)
    assert stack.client.wait(again, timeout_s=60).status == "succeeded"


def test_idempotency_key_returns_the_same_job_and_refuses_another_body(stack: Stack) -> None:
    first = stack.client.submit(
        image=png(), styles=["playful"], platforms=["x"], variants=1, idempotency_key="order-42"
    )
    again = stack.client.submit(
        image=png(), styles=["playful"], platforms=["x"], variants=1, idempotency_key="order-42"
    )
    assert (again.id, again.created) == (first.id, False)
    with pytest.raises(RequestError) as refused:
        stack.client.submit(
            image=png(), styles=["luxury"], platforms=["x"], variants=1, idempotency_key="order-42"
        )
    assert refused.value.code == ErrorCode.idempotency_conflict
    job = stack.client.wait(first, timeout_s=60)
    assert job.status == "succeeded"
    with session_scope(stack.settings.database_url) as session:
        rows = session.exec(Variant.__table__.select().where(Variant.job_id == first.id)).all()  # type: ignore[attr-defined]
    assert len(rows) == 1  # results stored once


def test_wait_times_out_with_a_clear_error(stack: Stack) -> None:
    job_id = stack.client.submit(image=png(), styles=["playful"], platforms=["x"], variants=1).id
    with pytest.raises(TimeoutError, match=job_id):
        stack.client.wait(job_id, timeout_s=0)
    stack.client.wait(job_id, timeout_s=60)
