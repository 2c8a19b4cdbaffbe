"""Celery tasks: thin. Parse the message, call the module that does the work, publish
what follows. Whether a failure is retried, and when, is ``worker.retry``'s to say.

- ``captionq.caption`` (gpu queue, celery-batches): one batch of jobs, in one thread
  of the GPU worker's pool; it returns (and its messages are acknowledged) once the
  batch is stored.
- ``captionq.fetch`` (fetch queue): one job's image URL into the blob store, then its
  caption task (fetch worker threads fetch side by side, as many as the pool has).

- ``captionq.deliver`` (io queue, celery-batches): one attempt of each of the callbacks
  of the deliver messages gathered, one endpoint's at a time.
- ``captionq.dispatch`` (io queue, beat): send the callbacks that are due.
- ``captionq.reap`` (io queue, beat): re-publish jobs that are truly lost.

A task that meets the broker away (Redis down, a failover) ends with one line saying
what brings its work back; nothing of it is lost, since every state is in the database
first and the reaper and beat publish from there once the broker is back.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from functools import lru_cache

import redis
from celery import Task
from celery_batches import SimpleRequest
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError

from schemas import broker, keys, logs
from schemas.messages import DeliverMessage, FetchMessage, JobRef, caption_job_ids
from schemas.names import (
    TASK_CAPTION,
    TASK_DELIVER,
    TASK_DISPATCH,
    TASK_FETCH,
    TASK_PURGE,
    TASK_REAP,
    job_priority,
)
from schemas.store import lifecycle, outbox
from schemas.store.jobs import mark_queued
from schemas.store.sessions import is_outage, session_scope
from schemas.tables import utcnow
from worker import batch, crons, fetching, metrics, reaper, retry, sender
from worker.app import app, engine, gpu_turn, lease_keeper, publisher, settings
from worker.errors import ClaimError
from worker.gather import CallbackBatches, PipelinedBatches
from worker.slots import FetchSlots

log = logging.getLogger("captionq.worker")


@app.task(
    name=TASK_CAPTION,
    base=PipelinedBatches,
    flush_every=settings.batch_size,
    flush_interval=settings.batch_interval_s,
    waiting_limit=max(1, settings.pipeline_batches - 1),
    acks_late=True,
)
def caption(requests: list[SimpleRequest]) -> None:
    try:
        with _until_the_broker_is_back("the reaper publishes again the jobs of these %d "
                                       "messages that are not stored, and beat sends the "
                                       "callbacks of those that are", len(requests)):  # fmt: skip
            _caption(requests)
    finally:
        caption.batch_done()  # type: ignore[attr-defined]


@contextmanager
def _until_the_broker_is_back(what_follows: str, *args: object) -> Iterator[None]:
    """End the task with one line if the broker is away: ``what_follows`` says what
    brings its work back. Any other error is raised as it was."""
    try:
        yield
    except Exception as exc:
        if not broker.is_outage(exc):
            raise
        log.error("the broker is away (%s); " + what_follows, logs.error_line(exc), *args)


def _caption(requests: list[SimpleRequest]) -> None:
    jobs = [job for request in requests for job in caption_jobs(request)]
    # A flush holds whole messages of BATCH_SIZE jobs at most (``worker.gather``), but
    # one message may hold more: its jobs run as consecutive batches.
    size = settings.batch_size
    for at in range(0, len(jobs), size):
        try:
            _caption_batch(jobs[at : at + size])
        except Exception:
            # The messages are acknowledged on return whatever happens (celery-batches),
            # and the later batches' jobs were never claimed (no lease brings them back):
            # they are published again first. This batch's jobs hold leases.
            if rest := jobs[at + size :]:
                # The broker away too: said in a line, and the fault, not the outage,
                # ends the task.
                with _until_the_broker_is_back("the reaper publishes again the %d jobs "
                                               "this message had left", len(rest)):  # fmt: skip
                    publisher.captions(rest)
            raise


def _caption_batch(jobs: list[JobRef]) -> None:
    logs.begin(task=TASK_CAPTION, batch_id=uuid.uuid4().hex[:16])
    job_ids = [job.id for job in jobs]
    if lease_keeper is not None and lease_keeper.shutting_down:
        # A batch flushed after SIGTERM is not started: its messages are acknowledged on
        # return, so its jobs are published again for the pool that follows.
        log.info("shutting down: handing back a batch of %d before its claim", len(jobs))
        publisher.captions(jobs)
        return
    try:
        report = batch.process(
            job_ids, settings=settings, engine=engine(), lease=lease_keeper, gpu=gpu_turn
        )
    except ClaimError as exc:
        # celery-batches acknowledges the messages whatever happens: publish them again,
        # each at the priority it was published with.
        # A claim costs no attempt: it is retried for as long as the database refuses it.
        decision = retry.decide(exc, attempt=1, max_attempts=None, backoff=retry.CLAIM_BACKOFF)
        assert isinstance(decision, retry.Retry)
        log.warning("could not claim a batch of %d (%s); re-publishing in %.1fs",
                    len(job_ids), exc, decision.countdown_s)
        publisher.captions(jobs, countdown=decision.countdown_s)
        return
    metrics.batch_done(
        size=len(job_ids), model_s=report.model_s, failed_codes=report.failed_codes,
        succeeded=report.succeeded, retried_codes=report.retried_codes,
        durations_s=report.durations_s, auto_approved=report.auto_approved,
    )  # fmt: skip
    # The jobs put back first: if the broker refuses what follows, beat still sends the
    # committed callbacks within seconds, while a put-back job's lost message waits for
    # the reaper's broker reads.
    publisher.captions(
        [retried.job for retried in report.retry],
        countdown=[retried.countdown_s for retried in report.retry],
    )
    publisher.deliveries(report.deliveries)
    stages = report.stages
    log.info(
        "batch of %d: %d succeeded, %d failed, %d to retry",
        len(jobs),
        report.succeeded,
        report.failed,
        len(report.retry),
        extra={"stages": {"claim": stages.claim, "gpu_wanted": stages.gpu_wanted,
                          "gpu_from": stages.gpu_from, "gpu_until": stages.gpu_until,
                          "stored": stages.stored}},
    )


def caption_jobs(request: SimpleRequest) -> list[JobRef]:
    """The jobs a caption message is for, at the priority it was published with (the
    broker keeps it beside the body); none for a malformed message."""
    try:
        job_ids = caption_job_ids(request.args[0])
    except (ValidationError, IndexError, TypeError) as exc:
        log.error("dropping malformed caption message %s: %s", request.id, exc)
        return []
    priority = job_priority((request.delivery_info or {}).get("priority"))
    return [JobRef(job_id, priority) for job_id in job_ids]


@app.task(name=TASK_FETCH, bind=True, acks_late=True)
def fetch(self: Task, message: dict[str, object]) -> None:
    """Fetch one job's image URL into the blob store (``worker.fetching``), then publish
    its caption task and mark it queued; or publish the fetch again, or the failed
    job's callback."""
    try:
        job_id = FetchMessage.model_validate(message).job_id
    except ValidationError as exc:
        log.error("dropping a malformed fetch message %s: %s", self.request.id, exc)
        return
    job = JobRef(job_id, job_priority((self.request.delivery_info or {}).get("priority")), True)
    with _until_the_broker_is_back("job %s: the reaper publishes its next task (beat its "
                                   "callback, if it failed)", job_id):  # fmt: skip
        _fetch(job)


