"""A fetch that fails for good fails its job only while the job is still fetching: a
job cancelled while its image was fetched stays cancelled, and the fetch says it was
skipped (not failed, no callback). Real store, both databases."""

from __future__ import annotations

import pytest

from schemas.errors import ErrorCode, PermanentError
from schemas.messages import JobRef
from schemas.settings import WorkerSettings
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_tenant
from schemas.tables import Job, JobStatus
from worker import fetching


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
