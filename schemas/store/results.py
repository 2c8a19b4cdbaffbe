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
from functools import lru_cache
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, bindparam, update
from sqlmodel import Session, col, select

from schemas.api import JobPublic, VariantBase, VariantPublic, WebhookEvent
from schemas.errors import ErrorCode
from schemas.messages import DeliveryRef
from schemas.store.decisions import auto_approved_rows
from schemas.store.jobs import job_public, transition
from schemas.store.outbox import Subscriptions, event_row, keep_wanted, subscriptions, wanted
from schemas.store.sessions import insert_rows, update_rows
from schemas.tables import Delivery, Job, JobStatus, Variant, new_id, utcnow


@dataclass(frozen=True)
class Completed:
    """A job's results, as a worker hands them to :func:`prepare_succeeded`."""

    job_id: str
    caption: str
    model_id: str
    model_revision: str | None
    variants: Sequence[VariantBase]


class Stored(NamedTuple):
    """What :func:`store_prepared` stored: the jobs that moved, and the outbox rows
    to send."""

    job_ids: list[str]
    deliveries: list[DeliveryRef]


@dataclass(frozen=True)
class Prepared:
    """A batch's results as rows, built before the transaction that writes them (outside
    SQLite's write lock): per job, its result columns, its variant rows and the outbox
    rows its endpoint wants, whose bodies describe the job as the claim of ``attempts``
    left it, succeeded with these results. Its time (``now``: the jobs' finished_at, the
    rows' created_at) is when the results were ready, before any wait to write them."""

    columns: dict[str, dict[str, object]]
    variants: dict[str, list[dict[str, Any]]]
    outbox: dict[str, list[dict[str, Any]]]
    attempts: dict[str, int]
    now: datetime


def prepare_succeeded(
    *, results: Sequence[Completed], jobs: Sequence[Job], subscribed_to: Subscriptions
) -> Prepared:
    """The rows of ``results`` (each of a job in ``jobs``, the running jobs as claimed);
    an outbox row only where its endpoint subscribes to it (``subscribed_to``: the
    jobs' endpoints' subscriptions, :func:`job_subscriptions`)."""
    now = utcnow()
    by_id = {job.id: job for job in jobs}
    columns: dict[str, dict[str, object]] = {}
    variants: dict[str, list[dict[str, Any]]] = {}
    events: list[dict[str, Any]] = []
    for result in results:
        job = by_id[result.job_id]
        columns[job.id] = {"caption": result.caption, "model_id": result.model_id,
                           "model_revision": result.model_revision}  # fmt: skip
        variants[job.id] = [
            {"id": new_id("var"), "job_id": job.id, **variant.model_dump(), "created_at": now}
            for variant in result.variants
        ]
        if job.callback_url:
            events.append(_succeeded_event(job, columns[job.id], variants[job.id], now=now))
    events += auto_approved_rows([by_id[r.job_id] for r in results], variants, now=now)
    outbox: dict[str, list[dict[str, Any]]] = {job_id: [] for job_id in columns}
    for row in keep_wanted(events, subscribed_to):
        outbox[row["job_id"]].append(row)
    attempts = {job_id: by_id[job_id].attempts for job_id in columns}
    return Prepared(columns, variants, outbox, attempts, now)


def job_subscriptions(session: Session, jobs: Sequence[Job]) -> Subscriptions:
    """The subscriptions of the endpoints that ``jobs``' callbacks go to."""
    return subscriptions(session, ((j.tenant_id, j.callback_url) for j in jobs if j.callback_url))


