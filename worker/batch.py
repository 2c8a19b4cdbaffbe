"""One batch of caption jobs: claim, load, run the pipeline, store, and say what to send.

The claim commits on its own (short transaction: no lock is held while images are
fetched or the model runs); the batch's results then commit in one transaction together
with their outbox rows (job by job if that fails); callbacks are published only after
that commit.
While the batch runs, ``lease`` (the process's lease keeper) renews its jobs' leases.

In a pipelined GPU worker several batches run this at once, each in its own thread of
the pool, and ``gpu`` (the process's one GPU lock) is held around each call of a model
in the process only (a served model's calls wait on the network and hold nothing):
while one batch generates, the next is claimed, read, decoded and waits for the GPU,
and the one before is checked, scored and stored. ``BatchReport.stages``
says when each stage of a batch began and ended. On SQLite a claim or result
transaction waits, asleep, for its turn among every writer of the host
(``schemas.store.sqlite_writers``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from schemas.errors import CaptionError, ErrorCode, PermanentError
from schemas.messages import DeliveryRef, JobRef
from schemas.settings import WorkerSettings
from schemas.store.jobs import attempt_is, claim, requeue
from schemas.store.outbox import Subscriptions
from schemas.store.results import (
    Completed,
    Prepared,
    complete_failed,
    prepare_succeeded,
    store_prepared,
)
from schemas.store.sessions import is_outage, session_scope
from schemas.store.usage import Used, add_usage
from schemas.tables import Job, ReviewState, Tenant, utcnow
from worker import pipeline, retry
from worker.errors import ClaimError
from worker.intake import decoder, load_all
from worker.lease import LeaseKeeper
from worker.models import Engine
from worker.pipeline import JobSpec, Written
from worker.retry import with_db_retry

log = logging.getLogger("captionq.worker")


class Retried(NamedTuple):
    """A job put back to queued after a transient failure: publish it after ``countdown_s``."""

    job: JobRef
    countdown_s: float


class LogLine(NamedTuple):
    """A log line to write later (``BatchReport.lines``)."""

    level: int
    message: str
    args: tuple[object, ...]
    extra: dict[str, object]


@dataclass
class BatchReport:
    deliveries: list[DeliveryRef] = field(default_factory=list)  # outbox rows to send
    retry: list[Retried] = field(default_factory=list)  # jobs to publish again
    succeeded: int = 0
    failed: int = 0
    failed_codes: list[str] = field(default_factory=list)  # one per failed job
    retried_codes: list[str] = field(default_factory=list)  # one per job put back
    auto_approved: int = 0  # variants stored auto-approved (no person decides them)
    done: list[str] = field(default_factory=list)  # jobs this batch stored as finished
    model_s: float = 0.0  # seconds in model calls (in-process: the device's turn held)
    durations_s: list[float] = field(default_factory=list)  # submitted -> finished, per done job
    stages: Stages = field(default_factory=lambda: Stages())
    # Each job's outcome as a log line, written once the transaction that stored it commits.
    lines: list[LogLine] = field(default_factory=list)


@dataclass
class Stages:
    """When a batch's stages began and ended (``time.time()``): claim .. ``gpu_wanted``
    is its preparation, ``gpu_from`` .. ``gpu_until`` its model calls (the first one's
    start to the last one's end: its turn on the device), and ``gpu_until`` ..
    ``stored`` its checks, scores and result transaction."""

    claim: float = 0.0
    gpu_wanted: float = 0.0
    gpu_from: float = 0.0
    gpu_until: float = 0.0
    stored: float = 0.0


class _Turns:
    """A batch's model calls and the process's device (``gpu``, one batch on it at a
    time). The batch takes the device at its first call of a model in the process and
    keeps it for its next ones, until its model calls end or it calls a served model:
    it never holds the device while it waits on the network. Each call's times go to
    ``stages``, their seconds to ``model_s``. Used as ``with turns:`` around the model
    calls, ``with turns(on_device):`` around each."""

    def __init__(self, gpu: AbstractContextManager[object] | None, stages: Stages) -> None:
        self._gpu = gpu if gpu is not None else nullcontext()
        self._stages = stages
        self._held = False
        self.model_s = 0.0  # seconds in model calls

    def __enter__(self) -> _Turns:
        return self

    def __exit__(self, *exc: object) -> None:
        self._release()

    @contextmanager
    def __call__(self, on_device: bool) -> Iterator[None]:
        stages = self._stages
        stages.gpu_wanted = stages.gpu_wanted or time.time()
        if on_device and not self._held:
            self._gpu.__enter__()
            self._held = True
        elif not on_device:
            self._release()
        began = time.time()
        stages.gpu_from = stages.gpu_from or began
        try:
            yield
        finally:
            stages.gpu_until = time.time()
            self.model_s += stages.gpu_until - began

    def _release(self) -> None:
        if self._held:
            self._held = False
            self._gpu.__exit__(None, None, None)


def process(
    job_ids: Sequence[str],
    *,
    settings: WorkerSettings,
    engine: Engine,
    lease: LeaseKeeper | None = None,
    gpu: AbstractContextManager[object] | None = None,
) -> BatchReport:
    report = BatchReport()
    report.stages.claim = time.time()
    claimed_at: list[datetime] = []  # its first run's time: every run is the one claim

    def claim_batch() -> list[Job]:
        with session_scope(settings.database_url) as session:
            again = bool(claimed_at)
            claimed_at[:] = claimed_at or [utcnow()]
            return claim(session=session, job_ids=list(dict.fromkeys(job_ids)),
                         lease_s=settings.job_lease_s, at=claimed_at[0], again=again)  # fmt: skip

    try:
        jobs = with_db_retry(claim_batch)
    except DBAPIError as exc:
        raise ClaimError(f"claim failed: {type(exc).__name__}") from exc
    if not jobs:
        return report
    held = lease.hold({job.id: job.attempts for job in jobs}) if lease is not None else None
    try:
        intake = with_db_retry(lambda: load_all(jobs, settings=settings))  # a read
        items = [
            pipeline.Item(spec=_spec(job, intake.tenants[job.tenant_id]), data=data)
            for job, data in zip(jobs, intake.data, strict=True)
        ]
        turns = _Turns(gpu, report.stages)
        outcomes = pipeline.run(items, engine=engine, decode=decoder(settings), turns=turns)
        report.model_s = turns.model_s
        _store_batch(list(zip(jobs, outcomes, strict=True)), intake.subscribed_to,
                     settings=settings, report=report)  # fmt: skip
        report.stages.stored = time.time()
        finished, done = utcnow(), set(report.done)
        report.durations_s = [
            (finished - _aware(job.created_at)).total_seconds() for job in jobs if job.id in done
        ]
    finally:
        if lease is not None and held is not None:
            lease.release(held)
    return report


def _aware(at: datetime) -> datetime:
    """A stored time as UTC (SQLite gives it back without its zone)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _about(job: Job) -> dict[str, object]:
    """A job's fields on a log line (``schemas.logs``)."""
    return {"job_id": job.id, "tenant": job.tenant_id, "attempt": job.attempts}


def _spec(job: Job, tenant: Tenant) -> JobSpec:
    return JobSpec(
        job_id=job.id,
        styles=tuple(job.styles),
        platforms=tuple(job.platforms),
        variants=job.variants,
        brand_voice=job.brand_voice,
        seed=int(job.id[-8:], 16),
        auto_approve_threshold=tenant.auto_approve_threshold,
        banned_terms=tuple(tenant.banned_terms),
        allow_domains=tuple(tenant.allow_domains),
        allow_handles=tuple(tenant.allow_handles),
    )


Result = tuple[Job, Written | CaptionError]


def _store_batch(
    results: list[Result],
    subscribed_to: Subscriptions,
    *,
    settings: WorkerSettings,
    report: BatchReport,
) -> None:
    """Store a batch's results in one transaction (one commit, one fsync); if that fails
    for a reason other than the database being away (the database refuses a row, or a
    result cannot be written at all), store job by job, so one bad result cannot hold
    back the others. Safe to repeat: every write is conditional, and usage is added for
    the jobs the same transaction moved. ``subscribed_to``: the subscriptions of the
    batch's endpoints, read with its images (``worker.intake``)."""

    share_s = report.model_s / max(1, len(results))  # each job's share of the model time

    def store(chunk: list[Result]) -> BatchReport:
        part = BatchReport()
        completed = _completed(chunk)
        # The rows are built before the write transaction, outside SQLite's write lock.
        prepared = prepare_succeeded(results=completed, jobs=[job for job, _ in chunk],
                                     subscribed_to=subscribed_to)  # fmt: skip
        with session_scope(settings.database_url) as session:
            _store(session, chunk, completed, prepared, settings=settings, report=part)
            add_usage(session=session, used=_used(chunk, share_s, done=set(part.done)))
        for line in part.lines:  # committed: each line says what is stored
            log.log(line.level, line.message, *line.args, extra=line.extra)
        return part

    try:
        parts = [with_db_retry(lambda: store(results))]
    except Exception as exc:
        if is_outage(exc):  # still away after with_db_retry: the leases bring the jobs back
            raise
        log.exception("storing a batch of %d failed; storing job by job", len(results))
        parts = [_store_one(result, store) for result in results]
    for part in parts:
        report.deliveries += part.deliveries
        report.retry += part.retry
        report.succeeded += part.succeeded
        report.failed += part.failed
        report.failed_codes += part.failed_codes
        report.retried_codes += part.retried_codes
        report.auto_approved += part.auto_approved
        report.done += part.done


def _used(chunk: list[Result], share_s: float, *, done: set[str]) -> dict[str, Used]:
    """Usage by tenant of the jobs in ``chunk`` that this transaction stored as finished
    (``done``; a job put back is counted when it is done, a job no longer running by the
    attempt that finishes it): an image each, its variants, its share of the model
    seconds."""
    used: dict[str, Used] = {}
    for job, outcome in chunk:
        if job.id not in done:
            continue
        figures = used.setdefault(job.tenant_id, Used())
        figures += Used(
            images=1,
            variants=len(outcome.variants) if isinstance(outcome, Written) else 0,
            model_seconds=share_s,
        )
    return used


def _store_one(result: Result, store: Callable[[list[Result]], BatchReport]) -> BatchReport:
    """One job's result on its own; a result that cannot be stored for a reason of its
    own (the database refuses it; it cannot be written) fails that job with
    ``internal_error``, and only that job."""
    job, _ = result
    try:
        return with_db_retry(lambda: store([result]))
    except Exception as exc:
        if is_outage(exc):
            raise
        log.exception("job %s: its result cannot be stored; failing it", job.id)
    unstorable = PermanentError("its result could not be stored", code=ErrorCode.internal_error)
    return with_db_retry(lambda: store([(job, unstorable)]))


def _completed(chunk: list[Result]) -> list[Completed]:
    return [
        Completed(
            job_id=job.id,
            caption=outcome.caption,
            model_id=outcome.model_id,
            model_revision=outcome.model_revision,
            variants=outcome.variants,
        )
        for job, outcome in chunk
        if isinstance(outcome, Written)
    ]


def _store(
    session: Session,
    chunk: list[Result],
    completed: list[Completed],
    prepared: Prepared,
    *,
    settings: WorkerSettings,
    report: BatchReport,
) -> None:
    stored = store_prepared(session=session, prepared=prepared)
    outbox = stored.deliveries
    stored_ids = set(stored.job_ids)  # not a duplicate or late attempt's
    report.succeeded += len(stored_ids)
    report.done += stored.job_ids
    report.auto_approved += sum(
        variant.review_state == ReviewState.auto_approved
        for done in completed
        if done.job_id in stored_ids
        for variant in done.variants
    )
    lines = report.lines
    for job, outcome in chunk:
        if isinstance(outcome, Written):
            if job.id in stored_ids:
                lines.append(LogLine(logging.INFO, "job %s succeeded", (job.id,), _about(job)))
            else:
                lines.append(_not_stored(job))
            continue
        decision = retry.decide(
            outcome, attempt=job.attempts, max_attempts=settings.job_max_attempts
        )
        if isinstance(decision, retry.Retry):
            if not requeue(session=session, job_id=job.id, attempt=job.attempts):
                lines.append(_not_stored(job))
                continue
            lines.append(LogLine(logging.WARNING, "job %s: transient %s (%s), retrying in %.1fs",
                                 (job.id, outcome.code, outcome, decision.countdown_s),
                                 _about(job)))  # fmt: skip
            report.retry.append(Retried(JobRef(job.id, job.priority), decision.countdown_s))
            report.retried_codes.append(outcome.code.value)
            continue
        failed = complete_failed(
            session=session, job_id=job.id, code=decision.code, message=decision.message,
            where=[attempt_is(job.attempts)],
        )
        if not failed.moved:
            lines.append(_not_stored(job))
            continue
        report.failed += 1
        report.done.append(job.id)
        lines.append(LogLine(logging.INFO, "job %s failed: %s", (job.id, decision.code.value),
                             _about(job)))  # fmt: skip
        report.failed_codes.append(decision.code.value)
        if failed.delivery is not None:
            outbox.append(failed.delivery)
    report.deliveries += outbox


def _not_stored(job: Job) -> LogLine:
    """The line of an attempt whose outcome is not stored: a late or duplicate attempt,
    the job no longer running (taken back by the reaper, or cancelled)."""
    return LogLine(logging.INFO, "job %s: its result is not stored (the job is no longer "
                   "running)", (job.id,), _about(job))  # fmt: skip
