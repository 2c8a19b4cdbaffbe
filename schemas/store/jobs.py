"""Jobs: creation (idempotent on the key), state transitions, and reading them back.

Every transition is conditional (``UPDATE ... WHERE status = <expected>``), so a
late or duplicate attempt cannot overwrite a newer state. A job's results are
stored by ``schemas.store.results``.

A running job holds a lease (``lease_expires_at``) that its worker renews; the
reaper re-publishes jobs whose lease expired. ``attempts`` counts claims.
A URL job is ``fetching`` between received and queued: a fetch worker claims its fetch
(``fetch_attempts``, and a lease of its own), stores the bytes, then publishes its
caption task.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple

from pydantic_core import PydanticUndefined
from sqlalchemy import ColumnElement, bindparam, case, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from schemas.api import ErrorBody, JobPublic, JobRequest, VariantPublic
from schemas.errors import ErrorCode, RequestError
from schemas.store.sessions import insert_rows
from schemas.tables import Job, JobStatus, Tenant, Variant, new_id, utcnow


def request_hash(request: JobRequest) -> str:
    """Fingerprint of what was asked, for idempotency (same key + other body: refused)."""
    body = request.model_dump(mode="json", exclude={"idempotency_key"})
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


class JobRecord(NamedTuple):
    """A job as its submission needs it: created now, or found by its idempotency key."""

    id: str
    status: str
    priority: int
    image_sha256: str | None
    request_hash: str
    created_at: datetime

    @classmethod
    def of(cls, job: Job) -> JobRecord:
        return cls(job.id, job.status, job.priority, job.image_sha256, job.request_hash,
                   job.created_at)  # fmt: skip


def create_job(
    *, session: Session, tenant: Tenant, request: JobRequest, image_sha256: str | None
) -> tuple[JobRecord, bool]:
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
        return _replay(session, JobRecord.of(existing), request_hash(request)), False
    if isinstance(outcome, RequestError):
        raise outcome
    return outcome


def create_jobs(
    *, session: Session, tenant: Tenant, requests: Sequence[tuple[JobRequest, str | None]]
) -> list[tuple[JobRecord, bool] | RequestError]:
    """:func:`create_job` for many (request, image digest) pairs: one read of the keys
    already used, one insert of every new row (column values, no ORM objects: building
    a ``Job`` costs about 0.1 ms, in a transaction that holds SQLite's write lock). A key
    used twice in ``requests`` gives the same job twice. Raises ``IntegrityError`` if a
    concurrent request took a key meanwhile: the caller rolls back to a savepoint and
    creates job by job."""
    keys = {request.idempotency_key for request, _ in requests} - {None}
    known: dict[str, JobRecord] = {}
    if keys:
        query = select(Job).where(Job.tenant_id == tenant.id, col(Job.idempotency_key).in_(keys))
        known = {job.idempotency_key: JobRecord.of(job) for job in session.exec(query).all()}  # type: ignore[misc]
    outcomes: list[tuple[JobRecord, bool] | RequestError] = []
    rows: list[dict[str, Any]] = []
    here = session.info.setdefault(_CREATED_HERE, set())
    now = datetime.min.replace(tzinfo=UTC)
    for request, image_sha256 in requests:
        digest = request_hash(request)
        key = request.idempotency_key
        if key is not None and key in known:
            try:
                outcomes.append((_replay(session, known[key], digest), False))
            except RequestError as exc:
                outcomes.append(exc)
            continue
        # Each job its own time, later than the one before it: jobs are listed oldest
        # first, in the order they were submitted.
        now = max(utcnow(), now + _TICK)
        row = new_job_row(tenant, request, digest, image_sha256, now=now)
        rows.append(row)
        here.add(row["id"])
        job = JobRecord(row["id"], row["status"], row["priority"], image_sha256, digest, now)
        if key is not None:
            known[key] = job
        outcomes.append((job, True))
    if rows:
        insert_rows(session.connection(), Job.__table__, rows)  # type: ignore[attr-defined]
    return outcomes


_TICK = timedelta(microseconds=1)
# Every column's value when a job is created, but for those set from the request; a
# field's default factory is called per row (``id``, times, ``meta``), where it has one.
_JOB_DEFAULTS = {
    name: field.default
    for name, field in Job.model_fields.items()
    if field.default is not PydanticUndefined and field.default_factory is None
}


def new_job_row(
    tenant: Tenant, request: JobRequest, digest: str, image_sha256: str | None, *, now: datetime
) -> dict[str, Any]:
    """The column values of a new job in ``received``, as :class:`Job` would give them."""
    return {
        **_JOB_DEFAULTS,
        "id": new_id("job"),
        "tenant_id": tenant.id,
        "status": JobStatus.received.value,
        "image_sha256": image_sha256,
        "image_url": request.image_url,
        "styles": list(request.styles),
        "platforms": list(request.platforms),
        "variants": request.variants,
        "brand_voice": request.brand_voice,
        "callback_url": request.callback_url,
        "idempotency_key": request.idempotency_key,
        "request_hash": digest,
        "priority": request.priority,
        "meta": dict(request.metadata),
        "created_at": now,
        "updated_at": now,
    }


_CREATED_HERE = "captionq.jobs_created"
IDEMPOTENCY_IN_PROGRESS_S = 10.0  # seconds


def _by_key(session: Session, tenant_id: str, key: str) -> Job | None:
    query = select(Job).where(Job.tenant_id == tenant_id, Job.idempotency_key == key)
    return session.exec(query).first()


def _replay(session: Session, existing: JobRecord, digest: str) -> JobRecord:
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


def transition(
    session: Session,
    job_ids: Sequence[str],
    *,
    expected: Sequence[JobStatus],
    where: Sequence[ColumnElement[bool]] = (),
    **values: object,
) -> list[str]:
    """Move jobs in one of ``expected`` states (and matching ``where``, conditions on
    ``Job.__table__``); returns the ids that moved.

    A plain SQL UPDATE (no ORM synchronisation: it is the hot path); readers that
    hold a ``Job`` object reload it (``populate_existing``, ``refresh``)."""
    if not job_ids:
        return []
    table = Job.__table__  # type: ignore[attr-defined]
    statement = (  # built before the session's first statement (on SQLite: the write lock)
        update(table)
        .where(table.c.id.in_(job_ids), table.c.status.in_([s.value for s in expected]), *where)
        .values(updated_at=utcnow(), **values)
        .returning(table.c.id)
    )
    return [row[0] for row in session.connection().execute(statement)]


def _stored() -> ColumnElement[bool]:
    return Job.__table__.c.image_sha256.is_not(None)  # type: ignore[attr-defined,no-any-return]


def mark_queued(*, session: Session, job_ids: Sequence[str]) -> list[str]:
    """Jobs whose caption task is published: received (or fetched) with their bytes
    stored. A URL job not fetched yet does not move (see :func:`mark_fetching`)."""
    return transition(
        session,
        job_ids,
        expected=[JobStatus.received, JobStatus.fetching],
        where=[_stored()],
        status=JobStatus.queued,
        queued_at=utcnow(),
        lease_expires_at=None,
    )


def claim(
    *, session: Session, job_ids: Sequence[str], lease_s: float = 300.0,
    at: datetime | None = None, again: bool = False,
) -> list[Job]:  # fmt: skip
    """Move queued (or received or fetched: published before it was marked) jobs whose
    bytes are stored to running, with a lease of ``lease_s`` and one more attempt.

    A duplicate message for a job that already runs, finished or was cancelled
    claims nothing. ``at`` (default: now) is the claim's time, its ``started_at``. The
    same claim run ``again`` (the same ``at``), because the answer to its commit was
    lost, also takes back the running jobs that bear its time, without another attempt:
    the jobs the first run took, which would otherwise wait out their lease."""
    if not job_ids:
        return []
    now = at or utcnow()
    params = {"ids": list(job_ids), "now": now, "until": now + timedelta(seconds=lease_s)}
    return list(session.scalars(_claiming(again=again), params).all())


@lru_cache(maxsize=2)
def _claiming(*, again: bool) -> Any:
    """The claim's UPDATE, built once per process (building it costs more CPU than
    running it); its jobs (``ids``), time (``now``) and lease's end (``until``) are bound."""
    table = Job.__table__  # type: ignore[attr-defined]
    now = bindparam("now", type_=table.c.started_at.type)
    running = col(Job.status) == JobStatus.running.value
    claimable = col(Job.status).in_([JobStatus.received, JobStatus.fetching, JobStatus.queued])
    return (
        update(Job)
        .where(
            col(Job.id).in_(bindparam("ids", expanding=True)),
            (claimable | (running & (col(Job.started_at) == now))) if again else claimable,
            col(Job.image_sha256).is_not(None),  # a GPU worker never fetches
        )
        .values(status=JobStatus.running, started_at=now, updated_at=now,
                lease_expires_at=bindparam("until", type_=table.c.lease_expires_at.type),
                attempts=case((running, Job.attempts), else_=Job.attempts + 1))  # fmt: skip
        .returning(Job)  # one statement: the rows come back as they now are
        .execution_options(synchronize_session=False, populate_existing=True)
    )


