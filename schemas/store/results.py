"""A batch's results: stored once, with the outbox rows that announce them.

Results and their callback rows are written in the caller's single transaction: a
job moves from ``running`` only (a duplicate or late attempt of a finished job changes
nothing; while a later claim runs it, a late attempt's results are stored, the first
results stored win, but a late attempt's failure is not: the caller fences it with
``schemas.store.jobs.attempt_is``), and variants have a unique slot, so a second set
can never be added. Variants the worker auto-approved are announced
(``caption.approved``) in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, insert, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col

from schemas.api import VariantBase, VariantPublic, WebhookEvent
from schemas.errors import ErrorCode
from schemas.messages import DeliveryRef
from schemas.store.decisions import auto_approved_rows
from schemas.store.jobs import job_public, transition
from schemas.store.outbox import event_row, wanted
from schemas.store.sessions import update_rows
from schemas.tables import Delivery, Job, JobStatus, Variant, new_id, utcnow


@dataclass(frozen=True)
class Completed:
    """A job's results, as a worker hands them to :func:`complete_succeeded`."""

    job_id: str
    caption: str
    model_id: str
    model_revision: str | None
    variants: Sequence[VariantBase]


class Stored(NamedTuple):
    """What :func:`complete_succeeded` stored: the jobs that moved, and the outbox rows
    to send."""

    job_ids: list[str]
    deliveries: list[DeliveryRef]


def complete_succeeded(*, session: Session, results: Sequence[Completed]) -> Stored:
    """Store a batch of results and queue each job's ``job.succeeded`` callback; a job no
    longer running (a duplicate or late attempt) is left as it is. A few statements for
    the whole batch, whatever its size: one conditional UPDATE that moves the running
    jobs and returns them, their captions (one statement run for each), one insert of
    the variants, one read of the endpoints' subscriptions, one insert of the outbox
    rows (column values: no ORM objects are built for them)."""
    if not results:
        return Stored([], [])
    now = utcnow()
    by_id = {result.job_id: result for result in results}
    table = Job.__table__  # type: ignore[attr-defined]
    connection = session.connection()
    stored = (
        update(Job)
        .where(col(Job.id).in_(list(by_id)), col(Job.status) == JobStatus.running.value)
        .values(
            status=JobStatus.succeeded,
            finished_at=now,
            updated_at=now,
            error_code=None,
            error_message=None,
        )
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    jobs = list(session.scalars(stored).all())
    if not jobs:
        return Stored([], [])
    # The jobs just moved are this transaction's (their rows are locked on PostgreSQL,
    # the database is on SQLite): their results go to exactly those rows.
    results_of = {
        job.id: {
            "caption": by_id[job.id].caption,
            "model_id": by_id[job.id].model_id,
            "model_revision": by_id[job.id].model_revision,
        }
        for job in jobs
    }
    update_rows(connection, table, results_of)
    for job in jobs:  # as stored, without marking the objects changed
        for name, value in results_of[job.id].items():
            set_committed_value(job, name, value)
    variants = {
        job.id: [
            {"id": new_id("var"), "job_id": job.id, **variant.model_dump(), "created_at": now}
            for variant in by_id[job.id].variants
        ]
        for job in jobs
    }
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
    outbox = wanted(session, outbox)
    if outbox:
        connection.execute(insert(Delivery.__table__), outbox)  # type: ignore[attr-defined]
    return Stored([job.id for job in jobs], [DeliveryRef(row["id"], row["url"]) for row in outbox])


class FailedJob(NamedTuple):
    """What :func:`complete_failed` did: whether the job moved to ``failed`` (a job no
    longer in an expected state is left as it is: nothing is stored), and the outbox row
    that announces it, if its endpoint wants one."""

    moved: bool
    delivery: DeliveryRef | None


def complete_failed(
    *,
    session: Session,
    job_id: str,
    code: ErrorCode,
    message: str,
    expected: Sequence[JobStatus] = (JobStatus.running,),
    where: Sequence[ColumnElement[bool]] = (),
) -> FailedJob:
    moved = transition(
        session,
        [job_id],
        expected=expected,
        where=where,
        status=JobStatus.failed,
        error_code=code.value,
        error_message=message[:2000],
        finished_at=utcnow(),
    )
    if not moved:
        return FailedJob(False, None)
    delivery = _add_job_event(session, job_id, "job.failed")
    return FailedJob(True, DeliveryRef(delivery.id, delivery.url) if delivery else None)


def _add_job_event(session: Session, job_id: str, event_type: str) -> Delivery | None:
    """The callback row for the job's new state, added to the session."""
    job = session.get(Job, job_id, populate_existing=True)
    assert job is not None
    if not job.callback_url:
        session.flush()
        return None
    rows = wanted(session, [_job_event(session, job, event_type, now=utcnow())])
    if not rows:
        session.flush()
        return None
    delivery = Delivery(**rows[0])
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
