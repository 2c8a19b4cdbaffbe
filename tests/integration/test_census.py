"""How old the oldest waiting work is, per queue, as operators read it (the API's
``captionq_queue_oldest_age_seconds``, ``captionq status``, the queue-age alerts): on
gpu a job waiting for a GPU worker, on fetch an image URL waiting for a fetch worker,
on io the most overdue callback. SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from schemas.names import QUEUE_FETCH, QUEUE_GPU, QUEUE_IO
from schemas.store.census import take_census
from schemas.store.outbox import event_row
from schemas.store.sessions import read_scope, session_scope
from schemas.store.tenants import create_tenant
from schemas.tables import Delivery, Job, JobStatus, utcnow

pytestmark = pytest.mark.integration


def test_each_queue_says_how_old_its_own_oldest_waiting_work_is(database_url: str) -> None:
    now = utcnow()

    def ago(seconds: float) -> datetime:
        return now - timedelta(seconds=seconds)

    with session_scope(database_url) as session:
        tenant = create_tenant(session=session, name="census")

        def job(status: JobStatus, waited_s: float, **fields: object) -> None:
            session.add(Job(tenant_id=tenant.id, styles=["playful"], platforms=["x"],
                            variants=1, request_hash="0" * 64, status=status,
                            created_at=ago(waited_s), **fields))  # fmt: skip

        job(JobStatus.queued, 50, queued_at=ago(50), image_sha256="a" * 64)
        job(JobStatus.fetching, 300, image_url="https://images.example/a.png")
        # Being fetched now (a lease): in flight, not waiting.
        job(JobStatus.fetching, 900, image_url="https://images.example/b.png",
            lease_expires_at=ago(-60))  # fmt: skip
        row = event_row(tenant_id=tenant.id, job_id=None, event_type="job.succeeded",
                        url="https://hooks.example/in", payload="{}", now=ago(30))  # fmt: skip
        session.add(Delivery(**row))
    with read_scope(database_url) as session:
        waiting = take_census(session=session).oldest_waiting_s
    assert set(waiting) == {QUEUE_GPU, QUEUE_FETCH, QUEUE_IO}
    assert waiting[QUEUE_GPU] == pytest.approx(50, abs=5)
    assert waiting[QUEUE_FETCH] == pytest.approx(300, abs=5)  # not the io queue's
    assert waiting[QUEUE_IO] == pytest.approx(30, abs=5)
