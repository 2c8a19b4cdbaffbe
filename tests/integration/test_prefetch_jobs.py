"""A GPU worker holds as many jobs as its prefetch says, whatever the size of the
messages they come in: a bulk submission's jobs share caption messages of up to 8, and
a message of k jobs takes k of the worker's prefetch until it is acknowledged (jobs a
worker holds are jobs no other worker can take). Its batches are whole messages of
``BATCH_SIZE`` jobs. A real GPU worker process (pipelined pool, the no-op model made
slow), real Redis, SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlmodel import col, select

from schemas import queues
from schemas.names import QUEUE_GPU
from schemas.settings import CoreSettings
from schemas.store.sessions import session_scope
from schemas.tables import Job, JobStatus
from tests.support.images import png
from tests.support.services import LOOPBACK, LOOPBACK_ENV
from tests.support.stack import Stack
from tests.support.waiting import wait_for

BATCH_SIZE = 8
MESSAGES = 5  # a bulk submission of 40 jobs: five messages of 8


@pytest.fixture
def stack(database_url: str, redis_db: str, tmp_path: Path) -> Iterator[Stack]:
    redis.Redis.from_url(redis_db).flushdb()
    settings = CoreSettings(
        database_url=database_url, redis_url=redis_db, blob_store="db", **LOOPBACK
    )
    built = Stack.open(settings, env={"HF_HUB_OFFLINE": "1", **LOOPBACK_ENV}, logdir=tmp_path)
    try:
        yield built
    finally:
        built.stop()


def statuses(url: str, ids: list[str]) -> list[str]:
    with session_scope(url) as session:
        return list(session.exec(select(Job.status).where(col(Job.id).in_(ids))).all())


def test_a_worker_prefetches_jobs_not_messages(stack: Stack, redis_db: str) -> None:
    # One batch at a time; its prefetch: (PIPELINE_BATCHES + 1) x BATCH_SIZE = 16 jobs.
    worker = stack.start("gpu", CAPTIONER_MODEL="captionq/noop", NOOP_MODEL_S="2.5",
                         BATCH_SIZE=str(BATCH_SIZE), PIPELINE_BATCHES="1")  # fmt: skip
    accepted = stack.client.submit_bulk(
        [{"image": png((i * 5, 90, 160)), "styles": ["playful"], "platforms": ["x"],
          "variants": 1} for i in range(MESSAGES * BATCH_SIZE)]
    )  # fmt: skip
    ids = [a.id for a in accepted]
    client = redis.Redis.from_url(redis_db)
    held: list[int] = []  # messages the worker holds, read all through the run

    def stored() -> bool:
        held.append(queues.taken(client)[QUEUE_GPU])
        return set(statuses(stack.database_url, ids)) == {JobStatus.succeeded}

    wait_for(stored, timeout_s=120, what="every job stored")
    # The batch in the model and the next: 16 jobs (counted in messages, the prefetch of
    # 16 would have taken all five messages, 40 jobs, at once). The rest waited on the list.
    assert 2 <= max(held) <= 3, held
    # Each batch was one whole message of 8 jobs.
    batches = re.findall(r"batch of (\d+): (\d+) succeeded", worker.output())
    assert batches == [(str(BATCH_SIZE), str(BATCH_SIZE))] * MESSAGES, worker.output()[-3000:]
    # Every message acknowledged: each once its batch returns, a moment after it stored.
    wait_for(lambda: queues.taken(client)[QUEUE_GPU] == 0, timeout_s=30,
             what="every message acknowledged")  # fmt: skip