def store_prepared(*, session: Session, prepared: Prepared) -> Stored:
    """Store a batch of prepared results and queue their callbacks; a job no longer
    running (a duplicate or late attempt) is left as it is. A few statements for the
    whole batch, whatever its size: one conditional UPDATE that moves the running jobs
    and returns them, their result columns (one statement run for each), one insert of
    the variants, one of the outbox rows. A job claimed again while this attempt ran
    (the reaper gave it to another worker) gets its callback bodies built again from
    the row as it is now, in the same transaction."""
    if not prepared.columns:
        return Stored([], [])
    table = Job.__table__  # type: ignore[attr-defined]
    connection = session.connection()
    moved = connection.execute(
        _moving(), {"ids": list(prepared.columns), "now": prepared.now}
    ).all()
    if not moved:
        return Stored([], [])
    # The jobs just moved are this transaction's (their rows are locked on PostgreSQL,
    # the database is on SQLite): their results go to exactly those rows.
    job_ids = [row.id for row in moved]
    update_rows(connection, table, {job_id: prepared.columns[job_id] for job_id in job_ids})
    rows = [row for job_id in job_ids for row in prepared.variants[job_id]]
    if rows:
        insert_rows(connection, Variant.__table__, rows)  # type: ignore[attr-defined]
    outbox = [row for job_id in job_ids for row in prepared.outbox[job_id]]
    again = {row.id for row in moved if row.attempts != prepared.attempts[row.id]}
    if again:
        outbox = [row for row in outbox if row["job_id"] not in again]
        outbox += _events_as_now(session, again, prepared)
    if outbox:
        insert_rows(connection, Delivery.__table__, outbox)  # type: ignore[attr-defined]
    return Stored(job_ids, [DeliveryRef(row["id"], row["url"]) for row in outbox])


@lru_cache(maxsize=1)
def _moving() -> Any:
    """The UPDATE that moves a batch's running jobs (``ids``) to succeeded at ``now``,
    built once per process: the result transaction holds SQLite's write lock while it
    runs, and building a statement costs about as much CPU as running it."""
    table = Job.__table__  # type: ignore[attr-defined]
    now = bindparam("now", type_=table.c.finished_at.type)
    return (
        update(table)
        .where(table.c.id.in_(bindparam("ids", expanding=True)),
               table.c.status == JobStatus.running.value)  # fmt: skip
        .values(status=JobStatus.succeeded, finished_at=now, updated_at=now,
                error_code=None, error_message=None)  # fmt: skip
        .returning(table.c.id, table.c.attempts)
    )


def _succeeded_event(
    job: Job, columns: dict[str, object], variants: Sequence[dict[str, Any]], *, now: datetime
) -> dict[str, Any]:
    """The ``job.succeeded`` outbox row of ``job`` (as claimed) once these results are
    stored."""
    public = job_public(job=job, variants=[VariantPublic.model_validate(v) for v in variants])
    # finished_at as the database gives it back: SQLite's times without their zone.
    finished_at = now if job.created_at.tzinfo is not None else now.replace(tzinfo=None)
    data = public.model_copy(update={**columns, "status": JobStatus.succeeded,
                                     "finished_at": finished_at, "error": None})  # fmt: skip
    return _event_row(job, "job.succeeded", data, now=now)


def _events_as_now(session: Session, job_ids: set[str], prepared: Prepared) -> list[dict[str, Any]]:
    """The outbox rows of jobs whose row changed under this attempt, built from the row
    as it is now (kept only where the prepared batch kept an event of that type)."""
    jobs = session.exec(
        select(Job).where(col(Job.id).in_(job_ids)).execution_options(populate_existing=True)
    ).all()
    rows = []
    for job in jobs:
        kept = {row["event_type"]: row for row in prepared.outbox[job.id]}
        if "job.succeeded" in kept:
            rows.append(_job_event(session, job, "job.succeeded", now=prepared.now,
                                   variants=[VariantPublic.model_validate(v)
                                             for v in prepared.variants[job.id]]))  # fmt: skip
        rows += [row for row in prepared.outbox[job.id] if row["event_type"] != "job.succeeded"]
    return rows


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
    return _event_row(job, event_type, job_public(session=session, job=job, variants=variants),
                      now=now)  # fmt: skip


def _event_row(job: Job, event_type: str, data: JobPublic, *, now: datetime) -> dict[str, Any]:
    body = WebhookEvent(type=event_type, timestamp=now, data=data)  # type: ignore[arg-type]
    assert job.callback_url is not None
    return event_row(
        tenant_id=job.tenant_id,
        job_id=job.id,
        event_type=event_type,
        url=job.callback_url,
        payload=body.model_dump_json(),
        now=now,
    )
