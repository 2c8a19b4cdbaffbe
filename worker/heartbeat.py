"""A worker's own heartbeat, independent of Celery's events, heartbeats and gossip (the
solo GPU worker runs without them).

Once its models are loaded and its consumer runs, each worker process refreshes, every
``HEARTBEAT_INTERVAL_S``: a Redis key (``schemas.keys.heartbeat``) that lives three
intervals and says what the worker holds, read by ``captionq status`` and, through the
API's ``captionq_workers_alive``, by the "no worker alive" alert; the
``captionq_worker_heartbeat_timestamp_seconds`` gauge; and ``HEARTBEAT_FILE`` when set,
whose age the Kubernetes liveness probe checks.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import redis

from schemas import keys
from schemas.heartbeats import WorkerBeat
from schemas.settings import WorkerSettings
from worker.metrics import HEARTBEAT

log = logging.getLogger("captionq.worker")


class Heartbeat:
    def __init__(
        self, settings: WorkerSettings, *, pool: str, held: Callable[[], int], model: str
    ) -> None:
        self._settings = settings
        self.name = f"{pool}@{socket.gethostname()}:{os.getpid()}"
        self._pool = pool
        self._held = held
        self._model = model
        self._started = time.time()
        self._stop = threading.Event()
        self._failing = False
        self._client = redis.Redis.from_url(settings.redis_url, socket_timeout=5)

    def start(self) -> None:
        """Beat at once (a worker is alive as soon as it is ready), then every interval,
        until stopped, whatever the first beat did."""
        self._try()
        threading.Thread(target=self._run, name="captionq-heartbeat", daemon=True).start()

    def stop(self) -> None:
        """Stop beating and say so at once (a worker that exits is not alive)."""
        self._stop.set()
        with contextlib.suppress(redis.RedisError):
            self._client.delete(keys.heartbeat(self.name))

    def beat(self) -> None:
        now = time.time()
        value = WorkerBeat(  # first: a worker that cannot say what it holds is not alive
            worker=self.name,
            pool=self._pool,
            pid=os.getpid(),
            model=self._model,
            in_flight=self._held(),
            started_at=self._started,
            at=now,
        )
        HEARTBEAT.set(now)
        if self._settings.heartbeat_file:
            Path(self._settings.heartbeat_file).touch()
        ttl_s = max(1, int(3 * self._settings.heartbeat_interval_s))
        try:
            self._client.set(keys.heartbeat(self.name), value.model_dump_json(), ex=ttl_s)
        except redis.RedisError as exc:
            log.warning("heartbeat not written (Redis away): %s", exc)

    def _run(self) -> None:
        while not self._stop.wait(self._settings.heartbeat_interval_s):
            self._try()

    def _try(self) -> None:
        """One beat. A beat that fails is skipped (and said once, not every interval,
        until one succeeds): the beats never end on their own, or a live worker would
        look dead; while they fail, the key and the liveness file age, so status, the
        alerts and Kubernetes see it."""
        try:
            self.beat()
        except Exception:
            if not self._failing:
                log.exception("heartbeat failed; trying again every interval")
            self._failing = True
            return
        if self._failing:
            log.info("heartbeat written again")
        self._failing = False

