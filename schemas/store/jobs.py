"""Job store: creation, state transitions, results and their outbox rows.

Every transition is conditional (``UPDATE ... WHERE status = <expected>``), so a
late or duplicate attempt cannot overwrite a newer state; variants have a
unique slot, so a second set can never be added. Results and the callback
rows are written in the caller's single transaction.

A running job holds a lease (``lease_expires_at``) that its worker renews; the
reaper re-publishes jobs whose lease expired. ``attempts`` counts claims.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from schemas.api import ErrorBody, JobPublic, JobRequest, VariantBase, VariantPublic, WebhookEvent
from schemas.errors import ErrorCode, RequestError
from schemas.messages import DeliveryRef
from schemas.store.decisions import auto_approved_rows
from schemas.store.outbox import event_row
from schemas.store.sessions import per_row
from schemas.tables import (
    Delivery,
    Job,
    JobStatus,
    Tenant,
    Variant,
    new_id,
    utcnow,
)


def request_hash(request: JobRequest) -> str:
    """Fingerprint of what was asked, for idempotency (same key + other body: refused)."""
    body = request.model_dump(mode="json", exclude={"idempotency_key"})
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def create_job(
    *, session: Session, tenant: Tenant, request: JobRequest, image_sha256: str | None
) -> tuple[Job, bool]:
    """Insert a job in ``received``; returns (job, created). Idempotent on the key, also
    against a concurrent request with the same key."""
    try:
        with session.begin_nested():
            (outcome,) = create_jobs(
                session=session, tenant=tenant, requests=[(request, image_sha256)]
            )
    except IntegrityError:
        # A concurrent request with the same key won the insert.
        existing = _by_key(session, tenant.id, request.idempotency_key or "")
        if existing is None:
            raise
        return _replay(session, existing, request_hash(request)), False
    if isinstance(outcome, RequestError):
        raise outcome
    return outcome


def create_jobs(
    *, session: Session, tenant: Tenant, requests: Sequence[tuple[JobRequest, str | None]]
) -> list[tuple[Job, bool] | RequestError]:
    """:func:`create_job` for many (request, image digest) pairs in one flush: one read
    of the keys already used, one multi-row insert. A key used twice in ``requests``
    gives the same job twice. Raises ``IntegrityError`` if a concurrent request took a
    key meanwhile: the caller rolls back to a savepoint and creates job by job."""
    keys = {request.idempotency_key for request, _ in requests} - {None}
    known: dict[str, Job] = {}
    if keys:
        query = select(Job).where(Job.tenant_id == tenant.id, col(Job.idempotency_key).in_(keys))
        known = {job.idempotency_key: job for job in session.exec(query).all()}  # type: ignore[misc]
    outcomes: list[tuple[Job, bool] | RequestError] = []
    created: list[Job] = []
    here = session.info.setdefault(_CREATED_HERE, set())
    for request, image_sha256 in requests:
        digest = request_hash(request)
        key = request.idempotency_key
        if key is not None and key in known:
            try:
                outcomes.append((_replay(session, known[key], digest), False))
            except RequestError as exc:
                outcomes.append(exc)
            continue
        job = _new_job(tenant, request, digest, image_sha256)
        created.append(job)
        here.add(job.id)
        if key is not None:
            known[key] = job
        outcomes.append((job, True))
    session.add_all(created)
    session.flush()
    return outcomes


def _new_job(tenant: Tenant, request: JobRequest, digest: str, image_sha256: str | None) -> Job:
    return Job(
        tenant_id=tenant.id,
        image_sha256=image_sha256,
        image_url=request.image_url,
        styles=list(request.styles),
        platforms=list(request.platforms),
        variants=request.variants,
        brand_voice=request.brand_voice,
        callback_url=request.callback_url,
        idempotency_key=request.idempotency_key,
        request_hash=digest,
        priority=request.priority,
        meta=dict(request.metadata),
    )


_CREATED_HERE = "captionq.jobs_created"
IDEMPOTENCY_IN_PROGRESS_S = 10.0  # seconds


def _by_key(session: Session, tenant_id: str, key: str) -> Job | None:
    query = select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key)
    return session.exec(query).first()


def _replay(session: Session, existing: Job, digest: str) -> Job:
    """Same key, same body: the same job. Different body: ``idempotency_conflict``. A
    job that another request created moments ago and has not published yet:
    ``idempotency_in_progress``, retry shortly.

    Past ``IDEMPOTENCY_IN_PROGRESS_S`` a job still ``received`` is taken as
    abandoned by its creator (crashed between commit and publish): the replay
    returns it and the submitter publishes it again (the reaper would too; a second
    message for one job is harmless, only one claim can succeed)."""
    if existing.request_hash != digest:
        raise RequestError(
            "idempotency key was used before with a different request body",
            code=ErrorCode.idempotency_conflict,
        )
    if (
        existing.status == JobStatus.received
        and existing.id not in session.info.get(_CREATED_HERE, ())
        and existing.created_at > utcnow() - timedelta(seconds=IDEMPOTENCY_IN_PROGRESS_S)
    ):
        raise RequestError(
            "a request with this idempotency key is still being accepted; retry shortly",
            code=ErrorCode.idempotency_in_progress,
        )
    return existing


def _transition(
    session: Session, job_ids: Sequence[str], *, expected: Sequence[JobStatus], **values: object
) -> list[str]:
    """Move jobs in one of ``expected`` states; returns the ids that moved.

    A plain SQL UPDATE (no ORM synchronisation: it is the hot path); readers that
    hold a ``Job`` object reload it (``populate_existing``, ``refresh``)."""
    if not job_ids:
        return []
    table = Job.__table__  # type: ignore[attr-defined]
    result = session.connection().execute(
        update(table)
        .where(table.c.id.in_(job_ids), table.c.status.in_([s.value for s in expected]))
        .values(updated_at=utcnow(), **values)
        .returning(table.c.id)
    )
    return [row[0] for row in result]


def mark_queued(*, session: Session, job_ids: Sequence[str]) -> list[str]:
    return _transition(
        session, job_ids, expected=[JobStatus.received], status=JobStatus.queued, queued_at=utcnow()
    )


def claim(*, session: Session, job_ids: Sequence[str], lease_s: float = 300.0) -> list[Job]:
    """Move queued (or received: published before it was marked) jobs to running,
    with a lease of ``lease_s`` and one more attempt.

    A duplicate message for a job that already runs, finished or was cancelled
    claims nothing.
    """
    if not job_ids:
        return []
    now = utcnow()
    claimed = (
        update(Job)
        .where(
            col(Job.id).in_(job_ids),
            col(Job.status).in_([JobStatus.received.value, JobStatus.queued.value]),
        )
        .values(
            status=JobStatus.running,
            started_at=now,
            lease_expires_at=now + timedelta(seconds=lease_s),
            attempts=Job.attempts + 1,
            updated_at=now,
        )
        .returning(Job)  # one statement: the rows come back as they now are
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return list(session.scalars(claimed).all())


def renew_lease(*, session: Session, job_ids: Sequence[str], lease_s: float) -> list[str]:
    """Extend the lease of the jobs (still running) that this worker is working on."""
    return _transition(
        session,
        job_ids,
        expected=[JobStatus.running],
        lease_expires_at=utcnow() + timedelta(seconds=lease_s),
    )


def requeue(*, session: Session, job_id: str) -> bool:
    """Put a running job back to queued (a transient failure that will be retried)."""
    return bool(
        _transition(
            session,
            [job_id],
            expected=[JobStatus.running],
            status=JobStatus.queued,
            lease_expires_at=None,
            queued_at=utcnow(),
        )
    )


def cancel_job(*, session: Session, tenant_id: str, job_id: str) -> Job:
    """Cancel a job that has not started. A cancelled job is never run nor called back
    as succeeded: ``claim`` takes only received/queued jobs. ``not_found`` if not the
    tenant's, ``job_not_cancellable`` if it already runs or finished (a finished
    cancelled job answers as it is)."""
    job = get_job(session=session, tenant_id=tenant_id, job_id=job_id)
    if job is None:
        raise RequestError(f"no job {job_id}", code=ErrorCode.not_found)
    moved = _transition(
        session,
        [job_id],
        expected=[JobStatus.received, JobStatus.queued],
        status=JobStatus.cancelled,
        error_code=ErrorCode.cancelled.value,
        error_message=case(
            (Job.attempts > 0, "cancelled while waiting to be tried again"),
            else_="cancelled before it ran",
        ),
        finished_at=utcnow(),
    )
    session.refresh(job)
    if not moved and job.status != JobStatus.cancelled:
        raise RequestError(
            f"job {job_id} is {job.status}; only a job that has not started can be cancelled",
            code=ErrorCode.job_not_cancellable,
        )
    return job


@dataclass(frozen=True)
class Completed:
    """A job's results, as a worker hands them to :func:`complete_succeeded`."""

    job_id: str
    caption: str
    model_id: str
    model_revision: str | None
    variants: Sequence[VariantBase]


