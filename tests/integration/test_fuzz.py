"""Fuzz the ingestion API from its own OpenAPI schema with every schemathesis check
(schema-valid data accepted, schema-violating data refused, auth enforced, responses as
documented, no 5xx), operation by operation and in stateful sequences, against the API
served on a loopback port."""

from __future__ import annotations

import base64
import hashlib
import io
import random
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from PIL import Image, UnidentifiedImageError
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import ComponentInfo
from schemathesis.transport.serialization import Binary

from producers.api import create_app
from producers.api.jobs import UPLOAD_ENCODING
from producers.api.serve import Served
from schemas.api import JobFields
from schemas.platforms import PLATFORM_NAMES
from schemas.settings import ApiSettings
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_tenant
from schemas.styles import STYLE_NAMES
from schemas.tables import ApiKey
from tests.support.images import png


def _images(image_format: str) -> st.SearchStrategy[bytes]:
    """Small solid images of ``image_format``, of drawn sizes and colours."""

    def encode(drawn: tuple[tuple[int, int], tuple[int, int, int]]) -> bytes:
        out = io.BytesIO()
        Image.new("RGB", drawn[0], drawn[1]).save(out, format=image_format)
        return out.getvalue()

    sizes = st.tuples(st.integers(8, 96), st.integers(8, 96))
    colours = st.tuples(*[st.integers(0, 255)] * 3)
    return st.tuples(sizes, colours).map(encode)


# The upload's file part names its media types (the schema's ``encoding``); schemathesis
# draws a positive case's part from the strategy of the type it picks, and leaves a
# negative case's binary part to its own mutations.
UPLOAD_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP", "image/gif": "GIF"}
assert set(UPLOAD_ENCODING["image"]["contentType"].split(", ")) == set(UPLOAD_TYPES)
for media_type, image_format in UPLOAD_TYPES.items():
    schemathesis.openapi.media_type(media_type, _images(image_format))

# The schema is read at import; the app's settings (database, Redis) are swapped in
# by the fixture below before any request is made.
app = create_app(ApiSettings(database_url="sqlite://", redis_url="redis://unset", bulk_max_jobs=20))
# A bulk request over BULK_MAX_JOBS is refused 413 payload_too_large, as its schema says
# ("more is 413"), and that is the answer the negative cases that break maxItems get.
REFUSED = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx"]
OVER_THE_LIMIT = {
    "include-name": "POST /v1/jobs/bulk",
    "checks": {"negative_data_rejection": {"expected-statuses": [*REFUSED, "413"]}},
}
schema = schemathesis.openapi.from_dict(  # no app: calls go over a socket
    app.openapi(), config=SchemathesisConfig.from_dict({"operations": [OVER_THE_LIMIT]})
)
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
    # Every request goes to the app served by uvicorn on a loopback port, over a socket,
    # as a client's would (the schema was read from the app in-process, at import).
    served = Served(app)
    LIVE["url"] = served.url
    try:
        yield
    finally:
        served.stop()


LIVE: dict[str, str] = {}  # the running server's address, while a module's tests run


PNG_BASE64 = base64.b64encode(png()).decode()
UPLOAD = "/v1/jobs/upload"
EXAMPLES = 100  # per operation, at most: the bound; the run is well under 3 minutes
STATEFUL_EXAMPLES = 30  # sequences of up to 8 calls


def with_outside_facts(case: schemathesis.Case) -> None:
    """Positive cases only: the values whose acceptance rests on facts no schema can state
    are set to ones that hold. An image's bytes must be an image; an image or callback
    URL must point at a public host (the API refuses inward URLs on purpose); a brand
    voice must pass the copy policy; a cursor must be one the API handed out; an
    upload's ``job`` part must hold a JobFields object as JSON (its ``contentSchema``,
    which no generator fills). Every other part stays as generated, and negative cases
    are left alone."""
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return
    if any(component.mode.is_negative for component in meta.components.values()):
        return
    if isinstance(case.query, dict):
        case.query.pop("cursor", None)
    body = case.body
    if case.path == UPLOAD and isinstance(body, dict):
        # A copy: the coverage phase builds several cases, negative ones too, on one body.
        case.body = _upload_facts(dict(body))
        _still_positive(case)
        return
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


def _upload_facts(body: dict[str, Any]) -> dict[str, Any]:
    """The file part is kept when it is an image of an allowed format (as the strategies
    above draw it), replaced by one otherwise (an example or coverage value such as an
    empty file); the job part becomes a valid job, picked by the drawn text, so the jobs
    vary from case to case as the drawn values do."""
    image = body.get("image")
    data = image.data if isinstance(image, Binary) else image
    if "image" in body and not (isinstance(data, bytes) and _is_image(data)):
        body["image"] = png()
    if "job" in body:
        pick = random.Random(str(body["job"]))  # seeded by the drawn value: reproducible
        job = JobFields(
            styles=pick.sample(sorted(STYLE_NAMES), pick.randint(1, 2)),
            platforms=pick.sample(sorted(PLATFORM_NAMES), pick.randint(1, 2)),
            variants=pick.randint(1, 3),
            priority=pick.randint(1, 9),
        )
        body["job"] = job.model_dump_json(exclude_defaults=pick.random() < 0.5)
    return body


def _still_positive(case: schemathesis.Case) -> None:
    """Keep an edited upload positive. schemathesis checks an edited body against the
    schema again, and its validator, which cannot read bytes, calls any body with a file
    part invalid; this body is valid by construction (an image the server's decoder
    opens, a job that JobFields parses), so the case stays what it was generated as."""
    meta = case.meta  # read after the edit: the body has just been judged again
    assert meta is not None
    meta.components[ParameterLocation.BODY] = ComponentInfo(mode=GenerationMode.POSITIVE)
    if all(component.mode.is_positive for component in meta.components.values()):
        meta.generation.mode = GenerationMode.POSITIVE


def _is_image(data: bytes) -> bool:
    try:
        with Image.open(io.BytesIO(data), formats=list(UPLOAD_TYPES.values())) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return False
    return True


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
def test_api_never_errors_and_keeps_its_schema(case: schemathesis.Case) -> None:
    """Every check on every operation, "schema-valid data is accepted" included (see
    ``with_outside_facts``)."""
    # The cases of the examples and coverage phases are made once, at collection, and run
    # on both databases: edit a copy, so that what one run sets is not the next one's start.
    case = case.derive(keep_auth=True)
    with_outside_facts(case)
    case.call_and_validate(base_url=LIVE["url"])


class Sequences(schema.as_state_machine()):  # type: ignore[misc]
    """The stateful phase: sequences along the links schemathesis infers (a job's id from
    its 202 into read, cancel, delete and review; an endpoint's into rotate, ping ...)."""

    def before_call(self, case: schemathesis.Case) -> None:
        with_outside_facts(case)

    def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
        return {**super().get_call_kwargs(case), "base_url": LIVE["url"]}

    def validate_response(
        self, response: Any, case: schemathesis.Case, additional_checks: Any = None, **kwargs: Any
    ) -> None:
        case.validate_response(
            response,
            additional_checks=additional_checks,
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
