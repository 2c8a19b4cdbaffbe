"""A batch's callback bodies are built before its write transaction, from the jobs as
claimed (``schemas.store.results.prepare_succeeded``): each must still be the job as
stored, on SQLite and PostgreSQL, including when the job was claimed again while the
attempt ran."""

from __future__ import annotations

import json

import pytest
from sqlmodel import col, select

from schemas.api import VariantBase
from schemas.store.jobs import claim, job_public, requeue
from schemas.store.results import (
    Completed,
    job_subscriptions,
    prepare_succeeded,
    store_prepared,
)
from schemas.store.sessions import read_scope, session_scope
from schemas.tables import Delivery, Job
from tests.support.jobs import queued_jobs

CALLBACK = "https://hooks.example.com/captionq"


def _variant() -> VariantBase:
    return VariantBase(
        style="minimal", platform="x", index=0, text="Plain words.", quality_score=0.9,
        quality_parts={"compliance": 1.0}, flags=(), review_state="pending_review",
        provenance={"model_id": "m"},
    )  # fmt: skip


@pytest.mark.parametrize("claimed_again", [False, True], ids=["as-claimed", "claimed-again"])
def test_a_body_built_before_the_write_is_the_job_as_stored(
    database_url: str, claimed_again: bool
) -> None:
    [job_id] = queued_jobs(database_url, 1, tenant=f"bodies-{claimed_again}", color=(9, 9, 9))
    with session_scope(database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.callback_url = CALLBACK
    with session_scope(database_url) as session:
        [first] = claim(session=session, job_ids=[job_id])
        session.expunge(first)
    if claimed_again:  # the reaper put it back, another worker claimed it
        with session_scope(database_url) as session:
            assert requeue(session=session, job_id=job_id, attempt=first.attempts)
            claim(session=session, job_ids=[job_id])
    done = Completed(job_id=job_id, caption="a caption", model_id="m", model_revision="r1",
                     variants=[_variant()])  # fmt: skip
    with read_scope(database_url) as reader:
        prepared = prepare_succeeded(results=[done], jobs=[first],
                                     subscribed_to=job_subscriptions(reader, [first]))
    with session_scope(database_url) as session:
        stored = store_prepared(session=session, prepared=prepared)
    assert stored.job_ids == [job_id]
    assert len(stored.deliveries) == 1
    with read_scope(database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        [row] = session.exec(select(Delivery).where(col(Delivery.job_id) == job_id)).all()
        body = json.loads(row.payload)
        as_stored = json.loads(job_public(session=session, job=job).model_dump_json())
    assert body["type"] == "job.succeeded"
    assert body["data"] == as_stored
    assert body["data"]["attempts"] == first.attempts + (1 if claimed_again else 0)
    assert (body["data"]["status"], body["data"]["caption"]) == ("succeeded", "a caption")
