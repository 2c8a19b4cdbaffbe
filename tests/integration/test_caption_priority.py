"""The priority a caption task was published with is the one its worker reads back,
through a real Redis: what a failed claim publishes again with."""

from __future__ import annotations

from celery import Celery
from celery.worker.request import Request
from celery_batches import SimpleRequest
from kombu import Exchange, Queue

from schemas.broker import celery_config, send_captions
from schemas.messages import JobRef
from schemas.names import QUEUE_GPU
from worker.tasks import caption_job


def test_a_caption_request_carries_the_priority_it_was_published_at(redis_db: str) -> None:
    app = Celery("captionq-test")
    app.conf.update(celery_config(redis_db))
    published = [JobRef("job_urgent", 9), JobRef("job_default", 5), JobRef("job_low", 0)]
    send_captions(app, published)
    read: list[JobRef | None] = []
    with app.connection_for_read() as connection, connection.SimpleQueue(
        Queue(QUEUE_GPU, Exchange(QUEUE_GPU), routing_key=QUEUE_GPU)
    ) as queue:
        for _ in published:
            message = queue.get(timeout=10)
            # What celery-batches hands the caption task, built as the worker builds it.
            request = SimpleRequest.from_request(Request(message, app=app, task=object()))
            read.append(caption_job(request))
            message.ack()
    assert read == published  # served most urgent first, each at its own priority
