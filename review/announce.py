"""Decisions' callbacks go out at once: their outbox rows, committed with the decision,
are handed to the IO workers by task name (the desk never imports the worker). Should
the broker be away, nothing is lost: beat sends every row that is due."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from celery import Celery

from schemas.broker import celery_config, send_deliveries
from schemas.messages import DELIVER_BATCH_MAX

log = logging.getLogger("captionq.review")


class Announcer:
    """One broker connection pool per desk process."""

    def __init__(self, redis_url: str) -> None:
        self.celery = Celery("captionq-review")
        self.celery.conf.update(celery_config(redis_url))

    def send(self, rows: Sequence[tuple[str, str]]) -> None:
        if not rows:
            return
        try:
            send_deliveries(self.celery, rows, batch_max=DELIVER_BATCH_MAX)
        except Exception as exc:  # committed rows: beat sends them on its next tick
            log.warning("%d callbacks left for beat to send: %s", len(rows), exc)
