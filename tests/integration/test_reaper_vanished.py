"""A job whose message the broker lost outright (kombu takes a message off its list and
records it unacknowledged in two steps: a worker killed between them loses it) is
published again by the reaper once two reads of the broker in a row miss it; a job
whose message waits on a list, is in a worker's hands, or turns up by the second read,
or that has waited less than ``job_queued_stale_s``, is left alone. A message held
unacknowledged past ``job_queued_stale_s`` with jobs still waiting (its worker gone)
is forgotten, as is every other copy of such a job's message, and its waiting jobs are
published again; one whose jobs all run is kept, and so is a delayed one (a retry's
countdown) until it has been due that long. A caption message may carry several
jobs: each is found. Real Redis, SQLite and PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import redis
from celery import Celery
from kombu import Exchange, Queue
from sqlmodel import col, update

from schemas import keys, queues
from schemas.broker import celery_config, send_captions, send_jobs
from schemas.messages import JobRef
from schemas.names import QUEUE_GPU
from schemas.settings import WorkerSettings
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_tenant
from schemas.tables import Job, JobStatus, utcnow
from worker import reaper


def _jobs(url: str, *, statuses: dict[str, JobStatus]) -> dict[str, str]:
    """One job per name, in the given state (a queued one with its image stored, a
    fetching one without), waiting for ten minutes."""
    long_ago = utcnow() - timedelta(minutes=10)
    made: dict[str, str] = {}
    with session_scope(url) as session:
        tenant = create_tenant(session=session, name=f"t-{uuid.uuid4().hex[:8]}")
        for name, status in statuses.items():
            stored = "a" * 64 if status == JobStatus.queued else None
            job = Job(tenant_id=tenant.id, styles=["playful"], platforms=["x"], variants=1,
                      request_hash="0" * 64, status=status, queued_at=long_ago,
                      updated_at=long_ago, image_url="https://images.example/a.png",
                      image_sha256=stored)  # fmt: skip
            session.add(job)
            session.flush()
            made[name] = job.id
    return made


@pytest.fixture
def broker(redis_db: str) -> tuple[redis.Redis, Celery]:
    client = redis.Redis.from_url(redis_db)
    client.flushdb()
    app = Celery("captionq-test")
    app.conf.update(celery_config(redis_db))
    return client, app


def _reap(client: redis.Redis, settings: WorkerSettings) -> reaper.Reaped:
    """A tick, as if ``job_queued_stale_s`` had passed since the last read of the broker."""
    client.delete(keys.REAPER_BROKER_READ)
    return reaper.reap(settings=settings, client=client)


def test_only_a_job_whose_message_is_gone_twice_is_published_again(
    database_url: str, redis_db: str, broker: tuple[redis.Redis, Celery]
) -> None:
    client, app = broker
    jobs = _jobs(
        database_url,
        statuses={"listed": JobStatus.queued, "taken": JobStatus.queued,
                  "gone": JobStatus.queued, "recent": JobStatus.queued,
                  "listed_too": JobStatus.queued,  # in one message with "listed"
                  "late": JobStatus.queued,  # its message turns up by the second read
                  "fetch_gone": JobStatus.fetching, "fetch_listed": JobStatus.fetching},
    )  # fmt: skip
    with session_scope(database_url) as session:  # "recent" has waited a second only
        session.exec(
            update(Job)
            .where(col(Job.id) == jobs["recent"])
            .values(updated_at=utcnow() - timedelta(seconds=1))
        )
    send_captions(app, [JobRef(jobs["taken"], 5)])
    send_captions(app, [JobRef(jobs["listed"], 9), JobRef(jobs["listed_too"], 9)])
    send_jobs(app, [JobRef(jobs["fetch_listed"], 5, fetch=True)])
    settings = WorkerSettings(
        database_url=database_url, redis_url=redis_db, job_queued_stale_s=60
    )
    gpu = Queue(QUEUE_GPU, Exchange(QUEUE_GPU), routing_key=QUEUE_GPU)
    with app.connection_for_read() as connection, connection.SimpleQueue(gpu) as queue:
        held = queue.get(timeout=10)  # a worker holds it, unacknowledged
        assert held.payload[0][0]["job_ids"] in ([jobs["taken"]],
                                                 [jobs["listed"], jobs["listed_too"]])  # fmt: skip
        first = _reap(client, settings)
        assert (first.publish, first.vanished) == ([], 0)  # missing once: maybe in flight
        again = reaper.reap(settings=settings, client=client)  # within job_queued_stale_s
        assert (again.publish, again.vanished) == ([], 0)  # the broker is not read again
        send_captions(app, [JobRef(jobs["late"], 5)])
        found = _reap(client, settings)
        held.ack()
    assert sorted((ref.id, ref.fetch) for ref in found.publish) == sorted(
        [(jobs["gone"], False), (jobs["fetch_gone"], True)]
    )
    assert found.vanished == 2


def test_a_broker_holding_more_than_it_reads_is_left_alone(
    database_url: str, redis_db: str, broker: tuple[redis.Redis, Celery],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    client, app = broker
    jobs = _jobs(database_url, statuses={"gone": JobStatus.queued, "a": JobStatus.queued,
                                         "b": JobStatus.queued})  # fmt: skip
    send_captions(app, [JobRef(jobs["a"], 5), JobRef(jobs["b"], 5)])
    monkeypatch.setattr(queues, "HELD_READ_MAX", 0)  # a and b share one message
    settings = WorkerSettings(database_url=database_url, redis_url=redis_db)
    assert queues.job_ids_held(client, tasks=reaper.JOB_TASKS) is None
    for _ in range(2):
        assert _reap(client, settings).vanished == 0  # a backlog that long drains first
    monkeypatch.setattr(queues, "HELD_READ_MAX", 100)
    _reap(client, settings)
    mine = set(jobs.values())  # (the module's other test left jobs of its own waiting)
    assert [ref.id for ref in _reap(client, settings).publish if ref.id in mine] == [jobs["gone"]]


def test_a_message_held_past_the_stale_limit_gives_back_its_waiting_jobs(
    database_url: str, redis_db: str, broker: tuple[redis.Redis, Celery]
) -> None:
    client, app = broker
    settings = WorkerSettings(database_url=database_url, redis_url=redis_db, job_queued_stale_s=60)
    _reap(client, settings)  # the broker's epoch, new after the flush: settled first
    names = ("waiting", "running", "twice", "busy", "fresh", "delayed")
    jobs = _jobs(database_url, statuses=dict.fromkeys(names, JobStatus.queued))
    with session_scope(database_url) as session:  # claimed, their leases alive
        session.exec(
            update(Job).where(col(Job.id).in_([jobs["running"], jobs["busy"]]))
            .values(status=JobStatus.running, lease_expires_at=utcnow() + timedelta(minutes=5))
        )  # fmt: skip
    send_captions(app, [JobRef(jobs["running"], 5), JobRef(jobs["waiting"], 5)])
    send_captions(app, [JobRef(jobs["twice"], 5)])
    send_captions(app, [JobRef(jobs["twice"], 5)])  # published twice: in two messages
    send_captions(app, [JobRef(jobs["busy"], 5)])
    send_captions(app, [JobRef(jobs["fresh"], 7)])
    send_captions(app, [JobRef(jobs["delayed"], 5)], countdown=900)  # a retry, due later
    gpu = Queue(QUEUE_GPU, Exchange(QUEUE_GPU), routing_key=QUEUE_GPU)
    with app.connection_for_read() as connection, connection.SimpleQueue(gpu) as queue:
        held = [queue.get(timeout=10) for _ in range(6)]  # all held by a worker
        named = {name: [m.delivery_tag for m in held if jobs[name] in m.payload[0][0]["job_ids"]]
                 for name in jobs}  # fmt: skip
        assert held[0].delivery_tag == named["fresh"][0]  # the most urgent first
        shared = held[1].payload[0][0]["job_ids"]
        assert shared == [jobs["running"], jobs["waiting"]]  # the waiting job second
        stale = [m.delivery_tag for m in held[1:]]
        client.zadd(keys.UNACKED_INDEX, {tag: utcnow().timestamp() - 600 for tag in stale})
        found = _reap(client, settings)
        # Forgotten: each stale message with a job still waiting, every copy of it.
        for tag in [*named["waiting"], *named["twice"]]:
            assert client.hexists(keys.UNACKED, tag) is False
        assert len(named["twice"]) == 2
        # Kept: a fresh message (its worker's), a stale one whose jobs all run, and a
        # delayed one held since long before it is due.
        for tag in [*named["fresh"], *named["busy"], *named["delayed"]]:
            assert client.hexists(keys.UNACKED, tag) is True
        again = _reap(client, settings)
        held[0].ack()
    mine = set(jobs.values())  # (the module's other tests left jobs of their own waiting)
    assert sorted(ref.id for ref in found.publish if ref.id in mine) == sorted(
        [jobs["waiting"], jobs["twice"]]
    )
    assert found.unacked == 2
    assert again.unacked == 0  # no copy of a given-back job is left to give it back twice
