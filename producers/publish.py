"""Publishing to the broker by task name: producers never import the worker (nor torch)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache

from celery import Celery

from schemas.broker import celery_config, send_captions, send_deliveries
from schemas.messages import DELIVER_BATCH_MAX

log = logging.getLogger("captionq.publish")


@lru_cache(maxsize=4)
def producer_app(redis_url: str) -> Celery:
    app = Celery("captionq-producer")
    app.conf.update(celery_config(redis_url))
    return app


def publish_captions(*, redis_url: str, jobs: Sequence[tuple[str, int]]) -> None:
    """Publish one caption task per (job id, job priority), over one broker connection."""
    send_captions(producer_app(redis_url), jobs)


def publish_delivery(*, redis_url: str, delivery_id: str, url: str) -> None:
    """Ask the IO workers to send an outbox row now (beat would find it anyway)."""
    send_deliveries(producer_app(redis_url), [(delivery_id, url)], batch_max=1)


def publish_deliveries(*, redis_url: str, deliveries: Sequence[tuple[str, str]]) -> None:
    """Ask the IO workers to send these outbox rows, given as (id, URL), now: one task per
    URL. A failure to publish loses nothing (beat sends what is due), so it is logged."""
    try:
        send_deliveries(producer_app(redis_url), deliveries, batch_max=DELIVER_BATCH_MAX)
    except Exception as exc:  # the rows are committed: beat sends them anyway
        log.warning(
            "could not publish %d deliveries (%s); beat will send them", len(deliveries), exc
        )
