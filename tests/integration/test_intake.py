"""Intake defects found by hostile testing, on SQLite and PostgreSQL alike.

Each test names the defect it pins: values PostgreSQL cannot store, callback URLs
checked at submission, oversized chunked bodies, Redis away at submission, and the
messages a client reads.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import col, func, select

from producers.api import create_app
from producers.sdk.calls import job_fields
from producers.submit import Submitted, submit_many
from schemas.api import JobRequest
from schemas.errors import ErrorCode
from schemas.settings import ApiSettings, CoreSettings
from schemas.store.sessions import read_scope, session_scope
from schemas.store.tenants import create_api_key, create_tenant, tenant_by_name
from schemas.tables import Job, JobStatus, WebhookEndpoint
from tests.support.images import png

DEAD_REDIS = "redis://127.0.0.1:1/0"  # nothing listens on port 1


@dataclass
class Api:
    http: TestClient
    settings: ApiSettings
    auth: dict[str, str]
    tenant_id: str

    def jobs(self) -> int:
        with read_scope(self.settings.database_url) as session:
            query = select(func.count()).select_from(Job).where(Job.tenant_id == self.tenant_id)
            return int(session.exec(query).one())


def _api(database_url: str, redis_url: str, name: str) -> Iterator[Api]:
    settings = ApiSettings(
        database_url=database_url, redis_url=redis_url, request_max_bytes=100_000
    )
    with session_scope(database_url) as session:
        tenant = create_tenant(session=session, name=name)
        key = create_api_key(session=session, tenant=tenant)[1]
        tenant_id = tenant.id
    with TestClient(create_app(settings), raise_server_exceptions=False) as http:
        yield Api(http, settings, {"authorization": f"Bearer {key}"}, tenant_id)


@pytest.fixture(scope="module")
def api(database_url: str, redis_db: str) -> Iterator[Api]:
    yield from _api(database_url, redis_db, "intake")


def job(**overrides: object) -> dict[str, object]:
    return {
        "image_base64": base64.b64encode(png()).decode(),
        "styles": ["playful"],
        "platforms": ["instagram"],
        "variants": 1,
        **overrides,
    }


def post_raw(api: Api, path: str, text: str):  # type: ignore[no-untyped-def]
    headers = {**api.auth, "content-type": "application/json"}
    return api.http.post(path, content=text.encode(), headers=headers)


# 1. Values PostgreSQL refuses are refused at the edge, on both databases alike.
@pytest.mark.parametrize(
    ("raw", "code", "where"),
    [
        ('"metadata": {"n": NaN}', "invalid_request", "metadata.n"),
        ('"metadata": {"n": Infinity}', "invalid_request", "metadata.n"),
        ('"metadata": {"a\\u0000b": 1}', "invalid_request", "metadata key"),
        ('"metadata": {"n": "a\\u0000b"}', "invalid_request", "metadata.n"),
        ('"brand_voice": "a\\u0000b"', "invalid_request", "brand_voice"),
        ('"callback_url": "http://a/\\u0000"', "url_invalid", "callback_url"),
    ],
)
def test_unstorable_values_are_refused_with_a_code(
    api: Api, raw: str, code: str, where: str
) -> None:
    before = api.jobs()
    text = json.dumps(job())[:-1] + ", " + raw + "}"
    response = post_raw(api, "/v1/jobs", text)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert (error["code"], where in error["message"]) == (code, True), error
    assert api.jobs() == before


def test_bulk_judges_an_unstorable_item_on_its_own(api: Api) -> None:
    good = json.dumps(job())
    nan = json.dumps(job())[:-1] + ', "metadata": {"n": NaN}}'
    nul = json.dumps(job(brand_voice="a\u0000b"))
    response = post_raw(api, "/v1/jobs/bulk", f'{{"jobs": [{good}, {nan}, {nul}, {good}]}}')
    assert response.status_code == 202, response.text
    items = response.json()["jobs"]
    assert [bool(item["job"]) for item in items] == [True, False, False, True]
    assert [item["error"]["code"] for item in items[1:3]] == ["invalid_request"] * 2


# 2. Callback URLs are checked at submission, with the endpoints' guard, and become
#    the tenant's endpoints there (never in a worker).
@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("http://169.254.169.254/latest/meta-data/", "url_blocked"),
        ("http://10.0.0.1/hook", "url_blocked"),
        ("ftp://example/x", "url_invalid"),
        ("AAA", "url_invalid"),
    ],
)
def test_a_callback_url_the_guard_refuses_is_refused_at_submission(
    api: Api, url: str, code: str
) -> None:
    response = api.http.post("/v1/jobs", json=job(callback_url=url), headers=api.auth)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    endpoints = api.http.post("/v1/webhooks", json={"url": url}, headers=api.auth)
    assert endpoints.json()["error"]["code"] == code


def test_a_callback_url_becomes_an_endpoint_at_submission(api: Api) -> None:
    url = "https://hooks.example.com/captionq?x=1"
    response = api.http.post("/v1/jobs", json=job(callback_url=url), headers=api.auth)
    assert response.status_code == 202, response.text
    listed = api.http.get("/v1/webhooks", headers=api.auth).json()
    assert [e["url"] for e in listed].count(url) == 1
    again = api.http.post("/v1/jobs", json=job(callback_url=url), headers=api.auth)
    assert again.status_code == 202
    with read_scope(api.settings.database_url) as session:
        count = session.exec(
            select(func.count()).select_from(WebhookEndpoint).where(WebhookEndpoint.url == url)
        ).one()
    assert count == 1


# 4. A body over the cap is 413 whether or not it declares its length.
def test_an_oversized_chunked_body_is_413(api: Api) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"jobs": ['
        for _ in range(20):
            yield b"x" * 10_000

    response = api.http.post(
        "/v1/jobs/bulk", content=chunks(), headers={**api.auth, "content-type": "application/json"}
    )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"


def test_a_chunked_body_under_the_cap_is_read_whole(api: Api) -> None:
    text = json.dumps(job()).encode()

    def chunks() -> Iterator[bytes]:
        for at in range(0, len(text), 100):
            yield text[at : at + 100]

    response = api.http.post(
        "/v1/jobs", content=chunks(), headers={**api.auth, "content-type": "application/json"}
    )
    assert response.status_code == 202, response.text


# 5. Redis away at submission.
@pytest.fixture(scope="module")
def api_without_redis(database_url: str) -> Iterator[Api]:
    yield from _api(database_url, DEAD_REDIS, "intake-no-redis")


def test_admission_without_redis_is_503_with_the_envelope_and_writes_nothing(
    api_without_redis: Api,
) -> None:
    api = api_without_redis
    response = api.http.post("/v1/jobs", json=job(idempotency_key="k-503"), headers=api.auth)
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "broker_unavailable"
    assert int(response.headers["retry-after"]) >= 1
    assert api.jobs() == 0


def test_a_committed_job_is_accepted_while_the_broker_is_away(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Submission past admission (the broker went away after it): once the row is
    committed the job is accepted as ``received`` (the reaper publishes it later), and a
    retry with the same idempotency key finds it rather than making a second (past the
    short window in which a replay answers ``idempotency_in_progress``)."""
    from schemas.store import jobs

    monkeypatch.setattr(jobs, "IDEMPOTENCY_IN_PROGRESS_S", 0.0)
    submit = submitter(database_url, "broker-away")
    first = submit(image=png(), styles=["playful"], platforms=["x"], idempotency_key="away-1")
    assert first.status == JobStatus.received
    again = submit(image=png(), styles=["playful"], platforms=["x"], idempotency_key="away-1")
    assert (again.job_id, again.created) == (first.job_id, False)


