"""Tenants at the API: rate limits and in-flight caps (429 + Retry-After), deletion, purge."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from producers.api import create_app
from producers.submit import fair_priority
from schemas.settings import ApiSettings
from schemas.store.blobs import put_blob
from schemas.store.lifecycle import purge
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_api_key, create_tenant
from schemas.tables import Blob, Delivery, Job, Variant, utcnow
from tests.support.images import png


def make_api(database_url: str, redis_db: str, **limits: object) -> TestClient:
    return TestClient(
        create_app(ApiSettings(database_url=database_url, redis_url=redis_db, **limits))
    )


def new_key(database_url: str, name: str) -> dict[str, str]:
    with session_scope(database_url) as session:
        tenant = create_tenant(session=session, name=name)
        return {"authorization": f"Bearer {create_api_key(session=session, tenant=tenant)[1]}"}


BODY = {
    "image_base64": base64.b64encode(png()).decode(),
    "styles": ["minimal"],
    "platforms": ["x"],
    "variants": 1,
}


@pytest.fixture(scope="module")
def limited(database_url: str, redis_db: str) -> Iterator[TestClient]:
    with make_api(
        database_url, redis_db, rate_limit_jobs_per_s=0.5, rate_limit_burst=3, max_in_flight=1000
    ) as http:
        yield http


def test_a_burst_over_the_rate_gets_429_with_retry_after_and_spares_other_tenants(
    limited: TestClient, database_url: str
) -> None:
    flood = new_key(database_url, "flood")
    calm = new_key(database_url, "calm")
    codes = [limited.post("/v1/jobs", json=BODY, headers=flood).status_code for _ in range(5)]
    assert codes[:3] == [202, 202, 202]
    assert codes[3:] == [429, 429]
    refused = limited.post("/v1/jobs", json=BODY, headers=flood)
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused.headers["retry-after"]) <= 3
    assert limited.post("/v1/jobs", json=BODY, headers=calm).status_code == 202


def test_a_bulk_larger_than_the_burst_is_413(limited: TestClient, database_url: str) -> None:
    key = new_key(database_url, "bulky")
    response = limited.post("/v1/jobs/bulk", json={"jobs": [BODY] * 4}, headers=key)
    assert response.status_code == 413


def test_the_in_flight_cap_is_429(database_url: str, redis_db: str) -> None:
    key = new_key(database_url, "capped")
    with make_api(database_url, redis_db, max_in_flight=2) as http:
        assert http.post("/v1/jobs", json=BODY, headers=key).status_code == 202
        assert http.post("/v1/jobs", json=BODY, headers=key).status_code == 202
        third = http.post("/v1/jobs", json=BODY, headers=key)
        assert third.status_code == 429
        assert "in flight" in third.json()["error"]["message"]
        assert third.headers["retry-after"] == "5"


def test_delete_removes_the_job_its_variants_deliveries_and_image(
    database_url: str, redis_db: str
) -> None:
    owner = new_key(database_url, "owner")
    other = new_key(database_url, "other")
    image = png((1, 2, 3))
    body = {
        **BODY,
        "image_base64": base64.b64encode(image).decode(),
        "callback_url": "https://example.com/h",
    }
    with make_api(database_url, redis_db) as http:
        job_id = http.post("/v1/jobs", json=body, headers=owner).json()["id"]
        with session_scope(database_url) as session:
            job = session.get(Job, job_id)
            assert job is not None
            digest = job.image_sha256
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
                    tenant_id=job.tenant_id,
                    job_id=job_id,
                    event_type="job.succeeded",
                    url="https://example.com/h",
                    payload="{}",
                )
            )
        assert http.delete(f"/v1/jobs/{job_id}", headers=other).status_code == 404
        assert http.delete(f"/v1/jobs/{job_id}", headers=owner).status_code == 204
        assert http.get(f"/v1/jobs/{job_id}", headers=owner).status_code == 404
        assert http.delete(f"/v1/jobs/{job_id}", headers=owner).status_code == 404
    with session_scope(database_url) as session:
        assert session.exec(select(Variant).where(Variant.job_id == job_id)).all() == []
        assert session.exec(select(Delivery).where(Delivery.job_id == job_id)).all() == []
        assert session.get(Blob, digest) is None


def test_an_image_shared_by_two_jobs_outlives_the_first_deletion(
    database_url: str, redis_db: str
) -> None:
    key = new_key(database_url, "sharer")
    shared = {**BODY, "image_base64": base64.b64encode(png((9, 9, 9))).decode()}
    with make_api(database_url, redis_db) as http:
        first = http.post("/v1/jobs", json=shared, headers=key).json()["id"]
        second = http.post("/v1/jobs", json=shared, headers=key).json()["id"]
        assert http.delete(f"/v1/jobs/{first}", headers=key).status_code == 204
        with session_scope(database_url) as session:
            digest = session.get(Job, second).image_sha256  # type: ignore[union-attr]
            assert session.get(Blob, digest) is not None


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
