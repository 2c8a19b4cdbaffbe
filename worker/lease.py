"""The lease keeper: one thread per worker process that watches the batches in hand.

A pipelined GPU worker holds up to ``pipeline_batches`` batches at once (one being
prepared, one generating, one being stored). While a batch is held the keeper renews
the lease of its jobs every third of ``job_lease_s`` (a killed worker stops renewing,
and the reaper re-publishes its jobs within a lease). It also bounds the batches,
because Celery's thread and solo pools have no task time limits:

- a batch held past ``batch_time_limit_s`` is abandoned;
- after SIGTERM (``begin_shutdown``), past ``shutdown_grace_s`` likewise.

Abandoning hands back the jobs of every batch in hand (the process ends, so none of
them can finish) (re-published, or failed ``attempts_exhausted``
when they have had their attempts) and ends the process with ``EX_TEMPFAIL``, so
that its supervisor starts a fresh one: a hung CUDA call cannot be interrupted
from Python, only its process can be replaced.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping

from schemas.settings import WorkerSettings
from schemas.store.jobs import renew_lease
from schemas.store.sessions import session_scope

log = logging.getLogger("captionq.lease")

EX_TEMPFAIL = 75


class LeaseKeeper:
    def __init__(
        self,
        settings: WorkerSettings,
        *,
        hand_back: Callable[[Mapping[str, int]], None],
        exit_process: Callable[[int], None] = os._exit,
    ) -> None:
        self._settings = settings
        self._hand_back = hand_back
        self._exit = exit_process
        self._lock = threading.Lock()
        # token -> (its jobs: job id -> the attempt its claim made), when it was taken
        self._batches: dict[int, tuple[dict[str, int], float]] = {}
        self._tokens = itertools.count(1)
        self._shutdown_at: float | None = None
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="captionq-lease", daemon=True)
            self._thread.start()

    def hold(self, jobs: Mapping[str, int]) -> int:
        """A batch in hand is now ``jobs`` (job id → the attempt its claim made; leases
        set by the claim); the token it returns releases it. The keeper renews, and
        hands back, each job only while it runs as that claim."""
        with self._lock:
            token = next(self._tokens)
            self._batches[token] = (dict(jobs), time.monotonic())
        self.start()
        return token

    @property
    def held(self) -> int:
        """Jobs in the batches in hand (claimed, not finished)."""
        with self._lock:
            return sum(len(jobs) for jobs, _ in self._batches.values())

    @property
    def shutting_down(self) -> bool:
        """SIGTERM came: a batch not yet claimed should be handed back, not started."""
        return self._shutdown_at is not None

    def release(self, token: int) -> None:
        with self._lock:
            self._batches.pop(token, None)

    def begin_shutdown(self) -> None:
        """SIGTERM: the batch in hand gets ``shutdown_grace_s`` more, then is handed back."""
        with self._lock:
            self._shutdown_at = time.monotonic() + self._settings.shutdown_grace_s
        self.start()
        self._wake.set()

    def _run(self) -> None:
        period = max(0.2, min(self._settings.job_lease_s / 3, 10.0))
        while True:
            self._wake.wait(period)
            self._wake.clear()
            try:
                self._tick()
            except Exception:  # the database may be away; try again next period
                log.exception("lease keeper tick failed")

    def _tick(self) -> None:
        with self._lock:
            batches, shutdown_at = list(self._batches.values()), self._shutdown_at
        if not batches:
            return
        jobs = {job: attempt for held, _ in batches for job, attempt in held.items()}
        now = time.monotonic()
        overdue = now - min(started for _, started in batches) > self._settings.batch_time_limit_s
        if overdue or (shutdown_at is not None and now > shutdown_at):
            reason = "time limit" if overdue else "shutdown grace"
            log.error("%d batches (%d jobs) in hand, one past its %s: handing them back, "
                      "exiting", len(batches), len(jobs), reason)
            self._hand_back(jobs)
            logging.shutdown()
            self._exit(EX_TEMPFAIL)
            return
        with session_scope(self._settings.database_url) as session:
            renew_lease(session=session, jobs=jobs, lease_s=self._settings.job_lease_s)
