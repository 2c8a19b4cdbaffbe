"""A batch's log lines say what was stored: each job's outcome is logged once its
result transaction commits, and a job whose result was not stored (no longer running:
a late or duplicate attempt) is not logged, counted or billed as succeeded, failed or
put back. A result that cannot be stored fails its own job only. Real store, both
databases."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

import pytest
from PIL import Image
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select, update

from schemas.errors import CaptionError, ErrorCode, PermanentError, TransientError
from schemas.settings import WorkerSettings
from schemas.store.results import Completed, Prepared
from schemas.store.sessions import session_scope
from schemas.tables import Job, JobStatus, UsageDay
from tests.support.jobs import queued_jobs
from worker import batch
from worker.models import Engine
from worker.models.noop import NoopCaptioner


def _jobs(url: str, n: int, name: str) -> list[str]:
    return queued_jobs(url, n, tenant=name, color=(30, 60, 90))


def _settings(url: str) -> WorkerSettings:
    return WorkerSettings(database_url=url, captioner_model="captionq/noop", blob_store="db")


def _billed(url: str, job_id: str) -> tuple[int, int]:
    """Images and variants billed to the tenant of ``job_id`` (its tenant's only jobs are
    the test's)."""
    with session_scope(url) as session:
        tenant_id = session.get(Job, job_id).tenant_id  # type: ignore[union-attr]
        days = session.exec(select(UsageDay).where(UsageDay.tenant_id == tenant_id)).all()
        return sum(day.images for day in days), sum(day.variants for day in days)


def _outcomes(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("job ")]


class Requeuing(NoopCaptioner):
    """While the batch generates, the reaper takes one of its jobs back (its lease ran
    out): that job's result must not be stored, nor logged as its success. With
    ``error``, the model then fails the whole batch with it."""

    def __init__(self, url: str, job_id: str, error: CaptionError | None = None) -> None:
        super().__init__()
        self.url, self.job_id, self.error = url, job_id, error

    def _caption(
        self, images: Sequence[Image.Image], prompts: Sequence[str] | None, seed: int | None
    ) -> list[str]:
        if prompts is None:
            with session_scope(self.url) as session:
                session.exec(update(Job).where(col(Job.id) == self.job_id).values(status="queued"))
            if self.error is not None:
                raise self.error
        return super()._caption(images, prompts, seed)


def test_a_job_taken_back_mid_batch_is_not_logged_as_succeeded(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    kept, taken = _jobs(database_url, 2, "logs-taken-back")
    engine = Engine(captioner=Requeuing(database_url, taken))
    with caplog.at_level(logging.INFO, logger="captionq.worker"):
        report = batch.process([kept, taken], settings=_settings(database_url),
                               engine=engine, gpu=threading.Lock())  # fmt: skip
    assert report.succeeded == 1
    assert _outcomes(caplog) == [
        f"job {kept} succeeded",
        f"job {taken}: its result is not stored (the job is no longer running)",
    ]
    assert _billed(database_url, kept) == (1, 1)  # the attempt that finishes it is billed
    assert len(report.durations_s) == 1
    with session_scope(database_url) as session:
        assert session.get(Job, taken).status == JobStatus.queued  # type: ignore[union-attr]


FAILURES = {
    "permanent": (
        PermanentError("broke", code=ErrorCode.model_error),
        "job {} failed: model_error",
    ),
    "transient": (
        TransientError("busy", code=ErrorCode.model_error),
        "job {}: transient model_error (busy), retrying in ",
    ),
}


@pytest.mark.parametrize("kind", FAILURES)
def test_a_failure_of_a_job_taken_back_mid_batch_is_not_stored_counted_or_logged(
    database_url: str, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    """The model fails the batch after the reaper took one of its jobs back: the job
    still running fails (or is put back); the other is left as the reaper left it, and
    neither the report, the metrics fed from it nor the log say otherwise."""
    error, kept_line = FAILURES[kind]
    kept, taken = _jobs(database_url, 2, f"logs-taken-back-{kind}")
    engine = Engine(captioner=Requeuing(database_url, taken, error))
    with caplog.at_level(logging.INFO, logger="captionq.worker"):
        report = batch.process([kept, taken], settings=_settings(database_url),
                               engine=engine, gpu=threading.Lock())  # fmt: skip
    lines = _outcomes(caplog)
    assert len(lines) == 2
    assert lines[0].startswith(kept_line.format(kept))
    assert lines[1] == f"job {taken}: its result is not stored (the job is no longer running)"
    if kind == "permanent":
        assert (report.failed, report.failed_codes, report.retry) == (1, ["model_error"], [])
        assert [d.id for d in report.deliveries] == []  # no callback URL on these jobs
        expected = {kept: JobStatus.failed, taken: JobStatus.queued}
        assert _billed(database_url, kept) == (1, 0)
    else:
        assert (report.failed, report.retried_codes) == (0, ["model_error"])
        assert [again.job.id for again in report.retry] == [kept]
        expected = {kept: JobStatus.queued, taken: JobStatus.queued}
        assert _billed(database_url, kept) == (0, 0)  # billed when it is done
    with session_scope(database_url) as session:
        found = session.exec(select(Job.id, Job.status).where(col(Job.id).in_([kept, taken])))
        assert dict(found.all()) == expected


def test_a_batch_whose_transaction_fails_logs_each_job_once_as_stored(
    database_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's transaction is refused (not an outage), so its jobs are stored one by
    one: each is logged once, by the transaction that stored it, none by the one that
    was rolled back."""
    ids = _jobs(database_url, 3, "logs-refused")
    add_usage, calls = batch.add_usage, []

    def refuse_the_first(**kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise IntegrityError("INSERT INTO usage ...", {}, Exception("refused"))
        add_usage(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(batch, "add_usage", refuse_the_first)
    with caplog.at_level(logging.INFO, logger="captionq.worker"):
        engine = Engine(captioner=NoopCaptioner())
        report = batch.process(ids, settings=_settings(database_url), engine=engine,
                               gpu=threading.Lock())  # fmt: skip
    assert report.succeeded == 3
    assert len(calls) == 4  # the batch's, then one per job
    assert _outcomes(caplog) == [f"job {job_id} succeeded" for job_id in ids]
    with session_scope(database_url) as session:
        statuses = session.exec(select(Job.status).where(col(Job.id).in_(ids))).all()
    assert set(statuses) == {JobStatus.succeeded}


def test_a_result_that_cannot_be_written_fails_its_own_job_only(
    database_url: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writing one job's result raises an error that is not the database's (say, its
    callback body cannot be built): the batch is stored job by job, that job fails with
    ``internal_error`` at once, and the others are stored, logged and billed as usual."""
    ids = _jobs(database_url, 3, "logs-unwritable")
    bad = ids[1]
    prepare_succeeded = batch.prepare_succeeded

    def refuse_the_bad_one(
        *, results: Sequence[Completed], jobs: Sequence[object], subscribed_to: object
    ) -> Prepared:
        if any(result.job_id == bad for result in results):
            raise TypeError("the result of this job cannot be written")
        return prepare_succeeded(results=results, jobs=jobs, subscribed_to=subscribed_to)  # type: ignore[arg-type]

    monkeypatch.setattr(batch, "prepare_succeeded", refuse_the_bad_one)
    engine = Engine(captioner=NoopCaptioner())
    with caplog.at_level(logging.INFO, logger="captionq.worker"):
        report = batch.process(ids, settings=_settings(database_url), engine=engine,
                               gpu=threading.Lock())  # fmt: skip
    assert (report.succeeded, report.failed, report.failed_codes) == (2, 1, ["internal_error"])
    assert _outcomes(caplog) == [
        f"job {ids[0]} succeeded",
        f"job {bad}: its result cannot be stored; failing it",
        f"job {bad} failed: internal_error",
        f"job {ids[2]} succeeded",
    ]
    with session_scope(database_url) as session:
        found = session.exec(select(Job.id, Job.status).where(col(Job.id).in_(ids)))
        assert dict(found.all()) == {ids[0]: JobStatus.succeeded, bad: JobStatus.failed,
                                     ids[2]: JobStatus.succeeded}  # fmt: skip
    assert _billed(database_url, bad) == (3, 2)
