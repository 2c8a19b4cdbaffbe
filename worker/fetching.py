"""The fetch stage: a job's image URL fetched by a fetch worker into the blob store, before
any GPU worker sees the job (a GPU worker reads stored bytes only). One fetch::

    read the job     a message for a job that moved on (cancelled, fetched, its fetch
                     in flight elsewhere) does nothing; one already fetched gets its
                     caption task again
    take slots       the tenant's and the image host's caps of fetches in flight
                     (``worker.slots``); over a cap, the fetch is published again
                     shortly and costs no attempt
    claim            one more fetch attempt (``Job.fetch_attempts``), a lease of
                     ``fetch_lease_s``; what the fetch then writes names its attempt,
                     so a fetch that outlived its lease writes nothing once a later
                     fetch took the job over
    fetch, probe     ``worker.fetch`` (the SSRF guard, the byte cap, one deadline),
                     then the image's header (``schemas.checks.images``): a body that
                     is no image fails here, not on a GPU
    store            the bytes content-addressed (``schemas.store.blobs``, as inline
                     uploads), the job's ``image_sha256``; it keeps its lease until
                     the task has published its caption task and marked it queued

A failure is ``worker.retry.decide``'s, by the job's own fetch attempts: tried again
after a backoff (the lease given up), or the job fails now with its code (its callback
with it). No database transaction is open while the URL is fetched.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from schemas.checks.images import probe_image
from schemas.errors import CaptionError, ErrorCode
from schemas.messages import DeliveryRef, JobRef
from schemas.settings import WorkerSettings
from schemas.store.blobs import put_blob
from schemas.store.fetches import claim_fetch, fetch_attempt_is, release_fetch, store_fetched
from schemas.store.results import FailedJob, complete_failed
from schemas.store.sessions import read_scope, session_scope
from schemas.tables import Job, JobStatus, utcnow
from worker import retry
from worker.fetch import fetch_image
from worker.retry import with_db_retry
from worker.slots import FetchSlots

log = logging.getLogger("captionq.fetch")


@dataclass(frozen=True)
class Fetched:
    """Stored: publish the job's caption task, then mark it queued."""

    job: JobRef
    fetch_s: float = 0.0


@dataclass(frozen=True)
class Again:
    """Publish the fetch again after ``countdown_s``; ``code`` is the transient error's,
    None when a cap of fetches in flight was full (no attempt spent)."""

    job: JobRef
    countdown_s: float
    code: str | None
    fetch_s: float = 0.0


@dataclass(frozen=True)
class Failed:
    code: str
    delivery: DeliveryRef | None
    fetch_s: float = 0.0


@dataclass(frozen=True)
class Skipped:
    reason: str


Outcome = Fetched | Again | Failed | Skipped
# The job left ``fetching`` while its image was fetched (cancelled, or taken back): what
# the fetch found is not stored.
MOVED = Skipped("job moved while its image was fetched")


def fetch_job(job: JobRef, *, settings: WorkerSettings, slots: FetchSlots) -> Outcome:
    """Fetch ``job``'s image URL into the blob store (see the module's steps). Raises
    ``DBAPIError`` when the database stays away; the caller publishes the fetch again."""
    found = with_db_retry(lambda: _read(job.id, settings))
    if isinstance(found, Skipped | Fetched):
        return found if isinstance(found, Skipped) else Fetched(job)
    tenant_id, url = found
    host = (urlsplit(url).hostname or "").lower()
    slot = slots.take(job_id=job.id, tenant_id=tenant_id, host=host)
    if slot is None:
        return Again(job, retry.SLOT_BACKOFF.delay_s(1), code=None)
    try:
        return _claimed(job, url, settings=settings)
    finally:
        slots.give_back(slot)


