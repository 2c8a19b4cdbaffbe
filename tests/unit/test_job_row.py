"""A new job is inserted as column values (``schemas.store.jobs.new_job_row``), not as
a ``Job`` object: the row must be the one the model would give, every column of it, so
that a column added to ``Job`` with a default cannot be left out of new jobs."""

from __future__ import annotations

import pytest

from schemas.api import JobRequest
from schemas.store.jobs import new_job_row, request_hash
from schemas.tables import Job, Tenant, utcnow

pytestmark = pytest.mark.unit

MADE_PER_ROW = {"id", "created_at", "updated_at"}  # a new value for each job


@pytest.mark.parametrize(
    "request_",
    [
        JobRequest(image_base64="aGk=", styles=["playful"], platforms=["x"]),
        JobRequest(
            image_url="https://example.com/a.png", styles=["playful", "minimal"],
            platforms=["x", "instagram"], variants=2, brand_voice="warm",
            callback_url="https://example.com/hook", idempotency_key="k1", priority=8,
            metadata={"campaign": "spring", "n": 3},
        ),
    ],
    ids=["inline, defaults", "every field set"],
)
def test_a_new_jobs_row_is_the_models_row(request_: JobRequest) -> None:
    tenant = Tenant(name="acme", webhook_secret_encrypted="token")
    digest = request_hash(request_)
    sha256 = "ab" * 32 if request_.image_base64 else None
    row = new_job_row(tenant, request_, digest, sha256, now=utcnow())
    model = Job(
        tenant_id=tenant.id, image_sha256=sha256, image_url=request_.image_url,
        styles=list(request_.styles), platforms=list(request_.platforms),
        variants=request_.variants, brand_voice=request_.brand_voice,
        callback_url=request_.callback_url, idempotency_key=request_.idempotency_key,
        request_hash=digest, priority=request_.priority, meta=dict(request_.metadata),
    )  # fmt: skip
    columns = set(Job.__table__.columns.keys())  # type: ignore[attr-defined]
    assert set(row) == columns
    expected = {name: getattr(model, name) for name in columns - MADE_PER_ROW}
    assert {name: row[name] for name in columns - MADE_PER_ROW} == expected
    assert row["id"].startswith("job_")
    assert row["id"] != model.id
    assert row["created_at"] == row["updated_at"]