def attempt_is(attempt: int) -> ColumnElement[bool]:
    """The job still runs as the claim that made ``attempt`` (no later claim took it)."""
    return Job.__table__.c.attempts == attempt  # type: ignore[attr-defined,no-any-return]


def renew_lease(*, session: Session, jobs: Mapping[str, int], lease_s: float) -> list[str]:
    """Extend the lease of the jobs this worker is working on (``jobs``: job id → the
    attempt its claim made), those still running as that claim: one statement per
    attempt number (as a rule one)."""
    by_attempt: dict[int, list[str]] = {}
    for job_id, attempt in sorted(jobs.items()):
        by_attempt.setdefault(attempt, []).append(job_id)
    until = utcnow() + timedelta(seconds=lease_s)
    return [
        job_id
        for attempt, job_ids in sorted(by_attempt.items())
        for job_id in transition(session, job_ids, expected=[JobStatus.running],
                                 where=[attempt_is(attempt)], lease_expires_at=until)  # fmt: skip
    ]


def requeue(*, session: Session, job_id: str, attempt: int) -> bool:
    """Put a job running as its claim ``attempt`` back to queued (a transient failure
    that will be retried, or a lost worker's job): False if it no longer runs as that
    claim (finished, cancelled, or taken back and claimed again meanwhile)."""
    return bool(
        transition(
            session,
            [job_id],
            expected=[JobStatus.running],
            where=[attempt_is(attempt)],
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
    moved = transition(
        session,
        [job_id],
        expected=[JobStatus.received, JobStatus.fetching, JobStatus.queued],
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
        fetch_attempts=job.fetch_attempts,
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
