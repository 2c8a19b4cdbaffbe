"""Publishing to the broker by task name: producers never import the worker (nor torch)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from celery import Celery

from schemas.broker import celery_config, send_captions
from schemas.messages import DeliverMessage
from schemas.names import QUEUE_IO, TASK_DELIVER


@lru_cache(maxsize=4)
def producer_app(redis_url: str) -> Celery:
    app = Celery("captionq-producer")
    app.conf.update(celery_config(redis_url))
    return app


def publish_captions(*, redis_url: str, jobs: Sequence[tuple[str, int]]) -> None:
    """Publish one caption task per (job id, job priority), over one broker connection."""
    send_captions(producer_app(redis_url), jobs)


def publish_delivery(*, redis_url: str, delivery_id: str) -> None:
    """Ask the IO workers to send an outbox row now (beat would find it anyway)."""
    producer_app(redis_url).send_task(
        TASK_DELIVER, args=[DeliverMessage(delivery_id=delivery_id).model_dump()], queue=QUEUE_IO
    )