def _fetch(job: JobRef) -> None:
    try:
        outcome = fetching.fetch_job(job, settings=settings, slots=_slots())
    except DBAPIError as exc:  # the database stayed away: no attempt spent, try again later
        decision = retry.decide(exc, attempt=1, max_attempts=None, backoff=retry.CLAIM_BACKOFF)
        assert isinstance(decision, retry.Retry)
        log.warning("job %s: fetch put off %.1fs (%s)", job.id, decision.countdown_s, exc)
        publisher.jobs([job], countdown=decision.countdown_s)
        return
    if isinstance(outcome, fetching.Fetched):
        publisher.captions([JobRef(job.id, job.priority)])
        retry.with_db_retry(lambda: _mark_queued(job.id))
        metrics.fetch_done("fetched", seconds=outcome.fetch_s or None)
    elif isinstance(outcome, fetching.Again):
        publisher.jobs([job], countdown=outcome.countdown_s)
        retried = outcome.code is not None
        metrics.fetch_done("retried" if retried else "capped",
                           seconds=outcome.fetch_s if retried else None)  # fmt: skip
    elif isinstance(outcome, fetching.Failed):
        publisher.deliveries([outcome.delivery] if outcome.delivery else [])
        metrics.fetch_done("failed", seconds=outcome.fetch_s)
        metrics.JOBS_FINISHED.labels(outcome="failed", error_code=outcome.code).inc()
    else:
        log.info("job %s: no fetch to do (%s)", job.id, outcome.reason)
        metrics.fetch_done("skipped", seconds=None)


