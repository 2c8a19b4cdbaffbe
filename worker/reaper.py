"""The reaper: finds jobs that are truly lost and publishes them again (beat, one instance).

Celery on Redis loses or delays work in ordinary faults; the database does not
forget. Each tick looks for four kinds of lost job, each by a precise sign, so
that a long healthy backlog is never re-published:

1. ``received`` for longer than ``job_received_grace_s``: the submitter committed
   the row and died (or Redis refused) before publishing.
2. Broker data loss: the reaper keeps an *epoch* both in Redis and in the
   database. If Redis no longer has it (FLUSHALL, restart without persistence,
   failover to an empty replica) every ``queued`` job is published again, once.
3. A ``queued`` job whose message a worker took but never claimed, unacknowledged
   for longer than ``job_queued_stale_s`` (a worker killed with a full
   celery-batches buffer: Redis would hand it back only after its visibility
   timeout, an hour): its message is put back on the queue. A delayed message (a
   retry's countdown, which its worker holds until due) counts from when it is due.
4. ``running`` past its lease (the worker was killed, or hung and was recycled), or
   ``fetching`` past its fetch's lease (a fetch worker killed mid-fetch).
5. ``queued`` (or ``fetching`` with no fetch in flight) for longer than
   ``job_queued_stale_s`` with no message for it anywhere in the broker, at two reads
   in a row: kombu's Redis transport takes a message off its list and records it
   unacknowledged in two steps, so a worker killed between them loses the message
   outright. The broker is read at most once per ``job_queued_stale_s``, only while
   such a job exists and while it holds at most ``schemas.queues.HELD_READ_MAX``
   messages (a longer backlog waits: it drains).

Each job is published to the stage it is at: a URL job not fetched yet gets a fetch
task (fetch queue), any other its caption task. A fetch handed back spends the job's
fetch attempts (``fetch_max_attempts``, then ``fetch_attempts_exhausted``), never
its caption attempts.

A job handed back is published again unless it has had ``job_max_attempts``
claims, in which case it fails with ``attempts_exhausted`` (and its callback):
``worker.retry`` decides, as for every other error.
A second message for one job is harmless: only one claim can succeed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import redis
from sqlalchemy import ColumnElement
from sqlmodel import Session, col, select

from schemas import keys, queues
from schemas.errors import ErrorCode
from schemas.messages import DeliveryRef, JobRef
from schemas.names import TASK_CAPTION, TASK_FETCH
from schemas.settings import WorkerSettings
from schemas.store.fetches import (
    fetch_attempt_is,
    fetch_waiting,
    mark_fetching,
    release_fetch,
)
from schemas.store.jobs import attempt_is, mark_queued, requeue
from schemas.store.results import complete_failed
from schemas.store.sessions import read_scope, session_scope
from schemas.tables import Job, JobStatus, Marker, utcnow
from worker import retry
from worker.errors import WorkerLostError

log = logging.getLogger("captionq.reaper")

JOB_TASKS = frozenset({TASK_CAPTION, TASK_FETCH})  # the tasks whose message names a job

EPOCH_MARKER = "broker_epoch"  # the database's copy of keys.BROKER_EPOCH


@dataclass
class Reaped:
    publish: list[JobRef] = field(default_factory=list)
    deliveries: list[DeliveryRef] = field(default_factory=list)
    received: int = 0
    broker_lost: int = 0
    unacked: int = 0
    expired: int = 0
    exhausted: int = 0
    vanished: int = 0

    def __bool__(self) -> bool:
        return bool(self.publish or self.deliveries)


def reap(*, settings: WorkerSettings, client: redis.Redis) -> Reaped:
    """One tick. The caller publishes ``publish`` (then marks received ones queued)."""
    found = Reaped()
    with session_scope(settings.database_url) as session:
        _received(session, settings, found)
    with session_scope(settings.database_url) as session:
        lost = _broker_lost(session, client)
        if lost:
            _queued(session, found)
    with session_scope(settings.database_url) as session:
        _stale_unacked(session, client, settings, found)
    with session_scope(settings.database_url) as session:
        _expired(session, settings, found)
    if not lost:
        with read_scope(settings.database_url) as session:
            _vanished(session, client, settings, found)
    return found


def _received(session: Session, settings: WorkerSettings, found: Reaped) -> None:
    before = utcnow() - timedelta(seconds=settings.job_received_grace_s)
    rows = session.exec(
        select(Job.id, Job.priority, Job.image_sha256).where(
            Job.status == JobStatus.received, col(Job.created_at) < before
        )
    ).all()
    found.publish += [_ref(*row) for row in rows]
    found.received += len(rows)


def _ref(job_id: str, priority: int, image_sha256: str | None) -> JobRef:
    """The task a job is published to: its fetch until its bytes are stored."""
    return JobRef(job_id, priority, fetch=image_sha256 is None)


def _broker_lost(session: Session, client: redis.Redis) -> bool:
    """True once when Redis lost the epoch the database remembers; keeps them in step."""
    marker = session.get(Marker, EPOCH_MARKER)
    in_redis = client.get(keys.BROKER_EPOCH)
    current = in_redis.decode() if in_redis is not None else None
    if marker is not None and current == marker.value:
        return False
    if marker is None and current is not None:  # a fresh database: adopt Redis's epoch
        session.add(Marker(name=EPOCH_MARKER, value=current))
        return False
    epoch = uuid.uuid4().hex
    lost = marker is not None  # no epoch anywhere: the first tick ever, nothing was lost
    if marker is None:
        marker = Marker(name=EPOCH_MARKER, value=epoch)
    marker.value, marker.updated_at = epoch, utcnow()
    session.add(marker)
    session.flush()
    client.set(keys.BROKER_EPOCH, epoch)
    if lost:
        log.error("the broker lost its data (epoch gone): re-publishing every queued job")
    return lost


def _queued(session: Session, found: Reaped) -> None:
    """Every job whose message the broker held (:func:`_waiting`)."""
    rows = session.exec(select(Job.id, Job.priority, Job.image_sha256).where(_waiting())).all()
    found.publish += [_ref(*row) for row in rows]
    found.broker_lost += len(rows)


def _stale_unacked(
    session: Session, client: redis.Redis, settings: WorkerSettings, found: Reaped
) -> None:
    ceiling = utcnow().timestamp() - settings.job_queued_stale_s
    tags = client.zrangebyscore(keys.UNACKED_INDEX, "-inf", ceiling, start=0, num=1000)
    by_job: dict[str, set[bytes]] = {}  # a job published twice may be in two messages
    for tag in tags:
        message = queues.unacked_message(client.hget(keys.UNACKED, tag))
        if queues.message_due(message) > ceiling:
            continue  # a delayed task (a retry's countdown): its worker holds it until due
        for job_id in queues.message_job_ids(message, tasks=JOB_TASKS):
            by_job.setdefault(job_id, set()).add(tag)
    if not by_job:
        return
    rows = session.exec(
        select(Job.id, Job.priority, Job.image_sha256).where(
            col(Job.id).in_(list(by_job)),
            col(Job.status).in_([JobStatus.received, JobStatus.fetching, JobStatus.queued]),
            col(Job.lease_expires_at).is_(None),  # a fetch in flight is its worker's
        )
    ).all()
    # Forget each stranded copy (its worker is gone or never claimed it) and publish its
    # waiting jobs anew; its other jobs are running, or done, elsewhere.
    stranded = {tag for job_id, _, _ in rows for tag in by_job[job_id]}
    if stranded:
        pipe = client.pipeline()
        pipe.zrem(keys.UNACKED_INDEX, *stranded).hdel(keys.UNACKED, *stranded).execute()
    for job_id, priority, image_sha256 in rows:
        found.publish.append(_ref(job_id, priority, image_sha256))
        found.unacked += 1


def _vanished(
    session: Session, client: redis.Redis, settings: WorkerSettings, found: Reaped
) -> None:
    """Jobs waiting for a worker for longer than ``job_queued_stale_s`` whose message
    is nowhere in the broker at two reads in a row (a message is briefly in neither of
    kombu's places as a worker takes it). The broker is read at most once per
    ``job_queued_stale_s``, and only while such a job exists."""
    if client.exists(keys.REAPER_BROKER_READ):  # read less than job_queued_stale_s ago
        return
    before = utcnow() - timedelta(seconds=settings.job_queued_stale_s)
    rows = session.exec(
        select(Job.id, Job.priority, Job.image_sha256)
        .where(_waiting(), col(Job.updated_at) < before)
        .order_by(col(Job.updated_at))
        .limit(queues.HELD_READ_MAX)
    ).all()
    already = {job.id for job in found.publish}
    rows = [row for row in rows if row[0] not in already]
    stale_ms = int(settings.job_queued_stale_s * 1000)
    if not rows or not client.set(keys.REAPER_BROKER_READ, 1, nx=True, px=stale_ms):
        return
    held = queues.job_ids_held(client, tasks=JOB_TASKS)
    if held is None:
        return
    missing = {row[0] for row in rows if row[0] not in held}
    before_now = {member.decode() for member in client.smembers(keys.REAPER_MISSING)}
    pipe = client.pipeline(transaction=True).delete(keys.REAPER_MISSING)
    if missing:
        pipe.sadd(keys.REAPER_MISSING, *missing).pexpire(keys.REAPER_MISSING, 3 * stale_ms)
    pipe.execute()
    gone = [_ref(*row) for row in rows if row[0] in missing & before_now]
    if gone:
        log.error("%d waiting jobs had no message in the broker, published again: %s",
                  len(gone), " ".join(job.id for job in gone[:20]))
    found.publish += gone
    found.vanished += len(gone)


def _waiting() -> ColumnElement[bool]:
    """A job whose next message the broker holds: queued, or its fetch waiting."""
    return (col(Job.status) == JobStatus.queued) | fetch_waiting()


def _expired(session: Session, settings: WorkerSettings, found: Reaped) -> None:
    jobs = session.exec(
        select(Job).where(Job.status == JobStatus.running, col(Job.lease_expires_at) < utcnow())
    ).all()
    if jobs:
        log.warning("%d running jobs lost their lease", len(jobs))
        hand_back(session=session, jobs=jobs, settings=settings, found=found)
        found.expired += len(jobs)
    fetches = session.exec(
        select(Job).where(Job.status == JobStatus.fetching, col(Job.lease_expires_at) < utcnow())
    ).all()
    if fetches:
        log.warning("%d fetches lost their lease", len(fetches))
        _hand_back_fetches(session, fetches, settings=settings, found=found)
        found.expired += len(fetches)


def _hand_back_fetches(
    session: Session, jobs: Sequence[Job], *, settings: WorkerSettings, found: Reaped
) -> None:
    """Fetches whose fetch worker is gone: a job already stored gets its caption task; any
    other its fetch again, or fails past its fetch attempts."""
    lost = WorkerLostError("fetch worker lost while fetching")
    for job in jobs:
        if job.image_sha256 is not None:
            found.publish.append(JobRef(job.id, job.priority))
            continue
        decision = retry.decide(lost, attempt=job.fetch_attempts,
                                max_attempts=settings.fetch_max_attempts,
                                exhausted=ErrorCode.fetch_attempts_exhausted)  # fmt: skip
        if isinstance(decision, retry.GiveUp):
            _give_up(session, job.id, decision, found=found, expected=(JobStatus.fetching,),
                     where=[fetch_attempt_is(job.fetch_attempts)])  # fmt: skip
        elif release_fetch(session=session, job_id=job.id, attempt=job.fetch_attempts):
            found.publish.append(JobRef(job.id, job.priority, fetch=True))


def hand_back(
    *, session: Session, jobs: Sequence[Job], settings: WorkerSettings, found: Reaped
) -> None:
    """Running jobs whose worker is gone: publish again at once (the job already waited
    out a lease), or fail past their attempts."""
    lost = WorkerLostError("worker lost or timed out")
    for job in jobs:
        decision = retry.decide(lost, attempt=job.attempts, max_attempts=settings.job_max_attempts)
        if isinstance(decision, retry.GiveUp):
            _give_up(session, job.id, decision, found=found, expected=(JobStatus.running,),
                     where=[attempt_is(job.attempts)])  # fmt: skip
        elif requeue(session=session, job_id=job.id, attempt=job.attempts):
            found.publish.append(JobRef(job.id, job.priority))


def _give_up(
    session: Session, job_id: str, decision: retry.GiveUp, *, found: Reaped,
    expected: Sequence[JobStatus], where: Sequence[ColumnElement[bool]] = (),
) -> None:  # fmt: skip
    """Fail a job past its attempts, if it is still in an ``expected`` state (and
    matches ``where``): counted as exhausted, and its callback sent, only when it moved."""
    failed = complete_failed(session=session, job_id=job_id, code=decision.code,
                             message=decision.message, expected=expected,
                             where=where)  # fmt: skip
    if failed.moved:
        found.exhausted += 1
    if failed.delivery is not None:
        found.deliveries.append(failed.delivery)


def give_back(*, settings: WorkerSettings, jobs: Mapping[str, int]) -> Reaped:
    """The jobs of batches that their own worker abandons (time limit, shutdown grace;
    ``jobs``: job id → the attempt its claim made): those still running as that claim
    are handed back like any lost job. One the reaper already took back, and another
    worker claimed again, is not this worker's to hand back."""
    found = Reaped()
    with session_scope(settings.database_url) as session:
        running = session.exec(
            select(Job).where(col(Job.id).in_(list(jobs)), Job.status == JobStatus.running)
        ).all()
        mine = [job for job in running if jobs[job.id] == job.attempts]
        hand_back(session=session, jobs=mine, settings=settings, found=found)
    return found


def mark_published(*, settings: WorkerSettings, jobs: Sequence[JobRef]) -> None:
    """Jobs whose task is published: received ones move on (to fetching, or queued), and
    fetched ones whose caption task was lost move to queued."""
    with session_scope(settings.database_url) as session:
        mark_queued(session=session, job_ids=[job.id for job in jobs if not job.fetch])
        mark_fetching(session=session, job_ids=[job.id for job in jobs if job.fetch])
