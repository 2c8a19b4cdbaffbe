"""The HTTP ingestion API against a real database and Redis (jobs are published, not run)."""

from __future__ import annotations

import base64
import io
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, col, select

from producers.api import create_app
from producers.submit import Submitted, submit_many
from schemas.api import JobRequest
from schemas.errors import ErrorCode, RequestError
from schemas.settings import ApiSettings
from schemas.store.jobs import claim, request_hash
from schemas.store.sessions import engine_for, session_scope
from schemas.store.tenants import create_api_key, create_tenant
from schemas.tables import ApiKey, Job, JobStatus, Tenant, utcnow
from tests.support.images import png


@dataclass
class Api:
    http: TestClient
    settings: ApiSettings
    keys: dict[str, str]

    def auth(self, who: str) -> dict[str, str]:
        return {"authorization": f"Bearer {self.keys[who]}"}


@pytest.fixture(scope="module")
def api(database_url: str, redis_db: str) -> Iterator[Api]:
    settings = ApiSettings(
        database_url=database_url, redis_url=redis_db, bulk_max_jobs=5, request_max_bytes=200_000
    )
    keys = {}
    with session_scope(database_url) as session:
        for name in ("alpha", "beta"):
            tenant = create_tenant(session=session, name=name)
            keys[name] = create_api_key(session=session, tenant=tenant)[1]
        keys["alpha-read"] = create_api_key(session=session, tenant=tenant, scopes=["read"])[1]
    with TestClient(create_app(settings)) as http:
        yield Api(http, settings, keys)


def tiff() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="TIFF")
    return buf.getvalue()


def body(**overrides: object) -> dict[str, object]:
    return {
        "image_base64": base64.b64encode(png()).decode(),
        "styles": ["playful"],
        "platforms": ["instagram"],
        "variants": 2,
        **overrides,
    }


def test_submit_returns_202_with_status_url_and_the_job_reads_back(api: Api) -> None:
    response = api.http.post("/v1/jobs", json=body(), headers=api.auth("alpha"))
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "queued"
    assert accepted["status_url"].endswith(f"/v1/jobs/{accepted['id']}")
    assert response.headers["location"] == accepted["status_url"]
    job = api.http.get(f"/v1/jobs/{accepted['id']}", headers=api.auth("alpha")).json()
    assert job["status"] == "queued"
    assert job["styles"] == ["playful"]
    assert job["variants_requested"] == 2


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"styles": ["gothic"]}, 422, "unknown_style"),
        ({"platforms": ["myspace"]}, 422, "unknown_platform"),
        ({"variants": 0}, 422, "variants_out_of_range"),
        ({"variants": 99}, 422, "variants_out_of_range"),
        ({"image_base64": base64.b64encode(b"plain text").decode()}, 422, "image_unreadable"),
        ({"image_base64": ""}, 422, "image_empty"),
        ({"image_base64": "***not base64***"}, 422, "invalid_request"),
        ({"image_base64": base64.b64encode(tiff()).decode()}, 422, "image_format_unsupported"),
        ({"image_base64": "data:image/png;base64," + base64.b64encode(png()).decode()}, 202, None),
        ({"surprise": 1}, 422, "invalid_request"),
        ({"image_url": "https://example.com/a.jpg"}, 422, "invalid_request"),  # two images
        ({"idempotency_key": "has space"}, 422, "invalid_request"),
        ({"idempotency_key": "k" * 256}, 422, "invalid_request"),
        ({"priority": 10}, 422, "invalid_request"),
        ({"brand_voice": "x" * 201}, 422, "invalid_request"),
    ],
    ids=[
        "style",
        "platform",
        "variants-0",
        "variants-99",
        "not-image",
        "empty",
        "bad-b64",
        "tiff",
        "data-url",
        "unknown-field",
        "two-images",
        "key-space",
        "key-long",
        "priority",
        "voice-long",
    ],
)
def test_bad_requests_get_a_stable_code(
    api: Api, overrides: dict[str, object], status: int, code: str | None
) -> None:
    response = api.http.post("/v1/jobs", json=body(**overrides), headers=api.auth("alpha"))
    assert response.status_code == status, response.text
    if code is not None:
        assert response.json()["error"]["code"] == code