def submitter(database_url: str, name: str) -> Callable[..., Submitted]:
    """Submits one job for a new tenant ``name`` past admission, with the broker away."""
    settings = CoreSettings(database_url=database_url, redis_url=DEAD_REDIS)
    with session_scope(database_url) as session:
        create_tenant(session=session, name=name)

    def submit(**job: Any) -> Submitted:
        with session_scope(database_url) as session:
            tenant = tenant_by_name(session=session, name=name)
            assert tenant is not None
            request = JobRequest(**job_fields(job))
            (outcome,) = submit_many(
                session=session, settings=settings, tenant=tenant, requests=[request]
            )
        assert isinstance(outcome, Submitted), outcome
        return outcome

    return submit


# 6. What a client reads.
def test_an_unreadable_image_says_so_without_object_reprs(api: Api) -> None:
    garbage = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64).decode()
    response = api.http.post("/v1/jobs", json=job(image_base64=garbage), headers=api.auth)
    assert response.status_code == 422, response.text
    message = response.json()["error"]["message"]
    assert " at 0x" not in message, message
    assert "<" not in message, message


def test_a_job_cancelled_between_attempts_does_not_say_it_never_ran(database_url: str) -> None:
    from schemas.store.jobs import cancel_job, claim, requeue

    submit = submitter(database_url, "cancel-between")
    job_id = submit(image=png(), styles=["playful"], platforms=["x"]).job_id
    with session_scope(database_url) as session:
        tenant_id = session.get(Job, job_id).tenant_id  # type: ignore[union-attr]
        [claimed] = claim(session=session, job_ids=[job_id])
        assert requeue(session=session, job_id=job_id, attempt=claimed.attempts)
        cancelled = cancel_job(session=session, tenant_id=tenant_id, job_id=job_id)
        assert cancelled.error_message == "cancelled while waiting to be tried again"
    never = submit(image=png(), styles=["playful"], platforms=["x"]).job_id
    with session_scope(database_url) as session:
        cancelled = cancel_job(session=session, tenant_id=tenant_id, job_id=never)
        assert cancelled.error_message == "cancelled before it ran"


