"""A short transaction on a real PostgreSQL: an outage is run again in place, a database
error that is not one is raised at once, whatever its message says."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError, OperationalError

from schemas.errors import TransientError
from schemas.store.sessions import session_scope
from schemas.tables import Job, Marker
from worker.batch import with_db_retry


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    delays: list[float] = []
    monkeypatch.setattr(time, "sleep", delays.append)
    return delays


def transaction(
    url: str, body: Callable[[Connection, int], object]
) -> tuple[Callable[[], object], list[int]]:
    """``body(connection, try number)`` in a transaction of its own, and its tries."""
    tries: list[int] = []

    def run() -> object:
        tries.append(len(tries) + 1)
        with session_scope(url) as session:
            return body(session.connection(), tries[-1])

    return run, tries


def test_a_unique_violation_that_names_a_connection_is_not_an_outage(
    postgres_url: str, slept: list[float]
) -> None:
    with session_scope(postgres_url) as session:
        session.add(Marker(name="connection-pool", value="x"))

    def duplicate(connection: Connection, _: int) -> None:
        connection.execute(
            text(
                "INSERT INTO marker (name, value, updated_at) "
                "VALUES ('connection-pool', 'y', now())"
            )
        )

    insert, tries = transaction(postgres_url, duplicate)
    with pytest.raises(IntegrityError, match="connection-pool"):
        with_db_retry(insert)
    assert tries == [1]
    assert slept == []


def test_a_statement_timeout_is_operational_but_not_an_outage(
    postgres_url: str, slept: list[float]
) -> None:
    def slow(connection: Connection, _: int) -> None:
        connection.execute(text("SET LOCAL statement_timeout = 50"))
        connection.execute(text("SELECT pg_sleep(2)"))

    run, tries = transaction(postgres_url, slow)
    with pytest.raises(OperationalError, match="statement timeout"):
        with_db_retry(run)
    assert tries == [1]


def test_a_terminated_session_is_run_again(postgres_url: str, slept: list[float]) -> None:
    def read(connection: Connection, attempt: int) -> int:
        if attempt == 1:  # an administrator (or a failover) ends this session
            connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return int(connection.execute(text("SELECT 1")).scalar_one())

    run, tries = transaction(postgres_url, read)
    assert with_db_retry(run) == 1
    assert tries == [1, 2]
    assert len(slept) == 1


def test_a_result_postgresql_refuses_fails_its_own_job_and_the_batch_beside_it_is_stored(
    postgres_url: str, slept: list[float]
) -> None:
    """A variant text with NUL (which PostgreSQL cannot store in text): the batch's one
    transaction fails for a reason that is no outage, so the results are stored job by
    job; that job fails with internal_error, its neighbours succeed, nothing sleeps."""
    from schemas.api import VariantBase
    from schemas.settings import WorkerSettings
    from schemas.store.jobs import claim
    from schemas.store.tenants import create_tenant
    from worker.batch import BatchReport, _store_batch
    from worker.pipeline import Written

    with session_scope(postgres_url) as session:
        tenant = create_tenant(session=session, name=f"refused-{time.monotonic_ns()}")
        jobs = [
            Job(
                tenant_id=tenant.id,
                styles=["playful"],
                platforms=["x"],
                variants=1,
                request_hash="0" * 64,
                image_sha256="ab" * 32,  # a caption claim takes jobs with stored bytes only
            )
            for _ in range(3)
        ]
        session.add_all(jobs)
        session.flush()
        claimed = claim(session=session, job_ids=[job.id for job in jobs])
        session.expunge_all()

    def written(job: Job, text: str) -> Written:
        variant = VariantBase(
            style="playful",
            platform="x",
            index=0,
            text=text,
            quality_score=0.5,
            quality_parts={},
            flags=(),
            review_state="pending_review",
            provenance={},
        )
        return Written(job.id, "a caption", "m", None, (variant,))

    results = [
        (job, written(job, "bad\x00text" if at == 1 else "fine")) for at, job in enumerate(claimed)
    ]
    report = BatchReport()
    _store_batch(results, {}, settings=WorkerSettings(database_url=postgres_url),
                 report=report)  # no subscriptions read: every callback row is kept  # fmt: skip
    assert (report.succeeded, report.failed) == (2, 1)
    assert slept == []
    with session_scope(postgres_url) as session:
        stored = [session.get(Job, job.id) for job in claimed]
        assert [(j.status, j.error_code) for j in stored if j] == [
            ("succeeded", None),
            ("failed", "internal_error"),
            ("succeeded", None),
        ]


def _stored_jobs(url: str, n: int) -> list[str]:
    from schemas.store.tenants import create_tenant

    with session_scope(url) as session:
        tenant = create_tenant(session=session, name=f"claim-{time.monotonic_ns()}")
        jobs = [
            Job(tenant_id=tenant.id, styles=["playful"], platforms=["x"], variants=1,
                request_hash="0" * 64, image_sha256="ab" * 32, status="queued")
            for _ in range(n)
        ]  # fmt: skip
        session.add_all(jobs)
        session.flush()
        return [job.id for job in jobs]


def test_a_claim_run_again_with_its_time_takes_back_its_own_jobs_only(database_url: str) -> None:
    from datetime import timedelta

    from schemas.store.jobs import claim
    from schemas.tables import utcnow

    ids = _stored_jobs(database_url, 3)
    first_at = utcnow()
    with session_scope(database_url) as session:
        first = claim(session=session, job_ids=ids[:2], at=first_at)
    assert [job.attempts for job in first] == [1, 1]
    with session_scope(database_url) as session:  # another claim at the very same time
        assert claim(session=session, job_ids=ids[:2], at=first_at) == []
    with session_scope(database_url) as session:  # the same claim again: its own jobs back
        again = claim(session=session, job_ids=ids, at=first_at, again=True)
    assert sorted(job.id for job in again) == sorted(ids)  # and the one still queued
    assert sorted(job.attempts for job in again) == [1, 1, 1]  # no second attempt
    assert {job.started_at.replace(tzinfo=None) for job in again} == {first_at.replace(tzinfo=None)}
    with session_scope(database_url) as session:  # any other claim: nothing of theirs
        other = claim(session=session, job_ids=ids, at=first_at + timedelta(microseconds=1),
                      again=True)
    assert other == []


def test_a_claim_whose_commit_answer_was_lost_keeps_its_jobs(
    database_url: str, slept: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim's transaction commits, then the connection drops before the answer: it
    is run again (an outage), and takes back the jobs its first run took, so the batch
    runs them now, each on its first attempt, rather than claiming nothing and leaving
    them to wait out their lease for the reaper."""
    from contextlib import contextmanager

    from schemas.settings import WorkerSettings
    from worker import batch
    from worker.models import load_engine

    ids = _stored_jobs(database_url, 3)
    real_scope = batch.session_scope
    scopes: list[int] = []

    @contextmanager
    def answer_lost_once(url: str):  # type: ignore[no-untyped-def]
        scopes.append(1)
        with real_scope(url) as session:
            yield session
        if len(scopes) == 1:  # committed; the answer to the COMMIT never came back
            raise OperationalError("COMMIT", {}, ConnectionResetError("reset by peer"),
                                   connection_invalidated=True)  # fmt: skip

    monkeypatch.setattr(batch, "session_scope", answer_lost_once)
    settings = WorkerSettings(database_url=database_url, captioner_model="captionq/noop",
                              blob_store="db")  # fmt: skip
    load_all = batch.load_all  # the tenants as read, the bytes never looked at
    monkeypatch.setattr(batch, "load_all", lambda jobs, **kw: load_all(jobs, **kw)._replace(
        data=[b"not read"] * len(jobs)))  # fmt: skip
    monkeypatch.setattr(batch.pipeline, "run", lambda items, **_: [
        TransientError("the model server is away") for _ in items
    ])  # fmt: skip
    report = batch.process(ids, settings=settings, engine=load_engine(settings))
    assert len(slept) == 1  # one outage, run again after a pause
    assert sorted(r.job.id for r in report.retry) == sorted(ids)  # the batch ran all three
    with session_scope(database_url) as session:
        jobs = [session.get(Job, job_id) for job_id in ids]
        assert [(j.status, j.attempts) for j in jobs if j] == [("queued", 1)] * 3