def test_body_over_the_limit_is_413(api: Api) -> None:
    big = body(image_base64=base64.b64encode(b"\0" * 300_000).decode())
    response = api.http.post("/v1/jobs", json=big, headers=api.auth("alpha"))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize(
    ("headers", "status", "code"),
    [
        ({}, 401, "unauthorized"),
        ({"authorization": "Bearer cq_000000000000_nope"}, 401, "unauthorized"),
        ({"authorization": "Basic abc"}, 401, "unauthorized"),
    ],
    ids=["missing", "unknown", "wrong-scheme"],
)
def test_auth_is_required(api: Api, headers: dict[str, str], status: int, code: str) -> None:
    response = api.http.post("/v1/jobs", json=body(), headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_a_read_only_key_cannot_submit(api: Api) -> None:
    response = api.http.post("/v1/jobs", json=body(), headers=api.auth("alpha-read"))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"


def test_revoked_and_expired_keys_are_refused(api: Api) -> None:
    with session_scope(api.settings.database_url) as session:
        tenant = create_tenant(session=session, name="gamma")
        revoked, revoked_plain = create_api_key(session=session, tenant=tenant)
        expired, expired_plain = create_api_key(session=session, tenant=tenant)
        session.get(ApiKey, revoked.id).revoked_at = utcnow()  # type: ignore[union-attr]
        session.get(ApiKey, expired.id).expires_at = utcnow()  # type: ignore[union-attr]
    for plain in (revoked_plain, expired_plain):
        response = api.http.get("/v1/jobs", headers={"authorization": f"Bearer {plain}"})
        assert response.status_code == 401


def test_tenants_cannot_see_each_others_jobs(api: Api) -> None:
    job_id = api.http.post("/v1/jobs", json=body(), headers=api.auth("alpha")).json()["id"]
    response = api.http.get(f"/v1/jobs/{job_id}", headers=api.auth("beta"))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    listed = api.http.get("/v1/jobs", headers=api.auth("beta")).json()["jobs"]
    assert job_id not in {j["id"] for j in listed}
    # The same idempotency key in two tenants makes two jobs.
    a = api.http.post("/v1/jobs", json=body(idempotency_key="shared"), headers=api.auth("alpha"))
    b = api.http.post("/v1/jobs", json=body(idempotency_key="shared"), headers=api.auth("beta"))
    assert a.json()["id"] != b.json()["id"]


def test_idempotent_submission_over_http(api: Api) -> None:
    first = api.http.post("/v1/jobs", json=body(idempotency_key="po-7"), headers=api.auth("alpha"))
    again = api.http.post("/v1/jobs", json=body(idempotency_key="po-7"), headers=api.auth("alpha"))
    assert first.json()["id"] == again.json()["id"]
    assert first.json()["created"] is True
    assert again.json()["created"] is False
    other = api.http.post(
        "/v1/jobs", json=body(idempotency_key="po-7", variants=3), headers=api.auth("alpha")
    )
    assert other.status_code == 409  # a conflict with the earlier request, not a bad body
    assert other.json()["error"]["code"] == "idempotency_conflict"


def test_conflicts_are_409_with_their_own_codes(api: Api) -> None:
    job_id = api.http.post("/v1/jobs", json=body(), headers=api.auth("alpha")).json()["id"]
    with session_scope(api.settings.database_url) as session:
        assert [job.id for job in claim(session=session, job_ids=[job_id])] == [job_id]
    running = api.http.post(f"/v1/jobs/{job_id}/cancel", headers=api.auth("alpha"))
    assert running.status_code == 409
    assert running.json()["error"]["code"] == "job_not_cancellable"
    hook = {"url": "https://example.com/conflict-hook"}
    assert api.http.post("/v1/webhooks", json=hook, headers=api.auth("alpha")).status_code == 201
    again = api.http.post("/v1/webhooks", json=hook, headers=api.auth("alpha"))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "endpoint_exists"


def test_bulk_accepts_good_items_and_reports_bad_ones(api: Api) -> None:
    jobs = [body(), body(styles=["nope"]), body(variants=1)]
    response = api.http.post("/v1/jobs/bulk", json={"jobs": jobs}, headers=api.auth("alpha"))
    assert response.status_code == 202, response.text
    items = response.json()["jobs"]
    assert [i["index"] for i in items] == [0, 1, 2]
    assert items[0]["job"]["status"] == "queued"
    assert items[2]["job"]["status"] == "queued"
    assert items[1]["error"]["code"] == "unknown_style"
    too_many = api.http.post(
        "/v1/jobs/bulk", json={"jobs": [body()] * 6}, headers=api.auth("alpha")
    )
    assert too_many.status_code == 413
    assert too_many.json()["error"]["code"] == "payload_too_large"


def test_bulk_idempotency_keys_within_and_across_requests(api: Api) -> None:
    jobs = [
        body(idempotency_key="bulk-1"),
        body(idempotency_key="bulk-1"),  # the same key and body again: the same job
        body(idempotency_key="bulk-1", variants=3),  # the same key, another body
        body(idempotency_key="bulk-2"),
        body(),
    ]
    response = api.http.post("/v1/jobs/bulk", json={"jobs": jobs}, headers=api.auth("alpha"))
    assert response.status_code == 202, response.text
    items = response.json()["jobs"]
    assert items[0]["job"]["created"] is True
    assert items[1]["job"]["id"] == items[0]["job"]["id"]
    assert items[1]["job"]["created"] is False
    assert items[2]["error"]["code"] == "idempotency_conflict"
    assert items[3]["job"]["created"] is True
    assert {items[0]["job"]["status"], items[3]["job"]["status"]} == {"queued"}
    again = api.http.post(
        "/v1/jobs/bulk",
        json={"jobs": [body(idempotency_key="bulk-2"), body(idempotency_key="bulk-3")]},
        headers=api.auth("alpha"),
    ).json()["jobs"]
    assert again[0]["job"]["id"] == items[3]["job"]["id"]
    assert again[0]["job"]["created"] is False
    assert again[1]["job"]["created"] is True
    with session_scope(api.settings.database_url) as session:
        stored = session.exec(select(Job).where(col(Job.idempotency_key).like("bulk-%"))).all()
        assert sorted(j.idempotency_key for j in stored) == ["bulk-1", "bulk-2", "bulk-3"]


def test_a_key_taken_concurrently_falls_back_to_job_by_job(
    postgres_url: str, redis_db: str
) -> None:
    """A bulk request whose key another transaction inserts after the bulk read the keys
    (PostgreSQL: SQLite writers never interleave): its insert fails, and it creates job
    by job, the other transaction's job answering for that key."""
    settings = ApiSettings(database_url=postgres_url, redis_url=redis_db)
    with session_scope(postgres_url) as session:
        tenant = create_tenant(session=session, name="racer")
    request = JobRequest.model_validate(body(idempotency_key="raced"))
    other = JobRequest.model_validate(body())
    holder = Session(engine_for(postgres_url))
    holder.add(_job_row(tenant, request))
    holder.flush()  # the unique key is taken, not yet committed

    def commit_soon() -> None:
        time.sleep(0.5)
        holder.commit()

    committer = threading.Thread(target=commit_soon)
    committer.start()
    with Session(engine_for(postgres_url)) as session:
        outcomes = submit_many(
            session=session, settings=settings, tenant=tenant, requests=[request, other]
        )
    committer.join()
    holder.close()
    assert isinstance(outcomes[0], RequestError)  # the other request's job, not yet published
    assert outcomes[0].code == ErrorCode.idempotency_in_progress
    assert isinstance(outcomes[1], Submitted)
    assert outcomes[1].status == JobStatus.queued


def _job_row(tenant: Tenant, request: JobRequest) -> Job:
    return Job(
        tenant_id=tenant.id,
        image_url=None,
        styles=list(request.styles),
        platforms=list(request.platforms),
        variants=request.variants,
        idempotency_key=request.idempotency_key,
        request_hash=request_hash(request),
        meta={},
    )


def test_listing_paginates_newest_first_and_filters_by_status(api: Api) -> None:
    with session_scope(api.settings.database_url) as session:
        tenant = create_tenant(session=session, name="delta")
        key = create_api_key(session=session, tenant=tenant)[1]
    auth = {"authorization": f"Bearer {key}"}
    made = [api.http.post("/v1/jobs", json=body(), headers=auth).json()["id"] for _ in range(5)]
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2, "status": "queued", **({"cursor": cursor} if cursor else {})}
        page = api.http.get("/v1/jobs", params=params, headers=auth).json()
        seen += [j["id"] for j in page["jobs"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(made))
    assert api.http.get("/v1/jobs", params={"status": "failed"}, headers=auth).json()["jobs"] == []
    bad = api.http.get("/v1/jobs", params={"cursor": "!!!"}, headers=auth)
    assert bad.status_code == 422
    assert api.http.get("/v1/jobs", params={"status": "weird"}, headers=auth).status_code == 422


def test_openapi_is_served(api: Api) -> None:
    spec = api.http.get("/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/bulk", "/v1/jobs/{job_id}"} <= set(spec["paths"])


def test_multipart_upload_submits_the_file(api: Api) -> None:
    job = json.dumps({"styles": ["luxury"], "platforms": ["x"], "variants": 1})
    sent = api.http.post(
        "/v1/jobs/upload",
        files={"image": ("shoe.png", png(), "image/png")},
        data={"job": job},
        headers=api.auth("alpha"),
    )
    assert sent.status_code == 202, sent.text
    read = api.http.get(f"/v1/jobs/{sent.json()['id']}", headers=api.auth("alpha")).json()
    assert read["styles"] == ["luxury"]


@pytest.mark.parametrize(
    ("image", "job", "status", "code"),
    [
        (tiff(), {"styles": ["luxury"], "platforms": ["x"]}, 422, "image_format_unsupported"),
        (png(), {"styles": ["nope"], "platforms": ["x"]}, 422, "unknown_style"),
        (
            png(),
            {"styles": ["luxury"], "platforms": ["x"], "image_url": "x"},
            422,
            "invalid_request",
        ),
        (png(), ["not", "an", "object"], 422, "invalid_request"),
        (b"", {"styles": ["luxury"], "platforms": ["x"]}, 422, "image_empty"),
    ],
    ids=["tiff", "style", "two-images", "not-object", "empty"],
)
def test_multipart_upload_refuses_bad_parts(
    api: Api, image: bytes, job: object, status: int, code: str
) -> None:
    sent = api.http.post(
        "/v1/jobs/upload",
        files={"image": ("x.png", image, "image/png")},
        data={"job": json.dumps(job)},
        headers=api.auth("alpha"),
    )
    assert sent.status_code == status, sent.text
    assert sent.json()["error"]["code"] == code


def test_multipart_image_over_the_cap_is_413(database_url: str, redis_db: str) -> None:
    settings = ApiSettings(database_url=database_url, redis_url=redis_db, image_max_bytes=1000)
    with session_scope(database_url) as session:
        tenant = create_tenant(session=session, name="uploader")
        key = create_api_key(session=session, tenant=tenant)[1]
    with TestClient(create_app(settings)) as http:
        sent = http.post(
            "/v1/jobs/upload",
            files={"image": ("big.png", png(size=(400, 400)) + b"\0" * 2000, "image/png")},
            data={"job": json.dumps({"styles": ["luxury"], "platforms": ["x"]})},
            headers={"authorization": f"Bearer {key}"},
        )
    assert sent.status_code == 413
    assert sent.json()["error"]["code"] == "image_too_large"


def _last_used(api: Api, who: str) -> datetime | None:
    prefix = api.keys[who].split("_")[1]
    with session_scope(api.settings.database_url) as session:
        key = session.exec(select(ApiKey).where(ApiKey.prefix == prefix)).one()
        return key.last_used_at


def _set_last_used(api: Api, who: str, at: datetime) -> None:
    prefix = api.keys[who].split("_")[1]
    with session_scope(api.settings.database_url) as session:
        key = session.exec(select(ApiKey).where(ApiKey.prefix == prefix)).one()
        key.last_used_at = at
        session.add(key)


def test_a_keys_use_is_recorded_at_most_once_a_minute(api: Api) -> None:
    _set_last_used(api, "beta", utcnow() - timedelta(minutes=5))
    before = utcnow()
    assert api.http.get("/v1/styles", headers=api.auth("beta")).status_code == 200
    recorded = _last_used(api, "beta")
    assert recorded is not None
    assert recorded >= before - timedelta(seconds=1)
    assert api.http.get("/v1/styles", headers=api.auth("beta")).status_code == 200
    assert _last_used(api, "beta") == recorded  # within the minute: not written again
    refused = api.http.get("/v1/keys", headers=api.auth("beta"))  # lacks the admin scope
    assert refused.status_code == 403
    assert _last_used(api, "beta") == recorded


def test_reads_wait_for_no_writer(api: Api) -> None:
    """Authenticating and the routes that only read take no write lock (a key's use is
    written once a minute at most): with the database held by another writer (SQLite's
    one write lock; on PostgreSQL, the rows read), they answer at once. They used to
    queue behind the writer on SQLite, up to the 30 s busy timeout, and answer 503."""
    url = api.settings.database_url
    created = api.http.post("/v1/jobs", json=body(), headers=api.auth("alpha"))
    job_id = created.json()["id"]
    prefix = api.keys["alpha"].split("_")[1]
    with session_scope(url) as session:
        alpha = session.exec(select(Tenant).where(Tenant.name == "alpha")).one()
        review_key = create_api_key(session=session, tenant=alpha, scopes=["review"])[1]
    reviewer = {"authorization": f"Bearer {review_key}"}
    decisions = f"/v1/review/jobs/{job_id}/decisions"
    assert api.http.get(decisions, headers=reviewer).status_code == 200  # its use recorded
    if url.startswith("sqlite"):
        writer: Any = sqlite3.connect(url.removeprefix("sqlite:///"))
        writer.execute("BEGIN IMMEDIATE")
    else:
        writer = psycopg.connect(url.replace("postgresql+psycopg", "postgresql"))
        writer.execute("SELECT 1 FROM apikey WHERE prefix = %s FOR UPDATE", (prefix,))
        writer.execute("SELECT 1 FROM job WHERE id = %s FOR UPDATE", (job_id,))
    answers, waited_s = [], []
    paths = ("/v1/styles", f"/v1/jobs/{job_id}", "/v1/jobs", "/v1/webhooks/deliveries")
    reads = [(path, api.auth("alpha")) for path in paths]
    try:
        for path, auth in [*reads, (decisions, reviewer)]:
            started = time.monotonic()
            answers.append((path, api.http.get(path, headers=auth).status_code))
            waited_s.append(time.monotonic() - started)
    finally:
        writer.rollback()
        writer.close()
    assert all(status == 200 for _, status in answers), answers
    assert max(waited_s) < 5


def test_a_keys_use_that_cannot_be_written_does_not_refuse_the_request(
    api: Api, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Writing a key's last use is best effort: with the database away (or SQLite's lock
    held past its busy timeout) the request is answered, one line says so, and the next
    request writes it."""
    from producers.api import deps

    stale = utcnow() - timedelta(minutes=5)
    _set_last_used(api, "beta", stale)

    def locked(**_: object) -> None:
        locked_out = sqlite3.OperationalError("database is locked")
        raise OperationalError("UPDATE apikey", {}, locked_out)

    monkeypatch.setattr(deps, "record_use", locked)
    with caplog.at_level(logging.WARNING, logger="captionq.api"):
        answer = api.http.get("/v1/styles", headers=api.auth("beta"))
    assert answer.status_code == 200
    assert _last_used(api, "beta") == stale
    [line] = [r for r in caplog.records if "last use is not recorded" in r.getMessage()]
    assert line.exc_info is None
    monkeypatch.undo()
    assert api.http.get("/v1/styles", headers=api.auth("beta")).status_code == 200
    recorded = _last_used(api, "beta")
    assert recorded is not None
    assert recorded > stale


def test_a_bulk_requests_jobs_are_listed_in_the_order_submitted(api: Api) -> None:
    jobs = [body(metadata={"n": n}) for n in range(5)]
    response = api.http.post("/v1/jobs/bulk", json={"jobs": jobs}, headers=api.auth("beta"))
    assert response.status_code == 202, response.text
    ids = [item["job"]["id"] for item in response.json()["jobs"]]
    listed = api.http.get("/v1/jobs", params={"limit": 5}, headers=api.auth("beta")).json()
    assert [job["id"] for job in listed["jobs"]] == ids[::-1]  # newest first
