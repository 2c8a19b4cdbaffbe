"""GET /v1/tenant: the calling tenant's auto-approve threshold, flagged when it was fitted
on an older quality score, over a real database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from producers.api import create_app
from schemas.settings import ApiSettings
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_api_key, create_tenant
from schemas.tables import QUALITY_SCORE_VERSION, Tenant


@pytest.fixture(scope="module")
def http(database_url: str, redis_db: str) -> Iterator[tuple[TestClient, dict[str, str], str]]:
    with session_scope(database_url) as session:
        tenant = create_tenant(session=session, name="policy-shop")
        keys = {"read": create_api_key(session=session, tenant=tenant, scopes=["read"])[1],
                "submit": create_api_key(session=session, tenant=tenant, scopes=["submit"])[1]}
        tenant_id = tenant.id
    settings = ApiSettings(database_url=database_url, redis_url=redis_db)
    with TestClient(create_app(settings)) as client:
        yield client, keys, tenant_id


def _set(database_url: str, tenant_id: str, threshold: float | None,
         version: int | None) -> None:
    with session_scope(database_url) as session:
        tenant = session.get(Tenant, tenant_id)
        assert tenant is not None
        tenant.auto_approve_threshold, tenant.auto_approve_score_version = threshold, version
        session.add(tenant)


def _policy(http: tuple[TestClient, dict[str, str], str]) -> dict[str, object]:
    client, keys, _ = http
    answer = client.get("/v1/tenant", headers={"authorization": f"Bearer {keys['read']}"})
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def test_policy_flags_a_threshold_fitted_on_an_older_score(
    http: tuple[TestClient, dict[str, str], str], database_url: str
) -> None:
    tenant_id = http[2]
    assert _policy(http) == {
        "id": tenant_id, "name": "policy-shop", "auto_approve_threshold": None,
        "auto_approve_score_version": None, "quality_score_version": QUALITY_SCORE_VERSION,
        "threshold_stale": False}
    _set(database_url, tenant_id, 0.71, None)  # fitted before scores were versioned
    stale = _policy(http)
    assert stale["auto_approve_threshold"] == 0.71
    assert stale["threshold_stale"] is True
    _set(database_url, tenant_id, 0.71, QUALITY_SCORE_VERSION)  # recalibrated
    fresh = _policy(http)
    assert fresh["auto_approve_score_version"] == QUALITY_SCORE_VERSION
    assert fresh["threshold_stale"] is False


def test_policy_needs_a_key_with_the_read_scope(
    http: tuple[TestClient, dict[str, str], str]
) -> None:
    client, keys, _ = http
    anonymous = client.get("/v1/tenant")
    assert (anonymous.status_code, anonymous.json()["error"]["code"]) == (401, "unauthorized")
    submit_only = client.get("/v1/tenant", headers={"authorization": f"Bearer {keys['submit']}"})
    assert (submit_only.status_code, submit_only.json()["error"]["code"]) == (403, "forbidden")
