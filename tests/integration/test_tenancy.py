"""Tenants at the API: rate limits and in-flight caps (429 + Retry-After), deletion, purge."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlmodel import select

from producers.client import ApiError, CaptionClient
from producers.submit import fair_priority
from schemas.errors import ErrorCode, RequestError
from schemas.settings import ApiSettings
from schemas.store.blobs import put_blob
from schemas.store.lifecycle import purge
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_tenant
from schemas.tables import Blob, Delivery, Job, Variant, utcnow
from tests.support.api import client_of, new_tenant, served_api
from tests.support.images import png
from tests.support.proxy import Relay


@contextmanager
def sdk(
    database_url: str, redis_db: str, *names: str, retries: int = 0, **limits: object
) -> Iterator[list[CaptionClient]]:
    """A served API with ``limits``, and an SDK client for each new tenant in ``names``
    (no retries unless asked: these tests look at the refusals themselves)."""
    settings = ApiSettings(database_url=database_url, redis_url=redis_db, **limits)  # type: ignore[arg-type]
    with served_api(settings) as api, ExitStack() as clients:
        yield [
            clients.enter_context(client_of(api, new_tenant(settings, name), retries=retries))
            for name in names
        ]


JOB = {"image": png(), "styles": ["minimal"], "platforms": ["x"], "variants": 1}
LIMITED = {"rate_limit_jobs_per_s": 0.5, "rate_limit_burst": 3, "max_in_flight": 1000}


def refusal(call: Callable[[], object]) -> ApiError:
    with pytest.raises(ApiError) as refused:
        call()
    return refused.value


def test_a_burst_over_the_rate_gets_429_with_retry_after_and_spares_other_tenants(
    database_url: str, redis_db: str
) -> None:
    with sdk(database_url, redis_db, "flood", "calm", **LIMITED) as (flood, calm):
        for _ in range(3):
            assert flood.submit(**JOB).status == "queued"
        refused = [refusal(lambda: flood.submit(**JOB)) for _ in range(3)]
        assert [(r.status, r.code) for r in refused] == [(429, ErrorCode.rate_limited)] * 3
        assert all(1 <= (r.retry_after_s or 0) <= 3 for r in refused)
        assert calm.submit(**JOB).status == "queued"


def test_the_sdk_waits_as_retry_after_says_and_makes_one_job(
    database_url: str, redis_db: str
) -> None:
    limits = {"rate_limit_jobs_per_s": 1.0, "rate_limit_burst": 1}
    with sdk(database_url, redis_db, "patient", retries=3, **limits) as (client,):
        client.submit(**JOB)
        started = time.monotonic()
        accepted = client.submit(**JOB, idempotency_key="patient-1")  # 429 first, then 202
        assert time.monotonic() - started >= 0.9  # it waited for Retry-After (1 s)
        assert accepted.created
        assert len([j for j in client.list().jobs if j.idempotency_key == "patient-1"]) == 1


def test_the_sdk_waits_out_a_503_while_redis_is_away_and_makes_one_job(
    database_url: str, redis_db: str
) -> None:
    """Redis away at admission: 503 ``broker_unavailable`` with Retry-After, nothing
    written; the SDK tries again with the same idempotency key once it has waited, and
    Redis back by then, the one job is made."""
    url = urlsplit(redis_db)
    relay = Relay(url.port or 6379)
    through = urlunsplit(url._replace(netloc=f"127.0.0.1:{relay.port}"))
    try:
        with sdk(database_url, through, "outage", retries=2) as (client,):
            relay.cut()
            threading.Timer(1.0, relay.restore).start()
            started = time.monotonic()
            accepted = client.submit(**JOB, idempotency_key="outage-1")  # 503, then 202
            assert time.monotonic() - started >= 4.5  # it waited for Retry-After (5 s)
            assert accepted.created
            made = [j for j in client.list().jobs if j.idempotency_key == "outage-1"]
            assert [j.id for j in made] == [accepted.id]
    finally:
        relay.close()


def test_a_bulk_larger_than_the_burst_is_413(database_url: str, redis_db: str) -> None:
    with sdk(database_url, redis_db, "bulky", **LIMITED) as (client,):
        refused = refusal(lambda: client.submit_bulk([JOB] * 4))
        assert (refused.status, refused.code) == (413, ErrorCode.payload_too_large)


def test_the_in_flight_cap_is_429(database_url: str, redis_db: str) -> None:
    with sdk(database_url, redis_db, "capped", max_in_flight=2) as (client,):
        client.submit(**JOB)
        client.submit(**JOB)
        third = refusal(lambda: client.submit(**JOB))
        assert (third.status, third.code, third.retry_after_s) == (429, ErrorCode.rate_limited, 5)
        assert "in flight" in third.message


def test_delete_removes_the_job_its_variants_deliveries_and_image(
    database_url: str, redis_db: str
) -> None:
    job = {**JOB, "image": png((1, 2, 3)), "callback_url": "https://example.com/h"}
    with sdk(database_url, redis_db, "owner", "other") as (owner, other):
        job_id = owner.submit(**job).id
        with session_scope(database_url) as session:
            row = session.get(Job, job_id)
            assert row is not None
            digest = row.image_sha256
            session.add(
                Variant(
                    job_id=job_id,
                    style="minimal",
                    platform="x",
                    index=0,
                    text="t",
                    quality_score=0.5,
                )
            )
            session.add(
                Delivery(
                    tenant_id=row.tenant_id,
                    job_id=job_id,
                    event_type="job.succeeded",
                    url="https://example.com/h",
                    payload="{}",
                )
            )
        assert refusal(lambda: other.delete(job_id)).status == 404
        owner.delete(job_id)
        assert refusal(lambda: owner.get(job_id)).code == ErrorCode.not_found
        assert refusal(lambda: owner.delete(job_id)).status == 404
    with session_scope(database_url) as session:
        assert session.exec(select(Variant).where(Variant.job_id == job_id)).all() == []
        assert session.exec(select(Delivery).where(Delivery.job_id == job_id)).all() == []
        assert session.get(Blob, digest) is None


def test_an_image_shared_by_two_jobs_outlives_the_first_deletion(
    database_url: str, redis_db: str
) -> None:
    shared = {**JOB, "image": png((9, 9, 9))}
    with sdk(database_url, redis_db, "sharer") as (client,):
        first, second = client.submit(**shared).id, client.submit(**shared).id
        client.delete(first)
        with session_scope(database_url) as session:
            digest = session.get(Job, second).image_sha256  # type: ignore[union-attr]
            assert session.get(Blob, digest) is not None


def test_another_tenants_job_is_not_found_for_every_job_route(
    database_url: str, redis_db: str
) -> None:
    with sdk(database_url, redis_db, "mine", "theirs") as (mine, theirs):
        job_id = mine.submit(**JOB).id
        for call in (theirs.get, theirs.cancel, theirs.delete, theirs.decisions):
            assert refusal(lambda call=call: call(job_id)).code == ErrorCode.not_found
        assert job_id not in {j.id for j in theirs.list().jobs}
        assert mine.cancel(job_id).status == "cancelled"  # still its own to change


def test_purge_deletes_only_jobs_older_than_the_cut_off(database_url: str) -> None:
    with session_scope(database_url) as session:
        tenant = create_tenant(session=session, name="retention")
        digest = put_blob(session=session, store="db", data=png((4, 5, 6)))
        old = Job(
            tenant_id=tenant.id,
            styles=["minimal"],
            platforms=["x"],
            variants=1,
            request_hash="h",
            image_sha256=digest,
            created_at=utcnow() - timedelta(days=40),
        )
        new = Job(
            tenant_id=tenant.id, styles=["minimal"], platforms=["x"], variants=1, request_hash="h2"
        )
        session.add(old)
        session.add(new)
    with session_scope(database_url) as session:
        assert purge(session=session, older_than=utcnow() - timedelta(days=30), store="db") >= 1
    with session_scope(database_url) as session:
        assert session.get(Job, old.id) is None
        assert session.get(Job, new.id) is not None
        assert session.get(Blob, digest) is None


@pytest.mark.parametrize(
    ("priority", "backlog", "expected"),
    [(5, 0, 5), (5, 31, 5), (5, 32, 4), (5, 128, 3), (5, 5000, 1), (1, 5000, 0), (9, 600, 6)],
)
def test_fair_priority_steps_down_with_the_backlog(
    priority: int, backlog: int, expected: int
) -> None:
    assert fair_priority(priority, backlog=backlog, steps=[32, 128, 512, 2048]) == expected


def test_purge_all_empties_everything_older_in_chunks(database_url: str) -> None:
    from schemas.store.lifecycle import purge_all

    with session_scope(database_url) as session:
        tenant = create_tenant(session=session, name="bulk-retention")
        for n in range(3):
            session.add(
                Job(
                    tenant_id=tenant.id,
                    styles=["minimal"],
                    platforms=["x"],
                    variants=1,
                    request_hash=f"r{n}",
                    created_at=utcnow() - timedelta(days=400),
                )
            )
    cutoff = utcnow() - timedelta(days=365)
    assert purge_all(database_url=database_url, older_than=cutoff, store="db") >= 3
    with session_scope(database_url) as session:
        left = session.exec(select(Job).where(Job.created_at < cutoff)).all()
    assert left == []


def test_retention_is_scheduled_only_when_configured() -> None:
    import json
    import os
    import subprocess
    import sys

    code = "import json, worker.app as a; print(json.dumps(sorted(a.app.conf.beat_schedule)))"
    for days, expected in (("", False), ("30", True)):
        env = {k: v for k, v in os.environ.items() if k != "RETENTION_DAYS"}
        if days:
            env["RETENTION_DAYS"] = days
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout
        assert ("purge-expired-jobs" in json.loads(out)) is expected


def test_the_in_cluster_producer_admits_as_the_api_does_and_creates_no_tenant(
    database_url: str, redis_db: str
) -> None:
    from producers.direct import DirectProducer
    from producers.limits import RateLimitedError
    from schemas.api import JobRequest
    from schemas.store.tenants import tenant_by_name

    settings = ApiSettings(
        database_url=database_url, redis_url=redis_db, rate_limit_jobs_per_s=0.5,
        rate_limit_burst=2, max_in_flight=1000,
    )  # fmt: skip
    with pytest.raises(RequestError) as typo:
        DirectProducer(tenant="acme-typo", settings=settings)
    assert typo.value.code == ErrorCode.not_found
    with session_scope(database_url) as session:
        assert tenant_by_name(session=session, name="acme-typo") is None
        create_tenant(session=session, name="in-cluster")
    producer = DirectProducer(tenant="in-cluster", settings=settings)
    request = JobRequest(image_url="https://example.com/a.png", styles=["minimal"], platforms=["x"])
    assert len(producer.submit_each([request, request])) == 2
    with pytest.raises(RateLimitedError):
        producer.submit_each([request])