def test_ping_timestamps_end_in_z_like_job_events(api: Api) -> None:
    from schemas.store.outbox import create_ping
    from schemas.tables import Delivery

    created = api.http.post(
        "/v1/webhooks", json={"url": "https://ping.example.com/hook"}, headers=api.auth
    ).json()
    with session_scope(api.settings.database_url) as session:
        endpoint = session.get(WebhookEndpoint, created["id"])
        assert endpoint is not None
        ping = create_ping(session=session, endpoint=endpoint)
        row = session.get(Delivery, ping.id)
        assert row is not None
        assert json.loads(row.payload)["timestamp"].endswith("Z")
    with read_scope(api.settings.database_url) as session:
        assert session.exec(select(Job).where(col(Job.id) == "none")).first() is None


# 3. One port rule for image and callback URLs: 80 and 443 unless configured.
@pytest.mark.parametrize(
    "url", ["https://hooks.example.com:8443/cb", "http://hooks.example.com:25/"]
)
def test_callback_ports_follow_the_one_documented_rule(api: Api, url: str) -> None:
    submitted = api.http.post("/v1/jobs", json=job(callback_url=url), headers=api.auth)
    assert (submitted.status_code, submitted.json()["error"]["code"]) == (422, "url_blocked")
    endpoint = api.http.post("/v1/webhooks", json={"url": url}, headers=api.auth)
    assert (endpoint.status_code, endpoint.json()["error"]["code"]) == (422, "url_blocked")
    image = api.http.post("/v1/jobs", json=job(image_base64=None, image_url=url), headers=api.auth)
    assert image.json()["error"]["code"] == "url_blocked"


def test_the_sender_refuses_a_port_outside_the_rule_for_good() -> None:
    from worker.sender import Sender

    with Sender(
        "https://hooks.example.com:8443/cb", secrets=["whsec_" + "a" * 32], timeout_s=1.0
    ) as sender:
        result = sender.post(msg_id="msg_1", body="{}")
    assert result.refused
    assert (result.error or "").startswith("url_blocked")