def _claimed_twice(url: str, job_id: str) -> Job:
    """Claim the job, then put it back and claim it again (the reaper, then another
    worker): the job as its first claim saw it."""
    from schemas.store.jobs import claim, requeue

    with session_scope(url) as session:
        [first] = claim(session=session, job_ids=[job_id])
        session.expunge(first)
    with session_scope(url) as session:
        assert requeue(session=session, job_id=job_id, attempt=first.attempts)
        [again] = claim(session=session, job_ids=[job_id])
        assert again.attempts == first.attempts + 1
    return first


@pytest.mark.parametrize("spent", ["put-back", "given-up"])
def test_the_reaper_leaves_a_job_claimed_again_after_it_read_it(
    database_url: str, spent: str
) -> None:
    """The reaper read a running job whose lease had run out; before it acted, the job was
    put back and claimed again by another worker: the reaper neither puts back nor fails
    the new claim's job."""
    from schemas.settings import WorkerSettings
    from worker import reaper

    settings = WorkerSettings(database_url=database_url)
    [job_id] = _stored_jobs(database_url, 1)
    with session_scope(database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.attempts = 0 if spent == "put-back" else settings.job_max_attempts - 1
    read = _claimed_twice(database_url, job_id)  # as the reaper read it, its lease run out
    found = reaper.Reaped()
    with session_scope(database_url) as session:
        reaper.hand_back(session=session, jobs=[read], settings=settings, found=found)
    assert (found.publish, found.deliveries, found.exhausted) == ([], [], 0)
    with session_scope(database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert (job.status, job.attempts) == ("running", read.attempts + 1)


def test_an_abandoning_worker_neither_renews_nor_hands_back_a_job_claimed_again(
    database_url: str,
) -> None:
    """A worker held up past its lease (its renewals failing): the reaper put its job
    back and another worker claimed it. When the first worker's lease keeper renews, or
    gives up on its batch (time limit, shutdown grace), the job is the new claim's: not
    renewed, not put back, not failed."""
    from schemas.settings import WorkerSettings
    from schemas.store.jobs import claim, renew_lease, requeue
    from worker import reaper

    settings = WorkerSettings(database_url=database_url)
    ids = _stored_jobs(database_url, 2)
    with session_scope(database_url) as session:
        held = {job.id: job.attempts for job in claim(session=session, job_ids=ids)}
    with session_scope(database_url) as session:  # the reaper, then another worker
        assert requeue(session=session, job_id=ids[0], attempt=held[ids[0]])
        [again] = claim(session=session, job_ids=[ids[0]])
        lease = again.lease_expires_at
    with session_scope(database_url) as session:
        assert renew_lease(session=session, jobs=held, lease_s=600) == [ids[1]]
    found = reaper.give_back(settings=settings, jobs=held)
    assert [job.id for job in found.publish] == [ids[1]]  # its own job only
    with session_scope(database_url) as session:
        jobs = [session.get(Job, job_id) for job_id in ids]
        assert [(j.status, j.attempts) for j in jobs if j] == [("running", 2), ("queued", 1)]
        assert jobs[0] is not None
        assert jobs[0].lease_expires_at == lease


def test_a_late_attempts_failure_does_not_fail_a_job_claimed_again(database_url: str) -> None:
    """A batch that outlived its lease stores a permanent failure (an image the model
    refused, say) after the job was claimed again: the new claim's job is not failed
    under it, and nothing is billed or called back."""
    from schemas.errors import ErrorCode, PermanentError
    from schemas.settings import WorkerSettings
    from worker.batch import BatchReport, _store_batch

    [job_id] = _stored_jobs(database_url, 1)
    late = _claimed_twice(database_url, job_id)
    report = BatchReport()
    refused = PermanentError("the image cannot be read", code=ErrorCode.image_unreadable)
    _store_batch([(late, refused)], {}, settings=WorkerSettings(database_url=database_url),
                 report=report)  # fmt: skip
    assert (report.failed, report.done, report.deliveries) == (0, [], [])
    with session_scope(database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        assert (job.status, job.attempts, job.error_code) == ("running", 2, None)