def complete_succeeded(*, session: Session, results: Sequence[Completed]) -> list[DeliveryRef]:
    """Store a batch of results and queue each job's ``job.succeeded`` callback; a job no
    longer running (a duplicate or late attempt) is left as it is. Returns the outbox
    rows to send. Three statements for the whole batch, whatever its size: one
    conditional UPDATE that returns the jobs as stored, one insert of the variants, one
    of the outbox rows (column values: no ORM objects are built for them)."""
    if not results:
        return []
    now = utcnow()
    by_id = {result.job_id: result for result in results}
    table = Job.__table__  # type: ignore[attr-defined]

    def each(column: Any, value: Callable[[Completed], object]) -> Any:
        return per_row(table.c.id, column, {i: value(r) for i, r in by_id.items()})

    stored = (
        update(Job)
        .where(col(Job.id).in_(list(by_id)), col(Job.status) == JobStatus.running.value)
        .values(
            status=JobStatus.succeeded,
            finished_at=now,
            updated_at=now,
            error_code=None,
            error_message=None,
            caption=each(table.c.caption, lambda r: r.caption),
            model_id=each(table.c.model_id, lambda r: r.model_id),
            model_revision=each(table.c.model_revision, lambda r: r.model_revision),
        )
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    jobs = list(session.scalars(stored).all())
    if not jobs:
        return []
    variants = {
        job.id: [
            {"id": new_id("var"), "job_id": job.id, **variant.model_dump(), "created_at": now}
            for variant in by_id[job.id].variants
        ]
        for job in jobs
    }
    connection = session.connection()
    rows = [row for job_rows in variants.values() for row in job_rows]
    if rows:
        connection.execute(insert(Variant.__table__), rows)  # type: ignore[attr-defined]
    outbox = [
        _job_event(
            session,
            job,
            "job.succeeded",
            variants=[VariantPublic.model_validate(row) for row in variants[job.id]],
            now=now,
        )
        for job in jobs
        if job.callback_url
    ]
    outbox += auto_approved_rows(jobs, variants, now=now)  # caption.approved, same transaction
    if outbox:
        connection.execute(insert(Delivery.__table__), outbox)  # type: ignore[attr-defined]
    return [DeliveryRef(row["id"], row["url"]) for row in outbox]


def complete_failed(
    *,
    session: Session,
    job_id: str,
    code: ErrorCode,
    message: str,
    expected: Sequence[JobStatus] = (JobStatus.running,),
) -> Delivery | None:
    moved = _transition(
        session,
        [job_id],
        expected=expected,
        status=JobStatus.failed,
        error_code=code.value,
        error_message=message[:2000],
        finished_at=utcnow(),
    )
    if not moved:
        return None
    return _add_job_event(session, job_id, "job.failed")


def _add_job_event(session: Session, job_id: str, event_type: str) -> Delivery | None:
    """The callback row for the job's new state, added to the session."""
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None
    if not job.callback_url:
        session.flush()
        return None
    delivery = Delivery(**_job_event(session, job, event_type, now=utcnow()))
    session.add(delivery)
    session.flush()
    return delivery


def _job_event(
    session: Session,
    job: Job,
    event_type: str,
    *,
    now: datetime,
    variants: Sequence[VariantPublic] | None = None,
) -> dict[str, Any]:
    """The outbox row of a job event; the body is the job as it now is. ``variants``:
    the rows just added, so the body needs no second read of them."""
    body = WebhookEvent(
        type=event_type,  # type: ignore[arg-type]
        timestamp=now,
        data=job_public(session=session, job=job, variants=variants),
    )
    assert job.callback_url is not None
    return event_row(
        tenant_id=job.tenant_id,
        job_id=job.id,
        event_type=event_type,
        url=job.callback_url,
        payload=body.model_dump_json(),
        now=now,
    )


def get_job(*, session: Session, tenant_id: str, job_id: str) -> Job | None:
    job = session.get(Job, job_id)
    return job if job is not None and job.tenant_id == tenant_id else None


def list_jobs(
    *,
    session: Session,
    tenant_id: str,
    status: JobStatus | None,
    limit: int,
    before: tuple[datetime, str] | None,
) -> list[Job]:
    """Newest first, keyset-paginated on (created_at, id)."""
    query = select(Job).where(Job.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Job.status == status)
    if before is not None:
        created, job_id = before
        query = query.where(
            (col(Job.created_at) < created)
            | ((col(Job.created_at) == created) & (col(Job.id) < job_id))
        )
    query = query.order_by(col(Job.created_at).desc(), col(Job.id).desc()).limit(limit)
    return list(session.exec(query).all())


def job_public(
    *,
    job: Job,
    session: Session | None = None,
    variants: Sequence[Variant | VariantPublic] | None = None,
) -> JobPublic:
    """The job as clients see it: its variants are read with ``session``, unless the
    caller holds them (``variants``)."""
    if variants is None:
        assert session is not None, "job_public needs a session or the variants"
        variants = session.exec(select(Variant).where(Variant.job_id == job.id)).all()
    variants = sorted(variants, key=lambda v: (v.style, v.platform, v.index))
    return JobPublic(
        id=job.id,
        status=JobStatus(job.status),
        styles=job.styles,
        platforms=job.platforms,
        variants_requested=job.variants,
        priority=job.priority,
        idempotency_key=job.idempotency_key,
        metadata=job.meta,
        attempts=job.attempts,
        caption=job.caption,
        model_id=job.model_id,
        model_revision=job.model_revision,
        variants=[VariantPublic.model_validate(v, from_attributes=True) for v in variants],
        error=ErrorBody(code=job.error_code, message=job.error_message or "")
        if job.error_code
        else None,
        created_at=job.created_at,
        finished_at=job.finished_at,
    )
