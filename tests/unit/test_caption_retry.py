"""Retry, job by job: the caption task's countdowns and the priorities it publishes with.

The caption task runs for real on a SQLite store (claim, requeue, attempts); the
pipeline answers with a transient error and the publisher is a recorder, so no
broker and no model are needed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import pytest
from celery_batches import SimpleRequest
from redis.exceptions import ConnectionError as RedisConnectionError

from schemas.errors import TransientError
from schemas.messages import CaptionMessage, DeliveryRef, JobRef
from schemas.names import PRIORITY_DEFAULT, celery_priority
from schemas.settings import WorkerSettings
from schemas.store.sessions import migrate, session_scope
from schemas.store.tenants import create_tenant
from schemas.tables import Job
from worker import batch, pipeline
from worker.errors import ClaimError

pytestmark = pytest.mark.unit


class RecordingPublisher:
    def __init__(self) -> None:
        self.captions_sent: list[tuple[JobRef, float]] = []
        self.deliveries_sent: list[DeliveryRef] = []

    def captions(self, jobs: Sequence[JobRef], *, countdown: float | Sequence[float] = 0.0) -> None:
        delays = [countdown] * len(jobs) if isinstance(countdown, int | float) else countdown
        self.captions_sent += zip(jobs, delays, strict=True)

    def deliveries(self, deliveries: Sequence[DeliveryRef]) -> None:
        self.deliveries_sent += deliveries


@pytest.fixture
def store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'captionq.db'}"
    migrate(url)
    return url


@pytest.fixture
def tasks(store: str, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, RecordingPublisher]:
    from worker import tasks

    settings = WorkerSettings(database_url=store, captioner_model="captionq/noop",
                              job_max_attempts=50)
    publisher = RecordingPublisher()
    monkeypatch.setattr(tasks, "settings", settings)
    monkeypatch.setattr(tasks, "publisher", publisher)
    monkeypatch.setattr(tasks, "lease_keeper", None)
    monkeypatch.setattr(tasks, "engine", lambda: None)  # the pipeline is replaced
    monkeypatch.setattr(
        pipeline, "run",
        lambda items, **_: [TransientError("the model server is away")] * len(items),
    )
    return tasks, publisher


def add_jobs(url: str, attempts: Sequence[int], priority: int = PRIORITY_DEFAULT) -> list[str]:
    """Queued jobs that have had ``attempts`` claims each so far."""
    with session_scope(url) as session:
        tenant = create_tenant(session=session, name=f"t{time.monotonic_ns()}")
        jobs = [
            Job(tenant_id=tenant.id, image_sha256="0" * 64, styles=["minimal"], platforms=["x"],
                variants=1, request_hash="h", status="queued", attempts=n, priority=priority)
            for n in attempts
        ]
        session.add_all(jobs)
        session.flush()
        return [job.id for job in jobs]


def request(job_id: str, celery_prio: int | None = None) -> SimpleRequest:
    return SimpleRequest(
        id=f"task-{job_id}", name="captionq.caption",
        args=(CaptionMessage(job_ids=[job_id]).model_dump(),), kwargs={},
        delivery_info={"exchange": "captionq.gpu", "routing_key": "captionq.gpu",
                       "priority": celery_prio},
        hostname="test", ignore_result=True, reply_to=None, correlation_id=None, request_dict={},
    )


def test_the_countdown_grows_with_each_jobs_attempts(
    tasks: tuple[ModuleType, RecordingPublisher], store: str
) -> None:
    module, publisher = tasks
    ids = add_jobs(store, attempts=[0, 1, 2, 3, 5])  # the claim makes them 1, 2, 3, 4, 6
    module.caption.run([request(job_id) for job_id in ids])
    delays = {job.id: delay for job, delay in publisher.captions_sent}
    assert set(delays) == set(ids)  # every job is retried...
    by_attempt = [delays[job_id] for job_id in ids]
    assert by_attempt == sorted(by_attempt), by_attempt  # ...later the more it has been tried
    assert by_attempt[-1] > 4 * by_attempt[0], by_attempt


def test_the_countdown_is_jittered_and_capped(
    tasks: tuple[ModuleType, RecordingPublisher], store: str
) -> None:
    module, publisher = tasks
    same = add_jobs(store, attempts=[2] * 6)
    many = add_jobs(store, attempts=[40])
    module.caption.run([request(job_id) for job_id in [*same, *many]])
    delays = {job.id: delay for job, delay in publisher.captions_sent}
    assert len({delays[job_id] for job_id in same}) > 1  # no herd comes back at once
    assert 0 < delays[many[0]] <= 60.0


def test_after_a_failed_claim_each_job_is_published_again_at_its_own_priority(
    tasks: tuple[ModuleType, RecordingPublisher], monkeypatch: pytest.MonkeyPatch
) -> None:
    module, publisher = tasks

    def refused(*_: object, **__: object) -> None:
        raise ClaimError("claim failed: OperationalError")

    monkeypatch.setattr(batch, "process", refused)
    module.caption.run([
        request("job_urgent", celery_priority(9)),
        request("job_low", celery_priority(0)),
        request("job_old", None),  # a message whose broker kept no priority
    ])
    sent = [(job.id, job.priority) for job, _ in publisher.captions_sent]
    assert sent == [("job_urgent", 9), ("job_low", 0), ("job_old", PRIORITY_DEFAULT)]
    assert all(delay > 0 for _, delay in publisher.captions_sent)


def test_when_a_batch_of_a_large_message_raises_its_later_jobs_are_published_again(
    tasks: tuple[ModuleType, RecordingPublisher], store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message of more jobs than a batch runs as consecutive batches and is acknowledged
    whatever happens: if one batch raises (the database away while it stores), the jobs of
    the batches after it, never claimed, go back to the broker before the acknowledgement."""
    module, publisher = tasks
    monkeypatch.setattr(module, "settings", module.settings.model_copy(update={"batch_size": 4}))
    ids = add_jobs(store, attempts=[0] * 12)
    ran: list[list[str]] = []

    def process(job_ids: Sequence[str], **_: object) -> batch.BatchReport:
        ran.append(list(job_ids))
        if len(ran) == 2:
            raise RuntimeError("the database went away while the batch was stored")
        return batch.BatchReport()

    monkeypatch.setattr(batch, "process", process)
    message = SimpleRequest(
        id="task-12", name="captionq.caption",
        args=(CaptionMessage(job_ids=ids).model_dump(),), kwargs={},
        delivery_info={"priority": celery_priority(7)}, hostname="test", ignore_result=True,
        reply_to=None, correlation_id=None, request_dict={},
    )  # fmt: skip
    with pytest.raises(RuntimeError):
        module._caption([message])
    assert ran == [ids[:4], ids[4:8]]  # the third batch did not run...
    assert [(job.id, job.priority) for job, _ in publisher.captions_sent] == [
        (job_id, 7) for job_id in ids[8:]
    ]  # ...its jobs are published again, at the message's priority


