"""The HTTP SDK against a served API: every route of the OpenAPI is a method, results
are the API's models, refusals one error with the code; the async client alike."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest

from producers.api.serve import Served
from producers.client import ApiError, ApiUnreachableError, AsyncCaptionClient, CaptionClient
from schemas.accounts import KeyCreated, TenantPolicyPublic, UsagePage
from schemas.api import JobAccepted, JobPublic, PlatformCatalogue, StyleCatalogue
from schemas.errors import ErrorCode
from schemas.settings import ApiSettings
from schemas.store.sessions import session_scope
from schemas.tables import Job, JobStatus, Variant, utcnow
from tests.support.api import TenantKey, new_tenant, served_api
from tests.support.images import png

JOB = {"styles": ["minimal"], "platforms": ["x"], "variants": 1}


class Recording(httpx.HTTPTransport):
    """Every request the SDK sends, as (method, path)."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.method, request.url.path))
        return super().handle_request(request)


@pytest.fixture(scope="module")
def world(database_url: str, redis_db: str) -> Iterator[tuple[Served, TenantKey, ApiSettings]]:
    settings = ApiSettings(database_url=database_url, redis_url=redis_db)
    tenant = new_tenant(settings, "integrator")
    with served_api(settings) as api:
        yield api, tenant, settings