# 6. An event the endpoint does not subscribe to is not a delivery at all.
def test_events_an_endpoint_does_not_want_are_not_written(api: Api) -> None:
    from schemas.api import VariantBase
    from schemas.store.endpoints import create_endpoint
    from schemas.store.jobs import claim
    from schemas.store.results import (
        Completed,
        complete_failed,
        job_subscriptions,
        prepare_succeeded,
        store_prepared,
    )
    from schemas.tables import Delivery

    url = "https://failures-only.example.com/hook"
    with session_scope(api.settings.database_url) as session:
        create_endpoint(
            session=session, tenant_id=api.tenant_id, url=url, key=None, event_types=["job.failed"]
        )
    ids = [
        api.http.post("/v1/jobs", json=job(callback_url=url), headers=api.auth).json()["id"]
        for _ in range(2)
    ]
    variant = VariantBase(
        style="playful",
        platform="instagram",
        index=0,
        text="Hi",
        quality_score=0.5,
        quality_parts={},
        flags=(),
        review_state="pending_review",
        provenance={},
    )
    with session_scope(api.settings.database_url) as session:
        claimed = claim(session=session, job_ids=ids)
        done = Completed(
            job_id=ids[0], caption="c", model_id="m", model_revision=None, variants=[variant]
        )
        prepared = prepare_succeeded(results=[done], jobs=claimed,
                                     subscribed_to=job_subscriptions(session, claimed))
        stored = store_prepared(session=session, prepared=prepared)
        assert (stored.job_ids, stored.deliveries) == ([ids[0]], [])
        failed = complete_failed(
            session=session, job_id=ids[1], code=ErrorCode.model_error, message="broke"
        )
        assert failed.moved
        assert failed.delivery is not None
    with read_scope(api.settings.database_url) as session:
        rows = session.exec(select(Delivery).where(col(Delivery.job_id).in_(ids))).all()
        assert [(r.job_id, r.event_type) for r in rows] == [(ids[1], "job.failed")]


# 7. The schema says what the server does.
NOT_JSON = ['{"styles": ["playful"], ', "not json at all", '{"jobs": [}']


@pytest.mark.parametrize("text", NOT_JSON, ids=["cut", "prose", "bad"])
def test_a_body_that_is_not_json_is_400_invalid_json_as_documented(api: Api, text: str) -> None:
    for path in ("/v1/jobs", "/v1/jobs/bulk"):
        response = post_raw(api, path, text)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["code"] == "invalid_json"
    responses = api.http.get("/openapi.json").json()["paths"]["/v1/jobs"]["post"]["responses"]
    assert "invalid_json" in responses["400"]["description"]


def test_a_whole_number_written_as_a_float_is_the_integer_json_schema_says_it_is(
    api: Api,
) -> None:
    accepted = api.http.post("/v1/jobs", json=job(variants=2.0, priority=7.0), headers=api.auth)
    assert accepted.status_code == 202, accepted.text
    with read_scope(api.settings.database_url) as session:
        stored = session.get(Job, accepted.json()["id"])
        assert stored is not None
        assert (stored.variants, stored.priority) == (2, 7)
    for bad in (2.5, "2", True):
        refused = api.http.post("/v1/jobs", json=job(variants=bad), headers=api.auth)
        assert refused.status_code == 422, (bad, refused.text)


def test_the_schema_lists_the_catalogue_and_types_the_upload_job_field(api: Api) -> None:
    schema = api.http.get("/openapi.json").json()
    fields = schema["components"]["schemas"]["JobRequest"]["properties"]
    assert fields["styles"]["items"]["enum"] == sorted(["informative", "inspirational", "luxury",
        "minimal", "playful", "professional", "promotional"])  # fmt: skip
    assert "instagram" in fields["platforms"]["items"]["enum"]
    assert (fields["variants"]["minimum"], fields["variants"]["maximum"]) == (1, 10)
    upload = schema["paths"]["/v1/jobs/upload"]["post"]["requestBody"]["content"]
    form = upload["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[1]
    job_field = schema["components"]["schemas"][form]["properties"]["job"]
    assert job_field["contentMediaType"] == "application/json"
    assert job_field["contentSchema"] == {"$ref": "#/components/schemas/JobFields"}
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert set(schema["webhooks"]) == {
        "job.succeeded", "job.failed", "caption.approved", "caption.rejected"
    }  # fmt: skip


def test_status_url_starts_with_public_base_url(database_url: str, redis_db: str) -> None:
    settings = ApiSettings(
        database_url=database_url, redis_url=redis_db, public_base_url="https://captionq.example/"
    )
    with session_scope(database_url) as session:
        key = create_api_key(session=session, tenant=create_tenant(session=session, name="pub"))[1]
    with TestClient(create_app(settings)) as http:
        answer = http.post("/v1/jobs", json=job(), headers={"authorization": f"Bearer {key}"})
    job_id = answer.json()["id"]
    assert answer.json()["status_url"] == f"https://captionq.example/v1/jobs/{job_id}"
    assert answer.headers["location"] == answer.json()["status_url"]
