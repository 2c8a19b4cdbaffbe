"""The priority a caption task was published with is the one its worker reads back,
through a real Redis: what a failed claim publishes again with. Jobs of one priority
share messages of up to ``CAPTION_MESSAGE_JOBS``; a message of version 1 (one job) is
still read. And what Celery's logs and events show of a task's arguments."""

from __future__ import annotations

import redis
from celery import Celery
from celery.utils.saferepr import saferepr
from celery.worker.request import Request
from celery_batches import SimpleRequest
from kombu import Exchange, Queue

from schemas import keys
from schemas.broker import ARGSREPR_MAX, celery_config, send_captions, send_deliveries
from schemas.messages import (
    CAPTION_MESSAGE_JOBS,
    DELIVER_BATCH_MAX,
    CaptionMessageV1,
    DeliveryRef,
    JobRef,
)
from schemas.names import QUEUE_GPU, QUEUE_IO, TASK_CAPTION, celery_priority
from worker.tasks import caption_jobs


def read_back(app: Celery, messages: int) -> list[list[JobRef]]:
    """The jobs of each of the next ``messages`` caption messages, in the order served,
    read as the worker reads them."""
    read = []
    with (
        app.connection_for_read() as connection,
        connection.SimpleQueue(
            Queue(QUEUE_GPU, Exchange(QUEUE_GPU), routing_key=QUEUE_GPU)
        ) as queue,
    ):
        for _ in range(messages):
            message = queue.get(timeout=10)
            # What celery-batches hands the caption task, built as the worker builds it.
            request = SimpleRequest.from_request(Request(message, app=app, task=object()))
            read.append(caption_jobs(request))
            message.ack()
    client = redis.Redis.from_url(app.conf.broker_url)
    assert sum(client.llen(name) for name in keys.queue_lists(QUEUE_GPU)) == 0  # none left
    return read


def test_a_caption_request_carries_the_priority_it_was_published_at(redis_db: str) -> None:
    app = Celery("captionq-test")
    app.conf.update(celery_config(redis_db))
    published = [JobRef("job_urgent", 9), JobRef("job_default", 5), JobRef("job_low", 0)]
    send_captions(app, published)
    # served most urgent first, each at its own priority
    assert read_back(app, 3) == [[job] for job in published]


def test_jobs_of_one_priority_and_delay_share_messages(redis_db: str) -> None:
    app = Celery("captionq-test")
    app.conf.update(celery_config(redis_db))
    bulk = [JobRef(f"job_{i:02}", 5) for i in range(2 * CAPTION_MESSAGE_JOBS + 3)]
    urgent = [JobRef("job_urgent_a", 9), JobRef("job_urgent_b", 9)]
    send_captions(app, bulk[:10] + urgent + bulk[10:])
    assert read_back(app, 4) == [
        urgent,
        bulk[:CAPTION_MESSAGE_JOBS],
        bulk[CAPTION_MESSAGE_JOBS : 2 * CAPTION_MESSAGE_JOBS],
        bulk[2 * CAPTION_MESSAGE_JOBS :],
    ]
    # A delay is a message's: jobs due at different times never share one.
    send_captions(app, bulk[:3], countdown=[0.0, 0.0, 30.0])
    assert read_back(app, 2) == [bulk[:2], bulk[2:3]]


def test_a_version_1_message_left_across_an_upgrade_is_read(redis_db: str) -> None:
    app = Celery("captionq-test")
    app.conf.update(celery_config(redis_db))
    app.send_task(TASK_CAPTION, args=[{"schema_version": 1, "job_id": "job_old", "attempt": 1}],
                  queue=QUEUE_GPU, priority=celery_priority(5))  # fmt: skip
    app.send_task(TASK_CAPTION, args=[{"schema_version": 2, "job_ids": []}], queue=QUEUE_GPU,
                  priority=celery_priority(5))  # fmt: skip
    assert read_back(app, 2) == [[JobRef("job_old", 5)], []]  # the malformed one: dropped


def test_a_task_describes_its_arguments_as_celery_would(redis_db: str) -> None:
    """Celery's logs and events show a task's arguments (``argsrepr``): we write it
    ourselves, cheaply, and it reads as Celery's own ``saferepr`` would, within its
    bound."""
    app = Celery("captionq-test")
    app.conf.update(celery_config(redis_db))
    send_captions(app, [JobRef("job_one", 5)])
    ids = [f"msg_{i:032x}" for i in range(DELIVER_BATCH_MAX)]
    send_deliveries(
        app, [DeliveryRef(i, "https://hooks.example/in") for i in ids], batch_max=DELIVER_BATCH_MAX
    )
    with app.connection_for_read() as connection:
        for queue_name in (QUEUE_GPU, QUEUE_IO):
            with connection.SimpleQueue(
                Queue(queue_name, Exchange(queue_name), routing_key=queue_name)
            ) as queue:
                message = queue.get(timeout=10)
                args, kwargs, _ = message.decode()
                argsrepr = message.headers["argsrepr"]
                assert message.headers["kwargsrepr"] == saferepr(kwargs) == "{}"
                if queue_name == QUEUE_GPU:
                    assert argsrepr == saferepr(args)
                else:  # cut at the same bound
                    assert len(argsrepr) == ARGSREPR_MAX
                    assert saferepr(args, ARGSREPR_MAX).startswith(argsrepr[:-40])
                message.ack()


def test_one_job_a_message_is_version_1_for_workers_of_an_earlier_release(
    redis_db: str,
) -> None:
    """``CAPTION_MESSAGE_JOBS=1``, set while GPU workers of a release before message
    version 2 run: each job's message is exactly a version-1 message (those workers
    validate it strictly), and this release reads it too."""
    app = Celery("captionq-test")
    app.conf.update(celery_config(redis_db))
    jobs = [JobRef(f"job_{i}", 5) for i in range(3)]
    send_captions(app, jobs, per_message=1)
    gpu = Queue(QUEUE_GPU, Exchange(QUEUE_GPU), routing_key=QUEUE_GPU)
    with app.connection_for_read() as connection, connection.SimpleQueue(gpu) as queue:
        raw = [queue.get(timeout=10) for _ in jobs]
        bodies = [message.payload[0][0] for message in raw]
        for message in raw:
            message.ack()
    assert [CaptionMessageV1.model_validate(body) for body in bodies] == [
        CaptionMessageV1(job_id=job.id) for job in jobs
    ]
    send_captions(app, jobs, per_message=1)
    assert read_back(app, 3) == [[job] for job in jobs]
    send_captions(app, jobs, per_message=2)  # and any other size, in version 2
    assert read_back(app, 2) == [jobs[:2], jobs[2:]]
