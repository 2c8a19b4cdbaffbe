"""/v1/jobs: submit (one or in bulk), read one, list with pagination."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Query, Response, UploadFile, status
from pydantic import Json

from producers.api.deps import ReadSessionDep, ReadTenant, SessionDep, SettingsDep, SubmitTenant
from producers.limits import admit
from producers.submit import Submitted, check_all, submit_checked
from schemas.api import (
    NO_NUL,
    BulkAccepted,
    BulkItem,
    BulkRequest,
    ErrorBody,
    JobAccepted,
    JobFields,
    JobPage,
    JobPublic,
    JobRequest,
)
from schemas.errors import ErrorCode, RequestError
from schemas.settings import ApiSettings
from schemas.store.jobs import cancel_job, get_job, job_public, list_jobs
from schemas.store.lifecycle import delete_job
from schemas.tables import JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


def _accepted(settings: SettingsDep, submitted: Submitted) -> JobAccepted:
    return JobAccepted(
        id=submitted.job_id,
        status=submitted.status,
        status_url=f"{settings.public_base_url.rstrip('/')}/v1/jobs/{submitted.job_id}",
        created=submitted.created,
    )


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted)
def submit_job(
    body: JobRequest,
    tenant: SubmitTenant,
    settings: SettingsDep,
    session: SessionDep,
    response: Response,
) -> JobAccepted:
    """Accept one job. 202 with its id and status URL; the same idempotency key with the
    same body returns the same job (``created: false``)."""
    checked = check_all([body], settings)  # before the transaction: see check_all
    admit(settings, session, tenant, 1)
    (outcome,) = submit_checked(session=session, settings=settings, tenant=tenant, checked=checked)
    if isinstance(outcome, RequestError):
        raise outcome
    accepted = _accepted(settings, outcome)
    response.headers["location"] = accepted.status_url
    return accepted


# The parts' media types, as the schema's ``encoding`` (the server reads the bytes, not the
# part's Content-Type header: an image of another allowed format is accepted as well).
UPLOAD_ENCODING = {
    "image": {"contentType": "image/jpeg, image/png, image/webp, image/gif"},
    "job": {"contentType": "application/json"},
}


@router.post(
    "/upload",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAccepted,
    openapi_extra={
        "requestBody": {"content": {"multipart/form-data": {"encoding": UPLOAD_ENCODING}}}
    },
)
def submit_upload(
    image: Annotated[
        UploadFile,
        File(
            description="The image file (JPEG, PNG, WEBP, GIF)",
            # Beside 3.1's contentMediaType: what 3.0 tools (and fuzzers) read as "a file".
            json_schema_extra={"format": "binary"},
        ),
    ],
    job: Annotated[
        Json[JobFields],
        Form(description="The job without its image, as JSON (a JobFields object)"),
    ],
    tenant: SubmitTenant,
    settings: SettingsDep,
    session: SessionDep,
    response: Response,
) -> JobAccepted:
    """Accept one job whose image comes as a multipart file instead of base64 JSON."""
    data = image.file.read(settings.image_max_bytes + 1)
    if len(data) > settings.image_max_bytes:
        raise RequestError(
            f"image is over {settings.image_max_bytes} bytes",
            code=ErrorCode.image_too_large,
        )
    request = JobRequest(**dict(job), image_base64=base64.b64encode(data).decode())
    return submit_job(request, tenant, settings, session, response)


@router.post("/bulk", status_code=status.HTTP_202_ACCEPTED, response_model=BulkAccepted)
def submit_bulk(
    body: BulkRequest, tenant: SubmitTenant, settings: SettingsDep, session: SessionDep
) -> BulkAccepted:
    """Accept up to ``BULK_MAX_JOBS`` jobs in one request; each item is accepted or refused
    on its own (a refused item carries its error code, the others go on)."""
    if len(body.jobs) > settings.bulk_max_jobs:
        raise RequestError(
            f"at most {settings.bulk_max_jobs} jobs per bulk request, got {len(body.jobs)}",
            code=ErrorCode.payload_too_large,
        )
    checked = check_all(body.jobs, settings)  # before the transaction: see check_all
    admit(settings, session, tenant, len(body.jobs))
    outcomes = submit_checked(session=session, settings=settings, tenant=tenant, checked=checked)
    return BulkAccepted(
        jobs=[
            BulkItem(index=i, error=ErrorBody(code=o.code.value, message=o.message))
            if isinstance(o, RequestError)
            else BulkItem(index=i, job=_accepted(settings, o))
            for i, o in enumerate(outcomes)
        ]
    )


@router.post("/{job_id}/cancel", response_model=JobPublic)
def cancel(job_id: str, tenant: SubmitTenant, session: SessionDep) -> JobPublic:
    """Cancel a job that has not started (409 once it runs or has finished); a cancelled
    job is never run nor called back as succeeded."""
    job = cancel_job(session=session, tenant_id=tenant.id, job_id=job_id)
    return job_public(session=session, job=job)


@router.delete("/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
def remove_job(
    job_id: str, tenant: SubmitTenant, session: SessionDep, settings: SettingsDep
) -> None:
    """Delete a job with its image, variants and deliveries. A worker still running it
    finds nothing to write its results to."""
    if not delete_job(
        session=session, tenant_id=tenant.id, job_id=job_id, store=settings.blob_store
    ):
        raise RequestError(f"no job {job_id}", code=ErrorCode.not_found)


@router.get("/{job_id}", response_model=JobPublic)
def read_job(job_id: str, tenant: ReadTenant, session: ReadSessionDep) -> JobPublic:
    job = get_job(session=session, tenant_id=tenant.id, job_id=job_id)
    if job is None:
        raise RequestError(f"no job {job_id}", code=ErrorCode.not_found)
    return job_public(session=session, job=job)


@router.get("", response_model=JobPage)
def read_jobs(
    tenant: ReadTenant,
    session: ReadSessionDep,
    status: JobStatus | None = None,
    limit: int = Query(default=50, ge=1, le=200),
    cursor: str | None = Query(default=None, max_length=200, pattern=NO_NUL),
) -> JobPage:
    """Newest first. Pass ``next_cursor`` back as ``cursor`` for the next page."""
    jobs = list_jobs(
        session=session,
        tenant_id=tenant.id,
        status=status,
        limit=limit + 1,
        before=_decode_cursor(cursor) if cursor else None,
    )
    page, more = jobs[:limit], len(jobs) > limit
    next_cursor = _encode_cursor(page[-1].created_at, page[-1].id) if more else None
    return JobPage(jobs=[job_public(session=session, job=j) for j in page], next_cursor=next_cursor)


def _encode_cursor(created: datetime, job_id: str) -> str:
    return base64.urlsafe_b64encode(f"{created.isoformat()}|{job_id}".encode()).decode()


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        created, _, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().partition("|")
        if "\x00" in job_id:
            raise ValueError("NUL in a cursor")
        return datetime.fromisoformat(created), job_id
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise RequestError("malformed cursor", code=ErrorCode.invalid_request) from exc


def documented_limits(schema: dict[str, Any], settings: ApiSettings) -> dict[str, Any]:
    """The OpenAPI with this deployment's limits: a bulk request's most jobs."""
    jobs = schema["components"]["schemas"]["BulkRequest"]["properties"]["jobs"]
    jobs["maxItems"] = settings.bulk_max_jobs
    return schema
