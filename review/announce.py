"""Decisions' callbacks go out at once: their outbox rows, committed with the decision,
are handed to the IO workers by task name (the desk never imports the worker). Should
the broker be away, nothing is lost: beat sends every row that is due."""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery

from schemas.broker import celery_config, offer_deliveries
from schemas.messages import DeliveryRef


class Announcer:
    """One broker connection pool per desk process."""

    def __init__(self, redis_url: str) -> None:
        self.celery = Celery("captionq-review")
        self.celery.conf.update(celery_config(redis_url))

    def send(self, rows: Sequence[DeliveryRef]) -> None:
        if rows:
            offer_deliveries(self.celery, rows)