def test_jobs_put_back_are_published_before_the_callbacks(
    tasks: tuple[ModuleType, RecordingPublisher], store: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """If the broker refuses the callbacks (beat sends committed ones within seconds), the
    jobs the batch put back have been published already: their messages are not left
    for the reaper's slower broker reads to find missing. The task ends with one line
    saying so, not a traceback."""
    module, publisher = tasks

    def refused(deliveries: Sequence[DeliveryRef]) -> None:
        raise RedisConnectionError("the broker went away")

    monkeypatch.setattr(publisher, "deliveries", refused)
    ids = add_jobs(store, attempts=[0, 0])
    module.caption.run([request(job_id) for job_id in ids])
    assert sorted(job.id for job, _ in publisher.captions_sent) == sorted(ids)
    [line] = [r for r in caplog.records if "the broker is away" in r.getMessage()]
    assert line.exc_info is None
    assert "beat sends the callbacks" in line.getMessage()


def test_an_error_that_is_not_the_brokers_is_raised_as_it_was(
    tasks: tuple[ModuleType, RecordingPublisher], store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module, publisher = tasks

    def broken(deliveries: Sequence[DeliveryRef]) -> None:
        raise ValueError("a bug")

    monkeypatch.setattr(publisher, "deliveries", broken)
    ids = add_jobs(store, attempts=[0])
    with pytest.raises(ValueError, match="a bug"):
        module.caption.run([request(job_id) for job_id in ids])


def test_a_fault_met_while_the_broker_is_away_is_raised_not_the_outage(
    tasks: tuple[ModuleType, RecordingPublisher], store: str, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A batch of a large message raises (a bug, say) and publishing its later jobs again
    meets the broker away: the bug ends the task, with its traceback; the outage is a
    line (the reaper finds those jobs)."""
    module, publisher = tasks
    monkeypatch.setattr(module, "settings", module.settings.model_copy(update={"batch_size": 2}))
    ids = add_jobs(store, attempts=[0] * 4)

    def process(job_ids: Sequence[str], **_: object) -> batch.BatchReport:
        raise TypeError("a bug in the batch")

    def away(jobs: Sequence[JobRef], **_: object) -> None:
        raise RedisConnectionError("Error 111 connecting to the broker")

    monkeypatch.setattr(batch, "process", process)
    monkeypatch.setattr(publisher, "captions", away)
    message = SimpleRequest(
        id="task-4", name="captionq.caption", args=(CaptionMessage(job_ids=ids).model_dump(),),
        kwargs={}, delivery_info={}, hostname="test", ignore_result=True, reply_to=None,
        correlation_id=None, request_dict={},
    )  # fmt: skip
    with pytest.raises(TypeError, match="a bug in the batch"):
        module.caption.run([message])
    [line] = [r.getMessage() for r in caplog.records if "the broker is away" in r.getMessage()]
    assert "publishes again the 2 jobs this message had left" in line