def _mark_queued(job_id: str) -> None:
    with session_scope(settings.database_url) as session:
        mark_queued(session=session, job_ids=[job_id])


@lru_cache(maxsize=1)
def _slots() -> FetchSlots:
    return FetchSlots(
        _redis(),
        tenant_max=settings.fetch_tenant_max,
        host_max=settings.fetch_host_max,
        ttl_s=settings.fetch_lease_s,
    )


@app.task(
    name=TASK_DELIVER,
    base=CallbackBatches,
    flush_every=settings.callback_batch_max,
    flush_interval=settings.callback_batch_interval_s,
    acks_late=True,
)
def deliver(requests: list[SimpleRequest]) -> None:
    """Send the outbox rows of deliver messages gathered together, one endpoint's
    (``worker.gather``). Each POST's outcome is the outbox's to record (its schedule and
    dead letters). If the database is away while the rows are taken or recorded, one
    line says so, and the rows wait in the outbox for beat's dispatch, as for a message
    lost with the broker: those sent but not recorded once their lease lapses (their
    receivers deduplicate on ``webhook-id``)."""
    messages = [message for request in requests if (message := _deliver_message(request))]
    delivery_ids = [delivery_id for message in messages for delivery_id in message.delivery_ids]
    if not delivery_ids:
        return
    started = time.monotonic()
    try:
        sent = sender.send_batch(delivery_ids, settings=settings)
    except Exception as exc:
        if not is_outage(exc):
            raise  # a fault, with its traceback
        log.warning("the database is away (%s); beat's dispatch sends these %d callbacks "
                    "again", logs.error_line(exc), len(delivery_ids))  # fmt: skip
        return
    metrics.deliveries_sent(sent)
    posted = sum(1 for _, result in sent.attempts.values() if result.duration_ms > 0)
    deliver.pace(messages[0].endpoint, posted=posted,  # type: ignore[attr-defined]
                 seconds=time.monotonic() - started)  # fmt: skip


def _deliver_message(request: SimpleRequest) -> DeliverMessage | None:
    try:
        return DeliverMessage.model_validate(request.args[0])
    except (ValidationError, IndexError, TypeError) as exc:
        log.error("dropping an unreadable deliver message (beat dispatches its rows): %s", exc)
        return None


@app.task(name=TASK_DISPATCH, ignore_result=True)
def dispatch() -> int:
    with _until_the_broker_is_back("the callbacks due go with a later dispatch, once their "
                                   "reservation lapses"):  # fmt: skip
        return _dispatch()
    return 0


def _dispatch() -> int:
    with session_scope(settings.database_url) as session:
        due = outbox.dispatch_due(
            session=session,
            lock_s=settings.delivery_lock_s,
            limit=settings.delivery_dispatch_limit,
        )
    publisher.deliveries(due)
    crons.check_in("captionq-dispatch")
    return len(due)


@lru_cache(maxsize=1)
def _redis() -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, socket_timeout=10)


@app.task(name=TASK_REAP, ignore_result=True)
def reap() -> None:
    with _until_the_broker_is_back("the reaper looks again at its next tick"):
        _reap()


def _reap() -> None:
    found = reaper.reap(settings=settings, client=_redis())
    counts = {
        "received": found.received, "broker_lost": found.broker_lost,
        "stranded": found.unacked, "lease_expired": found.expired, "exhausted": found.exhausted,
        "vanished": found.vanished,
    }  # fmt: skip
    metrics.reaped(counts)
    crons.check_in("captionq-reaper")
    _redis().set(keys.REAPER_LAST_RUN, json.dumps({"at": time.time(), **counts}))
    if not found:
        return
    publisher.jobs(found.publish)
    reaper.mark_published(settings=settings, jobs=found.publish)
    publisher.deliveries(found.deliveries)
    log.warning(
        "reaper: published %d (received %d, broker lost %d, stranded %d, lease expired %d, "
        "vanished %d), %d exhausted",
        len(found.publish),
        found.received,
        found.broker_lost,
        found.unacked,
        found.expired,
        found.vanished,
        found.exhausted,
    )


@app.task(name=TASK_PURGE, ignore_result=True)
def purge_expired() -> int:
    """Retention: delete jobs older than ``RETENTION_DAYS`` with what they own."""
    if settings.retention_days is None:
        return 0
    cutoff = utcnow() - timedelta(days=settings.retention_days)
    total = lifecycle.purge_all(
        database_url=settings.database_url, older_than=cutoff, store=settings.blob_store
    )
    log.info("retention: purged %d jobs created before %s", total, cutoff.isoformat())
    return total