def _decided_job(settings: ApiSettings, job_id: str, n: int) -> list[str]:
    """The job as a worker leaves it: succeeded, with ``n`` variants waiting for review."""
    with session_scope(settings.database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status, job.finished_at, job.caption = JobStatus.succeeded, utcnow(), "a shoe"
        variants = [
            Variant(job_id=job_id, style="minimal", platform="x", index=i, text=f"shoe {i}",
                    quality_score=0.5)
            for i in range(n)
        ]  # fmt: skip
        session.add_all([job, *variants])
        session.flush()
        return [v.id for v in variants]


def _every_route(client: CaptionClient, settings: ApiSettings) -> None:
    assert isinstance(client.styles(), StyleCatalogue)
    assert isinstance(client.platforms(), PlatformCatalogue)
    assert isinstance(client.tenant_policy(), TenantPolicyPublic)
    assert isinstance(client.usage(), UsagePage)
    first = client.submit(image=png(), **JOB)
    uploaded = client.upload(image=png(), filename="shoe.png", **JOB)
    bulk = client.submit_bulk([{"image": png(), **JOB}] * 2)
    assert all(isinstance(a, JobAccepted) for a in [first, uploaded, *bulk])
    assert isinstance(client.get(first), JobPublic)
    assert {first.id, uploaded.id} <= {j.id for j in client.list(limit=10).jobs}
    assert client.cancel(uploaded).status == "cancelled"
    client.delete(bulk[1].id)
    endpoint = client.create_endpoint("https://hooks.example.com/captionq")
    assert endpoint.secret.startswith("whsec_")
    assert [e.id for e in client.endpoints()] == [endpoint.id]
    assert client.rotate_endpoint(endpoint.id).secret != endpoint.secret
    assert client.disable_endpoint(endpoint.id).disabled
    assert not client.enable_endpoint(endpoint.id).disabled
    ping = client.ping_endpoint(endpoint.id)
    assert client.delivery(ping.id).event_type == "webhook.ping"
    assert ping.id in {d.id for d in client.deliveries()}
    assert client.replay(ping.id).id == ping.id
    assert client.replay_dead() == {"replayed": 0}
    client.delete_endpoint(endpoint.id)
    one, two, three, four = _decided_job(settings, first.id, 4)
    assert [j.job_id for j in client.review_queue(limit=5).jobs] == [first.id]
    assert client.approve(one, note="fine").decision.action == "approved"
    assert client.reject(two, reason="off_brand").decision.action == "rejected"
    assert client.edit(three, "A shoe.").variant.text == "A shoe."
    assert [d.variant_id for d in client.approve_job(first).decisions] == [four]
    assert len(client.decisions(first).decisions) == 4
    (item,) = client.bulk_approve([one]).items
    assert item.error is not None
    assert item.error.code == "already_decided"
    created = client.create_key(scopes=["read"], expires_at=utcnow() + timedelta(days=1))
    assert isinstance(created, KeyCreated)
    assert created.prefix in {k.prefix for k in client.list_keys()}
    assert client.set_key_expiry(created.prefix, None).expires_at is None
    assert client.revoke_key(created.prefix).state == "revoked"


def test_every_route_of_the_openapi_is_a_method_of_the_sdk(
    world: tuple[Served, TenantKey, ApiSettings],
) -> None:
    api, tenant, settings = world
    recording = Recording()
    with CaptionClient(api.url, api_key=tenant.key, transport=recording) as client:
        _every_route(client, settings)
    documented = {
        (method.upper(), path)
        for path, operations in api.server.config.app.openapi()["paths"].items()
        for method in operations
    }
    called = {_route(documented, method, path) for method, path in recording.sent}
    assert documented - called == set()


def _route(documented: set[tuple[str, str]], method: str, path: str) -> tuple[str, str] | None:
    """The documented route a request went to: a literal path before a templated one."""
    matches = [
        (m, template)
        for m, template in documented
        if m == method and re.fullmatch(re.sub(r"\{[^}]+\}", "[^/]+", template), path)
    ]
    return min(matches, key=lambda route: route[1].count("{"), default=None)


def test_a_refusal_is_one_error_with_the_code_the_status_and_the_detail(
    world: tuple[Served, TenantKey, ApiSettings],
) -> None:
    api, tenant, _ = world
    with CaptionClient(api.url, api_key=tenant.key) as client:
        with pytest.raises(ApiError) as unknown:
            client.submit(image=png(), styles=["gothic"], platforms=["x"])
        assert (unknown.value.code, unknown.value.status) == (ErrorCode.unknown_style, 422)
        with pytest.raises(ApiError) as missing:
            client.get("job_nope")
        assert (missing.value.code, missing.value.status) == (ErrorCode.not_found, 404)
        with pytest.raises(ApiError) as shape:
            client.submit(image=png(), styles=["minimal"], platforms=["x"], variants="3")  # type: ignore[arg-type]
        assert shape.value.code == ErrorCode.invalid_request
        assert shape.value.detail[0]["loc"] == ["body", "variants"]
    with CaptionClient(api.url, api_key="cq_nope_nope") as stranger:
        with pytest.raises(ApiError) as refused:
            stranger.list()
        assert (refused.value.code, refused.value.status) == (ErrorCode.unauthorized, 401)
    with CaptionClient("http://127.0.0.1:1", retries=1, max_retry_wait_s=0.01) as nowhere:
        with pytest.raises(ApiUnreachableError) as away:
            nowhere.list()
        assert away.value.code == ErrorCode.api_unavailable


def test_the_async_client_has_the_same_methods(
    world: tuple[Served, TenantKey, ApiSettings],
) -> None:
    api, tenant, _ = world

    async def use() -> tuple[Any, ...]:
        async with AsyncCaptionClient(api.url, api_key=tenant.key) as client:
            accepted = await client.submit(image=png(), **JOB, idempotency_key="async-1")
            again = await client.submit(image=png(), **JOB, idempotency_key="async-1")
            found, styles = await asyncio.gather(client.get(accepted), client.styles())
            try:
                await client.get("job_nope")
            except ApiError as exc:
                return accepted, again, found, styles, exc
            raise AssertionError("no error for a job that does not exist")

    # Its own thread and loop: a browser test's Playwright may hold this thread's loop.
    with ThreadPoolExecutor(max_workers=1) as thread:
        accepted, again, found, styles, error = thread.submit(asyncio.run, use()).result()
    assert (again.id, again.created) == (accepted.id, False)
    assert found.id == accepted.id
    assert "playful" in {s.name for s in styles.styles}
    assert error.code == ErrorCode.not_found
