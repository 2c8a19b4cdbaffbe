"""Fuzz the ingestion API from its own OpenAPI schema: no 5xx, no schema violations."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from producers.api import create_app
from schemas.settings import ApiSettings
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_api_key, create_tenant

# The schema is read at import; the app's settings (database, Redis) are swapped in
# by the fixture below before any request is made.
app = create_app(ApiSettings(database_url="sqlite://", redis_url="redis://unset"))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
KEY: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def live_settings(database_url: str, redis_db: str) -> Iterator[None]:
    """The hostile-input suite runs on SQLite and on PostgreSQL: they differ (PostgreSQL
    refuses NUL in text and NaN in JSON), and the API must answer both alike."""
    url = database_url
    with session_scope(url) as session:
        tenant = create_tenant(session=session, name="fuzz")
        KEY["value"] = create_api_key(session=session, tenant=tenant)[1]
    app.state.settings = ApiSettings(database_url=url, redis_url=redis_db, bulk_max_jobs=20)
    return


@schema.parametrize()
@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_never_errors_and_keeps_its_schema(case: schemathesis.Case) -> None:
    # Every check but "schema-valid data is accepted": the API refuses some schema-valid
    # requests on purpose (URLs that point inward, bytes that are not an image,
    # idempotency conflicts), always with a 4xx and a stable code.
    case.call_and_validate(
        headers={"authorization": f"Bearer {KEY['value']}"},
        excluded_checks=[positive_data_acceptance],
    )
