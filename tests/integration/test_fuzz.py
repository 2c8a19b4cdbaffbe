"""Fuzz the ingestion API from its own OpenAPI schema with every schemathesis check
(schema-valid data accepted, schema-violating data refused, auth enforced, responses as
documented, no 5xx), operation by operation and in stateful sequences."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from producers.api import create_app
from schemas.settings import ApiSettings
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_tenant
from schemas.tables import ApiKey
from tests.support.images import png

# The schema is read at import; the app's settings (database, Redis) are swapped in
# by the fixture below before any request is made.
app = create_app(ApiSettings(database_url="sqlite://", redis_url="redis://unset", bulk_max_jobs=20))
schema = schemathesis.openapi.from_asgi("/openapi.json", app)
# A key fixed before the schema's cases are made (some are made at collection); the
# fixture stores it, hashed, for the fuzz tenant, with every scope.
KEY_PREFIX = "fuzz0000"
KEY = f"cq_{KEY_PREFIX}_{'k' * 43}"


@schema.auth()
class BearerKey:
    """The fuzz tenant's key, sent as the bearer scheme says (so that the auth checks
    can leave it out, or spoil it, and expect 401)."""

    def get(self, case: schemathesis.Case, context: object) -> str:
        return KEY

    def set(self, case: schemathesis.Case, data: str, context: object) -> None:
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


@pytest.fixture(scope="module", autouse=True)
def live_settings(database_url: str, redis_db: str) -> Iterator[None]:
    """The hostile-input suite runs on SQLite and on PostgreSQL: they differ (PostgreSQL
    refuses NUL in text and NaN in JSON), and the API must answer both alike."""
    url = database_url
    with session_scope(url) as session:
        tenant = create_tenant(session=session, name="fuzz")
        session.add(
            ApiKey(
                tenant_id=tenant.id,
                prefix=KEY_PREFIX,
                key_hash=hashlib.sha256(KEY.encode()).hexdigest(),
                scopes="submit,read,review,admin",
            )
        )
    app.state.settings = ApiSettings(database_url=url, redis_url=redis_db, bulk_max_jobs=20)
    return


PNG_BASE64 = base64.b64encode(png()).decode()
UPLOAD = "/v1/jobs/upload"
EXAMPLES = 100  # per operation, at most: the bound; the run is well under 3 minutes
STATEFUL_EXAMPLES = 30  # sequences of up to 8 calls


def with_outside_facts(case: schemathesis.Case) -> None:
    """Positive cases only: the values whose acceptance rests on facts no schema can state
    are set to ones that hold. An image's bytes must be an image; an image or callback
    URL must point at a public host (the API refuses inward URLs on purpose); a brand
    voice must pass the copy policy; a cursor must be one the API handed out. Every
    other part stays as generated, and negative cases are left alone."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    if any(component.mode.is_negative for component in meta.components.values()):
        return
    if isinstance(case.query, dict):
        case.query.pop("cursor", None)
    body = case.body
    if case.path == "/v1/webhooks" and isinstance(body, dict):
        body["url"] = "https://hooks.example.com/captionq"
    jobs = body.get("jobs") if isinstance(body, dict) and "jobs" in body else [body]
    for job in jobs if isinstance(jobs, list) else []:
        if isinstance(job, dict) and "styles" in job:
            _facts(job)


def _facts(job: dict[str, Any]) -> None:
    if isinstance(job.get("image_url"), str):
        job["image_url"] = "https://images.example.com/shoe.png"
    if isinstance(job.get("image_base64"), str):
        job["image_base64"] = PNG_BASE64
    if isinstance(job.get("callback_url"), str):
        job["callback_url"] = "https://hooks.example.com/captionq"
    if isinstance(job.get("brand_voice"), str):
        job["brand_voice"] = "warm and plain"


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_never_errors_and_keeps_its_schema(case: schemathesis.Case) -> None:
    """Every check, "schema-valid data is accepted" included (see ``with_outside_facts``)."""
    with_outside_facts(case)
    if case.path == UPLOAD:
        # Its file part is binary and its job part JSON inside a form field: no generator
        # makes image bytes or fills a contentSchema, so only here is schema-valid data
        # not sent; tests/integration/test_sdk.py uploads real images through it.
        case.call_and_validate(excluded_checks=[positive_data_acceptance])
        return
    case.call_and_validate()


class Sequences(schema.as_state_machine()):  # type: ignore[misc]
    """The stateful phase: sequences along the links schemathesis infers (a job's id from
    its 202 into read, cancel, delete and review; an endpoint's into rotate, ping ...)."""

    def before_call(self, case: schemathesis.Case) -> None:
        with_outside_facts(case)

    def validate_response(
        self, response: Any, case: schemathesis.Case, additional_checks: Any = None, **kwargs: Any
    ) -> None:
        excluded = [positive_data_acceptance] if case.path == UPLOAD else []
        case.validate_response(
            response,
            additional_checks=additional_checks,
            excluded_checks=excluded,
            transport_kwargs=kwargs or None,
            recorder=getattr(self, "recorder", None),  # for the checks that look back
        )


def test_sequences_of_calls_keep_every_check() -> None:
    Sequences.run(
        settings=settings(
            max_examples=STATEFUL_EXAMPLES,
            stateful_step_count=8,
            deadline=None,
            suppress_health_check=list(HealthCheck),
        )
    )
