"""The priority a caption task was published with is the one its worker reads back,
through a real Redis: what a failed claim publishes again with. And what Celery's
logs and events show of a task's arguments."""

from __future__ import annotations

from celery import Celery
from celery.utils.saferepr import saferepr
from celery.worker.request import Request
from celery_batches import SimpleRequest
from kombu import Exchange, Queue

from schemas.broker import ARGSREPR_MAX, celery_config, send_captions, send_deliveries
from schemas.messages import DELIVER_BATCH_MAX, DeliveryRef, JobRef
from schemas.names import QUEUE_GPU, QUEUE_IO
from worker.tasks import caption_job


def test_a_caption_request_carries_the_priority_it_was_published_at(redis_db: str) -> None:
    app = Celery("captionq-test")
    app.conf.update(celery_config(redis_db))
    published = [JobRef("job_urgent", 9), JobRef("job_default", 5), JobRef("job_low", 0)]
    send_captions(app, published)
    read: list[JobRef | None] = []
    with (
        app.connection_for_read() as connection,
        connection.SimpleQueue(
            Queue(QUEUE_GPU, Exchange(QUEUE_GPU), routing_key=QUEUE_GPU)
        ) as queue,
    ):
        for _ in published:
            message = queue.get(timeout=10)
            # What celery-batches hands the caption task, built as the worker builds it.
            request = SimpleRequest.from_request(Request(message, app=app, task=object()))
            read.append(caption_job(request))
            message.ack()
    assert read == published  # served most urgent first, each at its own priority


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
