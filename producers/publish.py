"""Publishing to the broker by task name: producers never import the worker (nor torch)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

from celery import Celery

from schemas.broker import celery_config, offer_deliveries, send_jobs
from schemas.messages import DeliveryRef, JobRef


@lru_cache(maxsize=4)
def producer_app(redis_url: str) -> Celery:
    app = Celery("captionq-producer")
    app.conf.update(celery_config(redis_url))
    return app


def publish_jobs(*, redis_url: str, jobs: Sequence[JobRef], per_message: int) -> None:
    """Publish each job's next task: a fetch task for an image URL not fetched yet, else
    its caption task (``per_message`` jobs to a caption message at most); at its
    priority, over one broker connection."""
    send_jobs(producer_app(redis_url), jobs, per_message=per_message)


def publish_deliveries(*, redis_url: str, deliveries: Sequence[DeliveryRef]) -> None:
    """Ask the IO workers to send these committed outbox rows now (beat sends them
    anyway if the broker cannot take them)."""
    offer_deliveries(producer_app(redis_url), deliveries)
