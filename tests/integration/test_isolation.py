"""Tenant isolation over every route of the API: tenant B, holding every scope, can
neither read, list nor change tenant A's jobs, endpoints, deliveries, variants or keys.

The routes are enumerated from the application, so a new route with a path
parameter fails this test until it is covered here.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from producers.api import create_app
from schemas.settings import ApiSettings
from schemas.store.sessions import session_scope
from schemas.store.tenants import SCOPES, create_api_key, create_tenant
from schemas.tables import Delivery, DeliveryStatus, Job, Variant
from tests.support.images import png

PARAMETERS = {
    "job_id": "job",
    "endpoint_id": "endpoint",
    "delivery_id": "delivery",
    "variant_id": "variant",
    "prefix": "key",
}


@pytest.fixture(scope="module")
def world(database_url: str, redis_db: str) -> Iterator[tuple[TestClient, dict, dict, dict]]:
    settings = ApiSettings(database_url=database_url, redis_url=redis_db)
    keys, prefixes = {}, {}
    with session_scope(database_url) as session:
        for name in ("tenant-a", "tenant-b"):
            tenant = create_tenant(session=session, name=name)
            key, plaintext = create_api_key(session=session, tenant=tenant, scopes=SCOPES)
            keys[name] = {"authorization": f"Bearer {plaintext}"}
            prefixes[name] = key.prefix
    with TestClient(create_app(settings)) as http:
        a = keys["tenant-a"]
        job = http.post(
            "/v1/jobs",
            json={
                "image_base64": base64.b64encode(png()).decode(),
                "styles": ["minimal"],
                "platforms": ["x"],
                "variants": 1,
            },
            headers=a,
        ).json()["id"]
        endpoint = http.post(
            "/v1/webhooks", json={"url": "https://hooks.example.com/a"}, headers=a
        ).json()["id"]
        with session_scope(database_url) as session:
            owner = session.get(Job, job)
            assert owner is not None
            delivery = Delivery(
                tenant_id=owner.tenant_id,
                job_id=job,
                event_type="job.failed",
                url="https://hooks.example.com/a",
                payload="{}",
                status=DeliveryStatus.dead,
            )
            # A variant waiting for review, as a worker would leave it.
            variant = Variant(
                job_id=job, style="minimal", platform="x", index=0, text="A", quality_score=0.5
            )
            session.add_all([delivery, variant])
            session.flush()
            ids = {"job": job, "endpoint": endpoint, "delivery": delivery.id, "variant": variant.id,
                   "key": prefixes["tenant-a"]}  # fmt: skip
        yield http, keys["tenant-a"], keys["tenant-b"], ids


def routes() -> list[tuple[str, str]]:
    """(path, METHOD) of every route the API documents."""
    app = create_app(ApiSettings(database_url="sqlite://", redis_url="redis://unset"))
    return [
        (path, method.upper())
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    ]


def with_ids(path: str, ids: dict[str, str]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in PARAMETERS, f"route {path}: add {{{name}}} to this test's PARAMETERS"
        return ids[PARAMETERS[name]]

    return re.sub(r"\{(\w+)\}", fill, path)


def call(http: TestClient, method: str, path: str, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    return http.request(
        method, path, headers=headers, json={} if method in {"POST", "PUT", "PATCH"} else None
    )


OWNED = [(path, method) for path, method in routes() if "{" in path]
LISTS = [path for path, method in routes() if "{" not in path and method == "GET"]


@pytest.mark.parametrize(("path", "method"), OWNED, ids=[f"{m} {p}" for p, m in OWNED])
def test_another_tenant_gets_404_on_every_route_that_names_a_resource(
    world: tuple[TestClient, dict, dict, dict], path: str, method: str
) -> None:
    http, _, b, ids = world
    response = call(http, method, with_ids(path, ids), b)
    assert response.status_code == 404, (method, path, response.status_code, response.text)
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", LISTS)
def test_lists_show_another_tenant_nothing_of_a(
    world: tuple[TestClient, dict, dict, dict], path: str
) -> None:
    http, a, b, ids = world
    seen_by_b = call(http, "GET", path, b).text
    assert all(value not in seen_by_b for value in ids.values()), (path, seen_by_b)


def test_the_owner_still_sees_and_changes_its_own(
    world: tuple[TestClient, dict, dict, dict],
) -> None:
    http, a, _, ids = world
    assert http.get(f"/v1/jobs/{ids['job']}", headers=a).status_code == 200
    assert ids["endpoint"] in http.get("/v1/webhooks", headers=a).text
    assert ids["delivery"] in http.get("/v1/webhooks/deliveries", headers=a).text
    replayed = http.post(f"/v1/webhooks/deliveries/{ids['delivery']}/replay", headers=a)
    assert replayed.status_code == 200
    assert replayed.json()["status"] == "pending"
    # B's attempts changed nothing of A's.
    assert http.get(f"/v1/jobs/{ids['job']}", headers=a).json()["status"] != "cancelled"
    queue = http.get("/v1/review/queue", headers=a).json()
    assert [v["review_state"] for j in queue["jobs"] for v in j["pending"]] == ["pending_review"]
    approved = http.post(f"/v1/review/variants/{ids['variant']}/approve", json={}, headers=a)
    assert approved.status_code == 200, approved.text
