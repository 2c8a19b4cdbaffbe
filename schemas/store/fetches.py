"""A URL job's fetch stage: published (received → fetching), claimed by a fetch worker
(one more ``fetch_attempts``, a lease of its own), its bytes stored, or given back.

Every transition is conditional, as in ``schemas.store.jobs``: a duplicate fetch
message, or a fetch that finishes after its job was cancelled, changes nothing. A
claim's ``fetch_attempts`` is its fence: storing, giving back or failing a fetch names
the attempt it belongs to, so a fetch whose lease ran out while another took the job
over (a worker held up past its lease, the reaper acting on what it read a moment
before) changes nothing of the newer fetch's. Once the bytes are stored the job keeps
``fetching`` and its lease until its caption task is published
(``schemas.store.jobs.mark_queued``), so a worker killed in between leaves the reaper a
job it can finish.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from sqlalchemy import ColumnElement, update
from sqlmodel import Session, col

from schemas.store.jobs import transition
from schemas.tables import Job, JobStatus, utcnow


def fetch_waiting() -> ColumnElement[bool]:
    """A URL job whose fetch waits for a fetch worker: fetching, with no fetch in flight
    (a fetch in flight holds a lease, and publishes what follows itself)."""
    return (col(Job.status) == JobStatus.fetching) & col(Job.lease_expires_at).is_(None)


def mark_fetching(*, session: Session, job_ids: Sequence[str]) -> list[str]:
    """URL jobs whose fetch task is published: received → fetching."""
    return transition(
        session,
        job_ids,
        expected=[JobStatus.received],
        where=[Job.__table__.c.image_sha256.is_(None)],  # type: ignore[attr-defined]
        status=JobStatus.fetching,
    )


def claim_fetch(*, session: Session, job_id: str, lease_s: float) -> Job | None:
    """Take a URL job's fetch: received or fetching, not fetched yet, with no live lease
    (so a second message for a fetch in flight takes nothing); one more fetch attempt and
    a lease of ``lease_s``. None if there is nothing to take."""
    now = utcnow()
    claimed = (
        update(Job)
        .where(
            col(Job.id) == job_id,
            col(Job.status).in_([JobStatus.received.value, JobStatus.fetching.value]),
            col(Job.image_sha256).is_(None),
            col(Job.lease_expires_at).is_(None) | (col(Job.lease_expires_at) < now),
        )
        .values(
            status=JobStatus.fetching,
            lease_expires_at=now + timedelta(seconds=lease_s),
            fetch_attempts=Job.fetch_attempts + 1,
            updated_at=now,
        )
        .returning(Job)
        .execution_options(synchronize_session=False, populate_existing=True)
    )
    return session.scalars(claimed).first()


def fetch_attempt_is(attempt: int) -> ColumnElement[bool]:
    """The job's fetch is still the one claimed as ``attempt`` (no later claim took it)."""
    return Job.__table__.c.fetch_attempts == attempt  # type: ignore[attr-defined,no-any-return]


def store_fetched(*, session: Session, job_id: str, attempt: int, image_sha256: str) -> bool:
    """The bytes of fetch ``attempt`` are in the blob store: the job keeps its lease (its
    caption task is published next, then :func:`mark_queued`). False if the job moved
    meanwhile (cancelled, or its fetch taken over). The same bytes stored again by the
    same fetch (its commit's answer was lost) are stored, not a move."""
    sha = Job.__table__.c.image_sha256  # type: ignore[attr-defined]
    return bool(
        transition(
            session,
            [job_id],
            expected=[JobStatus.fetching],
            where=[sha.is_(None) | (sha == image_sha256), fetch_attempt_is(attempt)],
            image_sha256=image_sha256,
        )
    )


def release_fetch(*, session: Session, job_id: str, attempt: int) -> bool:
    """Fetch ``attempt`` to be tried again later: the job stays fetching, its lease
    given up. False if the job moved meanwhile (cancelled, or its fetch taken over)."""
    return bool(
        transition(session, [job_id], expected=[JobStatus.fetching],
                   where=[fetch_attempt_is(attempt)], lease_expires_at=None)  # fmt: skip
    )
