"""A fetch that fails for good fails its job only while the job is still fetching: a
job cancelled while its image was fetched stays cancelled, and the fetch says it was
skipped (not failed, no callback). A fetch whose lease ran out while a later fetch took
the job over changes nothing of the later one's: not by failing, giving back or storing,
and not through the reaper. Real store, both databases."""

from __future__ import annotations

from datetime import timedelta

import pytest

from schemas.errors import CaptionError, ErrorCode, PermanentError, TransientError
from schemas.messages import JobRef
from schemas.settings import WorkerSettings
from schemas.store.fetches import claim_fetch, store_fetched
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_tenant
from schemas.tables import Job, JobStatus, utcnow
from worker import fetching, reaper


def _url_job(url: str, status: JobStatus, name: str) -> str:
    with session_scope(url) as session:
        tenant = create_tenant(session=session, name=name)
        job = Job(tenant_id=tenant.id, image_url="https://images.example.com/a.png",
                  styles=["minimal"], platforms=["x"], variants=1, request_hash=name,
                  status=status.value, fetch_attempts=1)  # fmt: skip
        session.add(job)
        session.flush()
        return job.id


@pytest.mark.parametrize(
    ("status", "outcome", "after"),
    [
        (JobStatus.fetching, fetching.Failed, JobStatus.failed),
        (JobStatus.cancelled, fetching.Skipped, JobStatus.cancelled),
    ],
    ids=["fetching", "cancelled-meanwhile"],
)
def test_a_fetch_refused_for_good_fails_only_a_job_still_fetching(
    database_url: str, status: JobStatus, outcome: type, after: JobStatus
) -> None:
    job_id = _url_job(database_url, status, f"fetch-failed-{status.value}")
    settings = WorkerSettings(database_url=database_url, blob_store="db")
    refused = PermanentError("the server answered 404", code=ErrorCode.fetch_refused)
    found = fetching._failed(JobRef(job_id, 0, True), refused, attempt=1, settings=settings,
                             fetch_s=0.1)  # fmt: skip
    assert isinstance(found, outcome)
    if isinstance(found, fetching.Failed):
        assert (found.code, found.delivery) == ("fetch_refused", None)  # no callback URL
    with session_scope(database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert (job.status, job.error_code) == (
            after,
            "fetch_refused" if after == JobStatus.failed else None,
        )


def _taken_over(url: str, name: str, *, before: int = 0) -> tuple[str, Job]:
    """A URL job (``before`` fetch attempts spent) whose next fetch's lease ran out and
    which a later fetch then claimed: its id, and the job as the first of the two (and a
    reaper reading at that moment) saw it."""
    job_id = _url_job(url, JobStatus.fetching, name)
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.fetch_attempts = before
    with session_scope(url) as session:
        first = claim_fetch(session=session, job_id=job_id, lease_s=60)
        assert first is not None
        assert first.fetch_attempts == before + 1
        session.expunge(first)
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.lease_expires_at = utcnow() - timedelta(seconds=1)
    with session_scope(url) as session:
        later = claim_fetch(session=session, job_id=job_id, lease_s=60)
        assert later is not None
        assert later.fetch_attempts == before + 2
    return job_id, first


def _fetch_state(url: str, job_id: str) -> tuple[JobStatus, int, bool, str | None]:
    with session_scope(url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.status, job.fetch_attempts, job.lease_expires_at is not None, job.image_sha256


@pytest.mark.parametrize(
    "error",
    [
        PermanentError("the server answered 404", code=ErrorCode.fetch_refused),
        TransientError("the server answered 503", code=ErrorCode.fetch_failed),
    ],
    ids=["refused-for-good", "to-try-again"],
)
def test_a_fetch_taken_over_by_a_later_one_changes_nothing_of_it(
    database_url: str, error: CaptionError
) -> None:
    job_id, _ = _taken_over(database_url, f"fetch-taken-over-{error}")
    settings = WorkerSettings(database_url=database_url, blob_store="db")
    live = (JobStatus.fetching, 2, True, None)  # the second fetch's, lease and all

    found = fetching._failed(JobRef(job_id, 0, True), error, attempt=1, settings=settings,
                             fetch_s=0.1)  # fmt: skip
    assert found == fetching.MOVED
    assert _fetch_state(database_url, job_id) == live

    with session_scope(database_url) as session:
        assert not store_fetched(session=session, job_id=job_id, attempt=1, image_sha256="0" * 64)
    assert _fetch_state(database_url, job_id) == live

    with session_scope(database_url) as session:  # the live fetch's own store goes through
        assert store_fetched(session=session, job_id=job_id, attempt=2, image_sha256="0" * 64)
    with session_scope(database_url) as session:  # again, as after a commit's lost answer
        assert store_fetched(session=session, job_id=job_id, attempt=2, image_sha256="0" * 64)
    with session_scope(database_url) as session:  # other bytes are never stored over them
        assert not store_fetched(session=session, job_id=job_id, attempt=2, image_sha256="1" * 64)
    assert _fetch_state(database_url, job_id) == (JobStatus.fetching, 2, True, "0" * 64)


@pytest.mark.parametrize("spent", ["given-back", "given-up"])
def test_the_reaper_leaves_a_fetch_taken_over_after_it_read_the_job(
    database_url: str, spent: str
) -> None:
    """The reaper read a fetch's expired lease; before it acted, a later fetch claimed
    the job: the reaper neither gives back nor fails the later fetch's job."""
    settings = WorkerSettings(database_url=database_url, blob_store="db")
    before = 0 if spent == "given-back" else settings.fetch_max_attempts - 1
    job_id, read = _taken_over(database_url, f"reaper-taken-over-{spent}", before=before)
    live = _fetch_state(database_url, job_id)
    assert live == (JobStatus.fetching, before + 2, True, None)
    found = reaper.Reaped()
    with session_scope(database_url) as session:
        reaper._hand_back_fetches(session, [read], settings=settings, found=found)
    assert (found.publish, found.deliveries, found.exhausted) == ([], [], 0)
    assert _fetch_state(database_url, job_id) == live
