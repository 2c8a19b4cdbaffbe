"""What a worker process publishes: caption and fetch tasks, deliver tasks, and the
jobs of a batch it gives up on.

One :class:`Publisher` per process, made by ``worker.app`` from its Celery
application; the tasks and the lease keeper use it. It imports no Celery app, so
that ``app`` and ``tasks`` need not import each other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from schemas import broker
from schemas.messages import DeliveryRef, JobRef
from schemas.settings import WorkerSettings
from worker import reaper


class Publisher:
    def __init__(self, app: Any, settings: WorkerSettings) -> None:
        self._app = app
        self._settings = settings

    def captions(
        self, jobs: Sequence[JobRef], *, countdown: float | Sequence[float] = 0.0
    ) -> None:
        """Publish a caption task per job, at its priority, after ``countdown`` seconds
        (one for all, or one per job)."""
        broker.send_captions(self._app, jobs, countdown=countdown,
                             per_message=self._settings.caption_message_jobs)  # fmt: skip

    def jobs(self, jobs: Sequence[JobRef], *, countdown: float | Sequence[float] = 0.0) -> None:
        """Publish each job's next task: its fetch task (``JobRef.fetch``), or its caption
        task."""
        broker.send_jobs(self._app, jobs, countdown=countdown,
                         per_message=self._settings.caption_message_jobs)  # fmt: skip

    def deliveries(self, deliveries: Sequence[DeliveryRef]) -> None:
        """Ask the IO workers to send these outbox rows now."""
        broker.send_deliveries(
            self._app, deliveries, batch_max=self._settings.callback_batch_max
        )

    def hand_back(self, jobs: Mapping[str, int]) -> None:
        """The lease keeper gives up on the batches in hand (``jobs``: job id → the
        attempt its claim made): publish their jobs again (or fail those past their
        attempts, and send their callbacks)."""
        found = reaper.give_back(settings=self._settings, jobs=jobs)
        self.jobs(found.publish)
        self.deliveries(found.deliveries)