def _read(job_id: str, settings: WorkerSettings) -> tuple[str, str] | Skipped | Fetched:
    """The job's tenant and URL if its fetch is to be done now."""
    with read_scope(settings.database_url) as session:
        row = session.get(Job, job_id)
        if row is None:
            return Skipped("no such job")
        if row.status == JobStatus.fetching and row.image_sha256 is not None:
            return Fetched(JobRef(job_id, row.priority))  # stored; its caption task was lost
        if row.status not in (JobStatus.received, JobStatus.fetching) or row.image_url is None:
            return Skipped(f"job is {row.status}")
        lease = row.lease_expires_at
        if lease is not None and _aware(lease) > utcnow():
            return Skipped("its fetch is in flight")
        return row.tenant_id, row.image_url


def _claimed(job: JobRef, url: str, *, settings: WorkerSettings) -> Outcome:
    def take() -> Job | None:
        with session_scope(settings.database_url) as session:
            return claim_fetch(session=session, job_id=job.id, lease_s=settings.fetch_lease_s)

    claimed = with_db_retry(take)
    if claimed is None:
        return Skipped("taken meanwhile")
    started = time.perf_counter()
    try:
        data = fetch_image(
            url,
            max_bytes=settings.image_max_bytes,
            timeout_s=settings.fetch_timeout_s,
            allowed_ports=settings.allowed_ports,
            allow_networks=tuple(settings.url_allow_cidrs),
        )
        probe_image(
            data, max_pixels=settings.image_max_pixels, max_bytes=settings.image_max_bytes
        ).close()
    except CaptionError as exc:
        return _failed(job, exc, attempt=claimed.fetch_attempts, settings=settings,
                       fetch_s=time.perf_counter() - started)  # fmt: skip
    fetch_s = time.perf_counter() - started

    def store() -> bool:
        with session_scope(settings.database_url) as session:
            digest = put_blob(session=session, store=settings.blob_store, data=data)
            if store_fetched(session=session, job_id=job.id, attempt=claimed.fetch_attempts,
                             image_sha256=digest):  # fmt: skip
                return True
            session.rollback()  # cancelled or taken over meanwhile: keep no blob for it
            return False

    if not with_db_retry(store):
        return MOVED
    log.info("job %s: image fetched (%d bytes, %.2fs)", job.id, len(data), fetch_s,
             extra={"job_id": job.id, "attempt": claimed.fetch_attempts})  # fmt: skip
    return Fetched(job, fetch_s)


def _failed(
    job: JobRef, error: CaptionError, *, attempt: int, settings: WorkerSettings, fetch_s: float
) -> Outcome:
    decision = retry.decide(
        error,
        attempt=attempt,
        max_attempts=settings.fetch_max_attempts,
        backoff=retry.FETCH_BACKOFF,
        exhausted=ErrorCode.fetch_attempts_exhausted,
    )
    about = {"job_id": job.id, "attempt": attempt}
    if isinstance(decision, retry.Retry):
        log.warning("job %s: fetch %s (%s), trying again in %.1fs", job.id, error.code,
                    error, decision.countdown_s, extra=about)  # fmt: skip

        def give_back() -> bool:
            with session_scope(settings.database_url) as session:
                return release_fetch(session=session, job_id=job.id, attempt=attempt)

        if not with_db_retry(give_back):
            return MOVED
        return Again(job, decision.countdown_s, code=error.code.value, fetch_s=fetch_s)

    def fail() -> FailedJob:
        with session_scope(settings.database_url) as session:
            return complete_failed(
                session=session, job_id=job.id, code=decision.code, message=decision.message,
                expected=(JobStatus.fetching,), where=[fetch_attempt_is(attempt)],
            )  # fmt: skip

    failed = with_db_retry(fail)
    if not failed.moved:
        return MOVED
    log.info("job %s failed: %s (%s)", job.id, decision.code.value, decision.message, extra=about)
    return Failed(decision.code.value, failed.delivery, fetch_s=fetch_s)


def _aware(at: datetime) -> datetime:
    """A stored time as UTC (SQLite gives it back without its zone)."""
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)
