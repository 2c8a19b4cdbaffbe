"""What every fault scenario shares: the stack under fault (its own redis-server and
database, workers with short, test-sized timings, a slow image server) and the tally it
ends with: jobs submitted / finished / lost / duplicated and callbacks expected /
delivered / duplicate deliveries, counted from the database and the receiver. One line
per scenario is printed at the end of the run (tests/conftest.py).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler

from sqlmodel import col, func, select

from producers.redis_server import RedisServer
from producers.sdk.calls import job_fields
from schemas.api import JobRequest
from schemas.store.sessions import session_scope
from schemas.tables import TERMINAL_STATUSES, Delivery, Job, JobStatus, Variant
from tests.support.images import png
from tests.support.receivers import Receiver
from tests.support.servers import LoopbackServer, send
from tests.support.stack import Stack

STYLES = ["playful"]
PLATFORMS = ["instagram"]
VARIANTS = 2
SLOTS = len(STYLES) * len(PLATFORMS) * VARIANTS
IMAGE_SIZE = (32, 24)
TIMINGS = {  # seconds
    "BATCH_SIZE": "4",
    "BATCH_INTERVAL_S": "0.2",
    "JOB_LEASE_S": "3",
    "JOB_RECEIVED_GRACE_S": "2",
    "JOB_QUEUED_STALE_S": "5",
    "REAPER_INTERVAL_S": "1",
    "DELIVERY_DISPATCH_INTERVAL_S": "0.5",
    "DELIVERY_LOCK_S": "4",
    "CALLBACK_TIMEOUT_S": "1.5",
    "CALLBACK_RETRY_SCHEDULE_S": "[0, 0.5, 1, 1, 1, 1]",
    "BATCH_TIME_LIMIT_S": "60",
    "SHUTDOWN_GRACE_S": "30",
    "JOB_MAX_ATTEMPTS": "5",
    # The GPU worker never fetches: each model call stands in for model time instead, so
    # that a batch lasts long enough to hit (the image fetches run on the IO workers).
    "NOOP_MODEL_S": "0.4",
    "FETCH_TIMEOUT_S": "3",
    "FETCH_LEASE_S": "4",
    "FETCH_MAX_ATTEMPTS": "3",
}


def slow_png(request: BaseHTTPRequestHandler) -> None:
    """A PNG per path, after a quarter of a second (``/long/``: a second and a half, so
    that fetches are in flight long enough to hit)."""
    time.sleep(1.5 if request.path.startswith("/long/") else 0.25)
    send(request, png(hash(request.path) % 250, IMAGE_SIZE))


@dataclass(kw_only=True)
class FaultStack(Stack):
    redis: RedisServer
    images: LoopbackServer

    def submit(self, n: int, *, slow: bool = True, folder: str = "/img") -> list[str]:
        """``n`` jobs through the in-cluster producer (the same admission as the API): image
        URLs under ``folder`` of the image server, or (not ``slow``) inline images."""
        requests = [
            JobRequest(
                **job_fields(
                    {
                        "image": self.images.url(f"{folder}/{i}.png")
                        if slow
                        else png(i, IMAGE_SIZE),
                        "styles": STYLES,
                        "platforms": PLATFORMS,
                        "variants": VARIANTS,
                        "callback_url": self.receiver.url,
                    }
                )
            )
            for i in range(n)
        ]
        outcomes = self.direct().submit_each(requests)
        refused = [o for o in outcomes if isinstance(o, Exception)]
        assert not refused, refused
        return [o.job_id for o in outcomes]  # type: ignore[union-attr]

    def stop(self) -> None:
        super().stop()
        self.images.stop()
        self.redis.stop()


SCENARIO_REPORT: list[str] = []


@dataclass
class Tally:
    submitted: int
    finished: int
    lost: int
    duplicated: int
    expected_callbacks: int
    delivered: int
    duplicate_deliveries: int
    statuses: dict[str, int]

    def line(self, scenario: str) -> str:
        return (
            f"[{scenario}] jobs submitted={self.submitted} finished={self.finished} "
            f"lost={self.lost} duplicated={self.duplicated} | callbacks "
            f"expected={self.expected_callbacks} delivered={self.delivered} "
            f"duplicate_deliveries={self.duplicate_deliveries} | {self.statuses}"
        )


def tally(database_url: str, job_ids: list[str], receiver: Receiver, slots: int) -> Tally:
    with session_scope(database_url) as session:
        jobs = session.exec(select(Job).where(col(Job.id).in_(job_ids))).all()
        counts = dict(
            session.exec(
                select(Variant.job_id, func.count())
                .where(col(Variant.job_id).in_(job_ids))
                .group_by(col(Variant.job_id))
            ).all()
        )
        deliveries = session.exec(select(Delivery).where(col(Delivery.job_id).in_(job_ids))).all()
    statuses: dict[str, int] = {}
    for job in jobs:
        statuses[job.status] = statuses.get(job.status, 0) + 1
    finished = sum(1 for j in jobs if JobStatus(j.status) in TERMINAL_STATUSES)
    duplicated = sum(1 for n in counts.values() if n != slots)
    duplicated += sum(1 for j in jobs if j.status != JobStatus.succeeded and counts.get(j.id))
    expected = {d.id for d in deliveries}
    got = [h for h in receiver.received if h.webhook_id in expected]
    return Tally(
        submitted=len(job_ids),
        finished=finished,
        lost=len(job_ids) - finished,
        duplicated=duplicated,
        expected_callbacks=len(expected),
        delivered=len({h.webhook_id for h in got}),
        duplicate_deliveries=len(got) - len({h.webhook_id for h in got}),
        statuses=statuses,
    )


def events_per_job(database_url: str, job_ids: list[str]) -> dict[str, int]:
    with session_scope(database_url) as session:
        rows = session.exec(
            select(Delivery.job_id, func.count())
            .where(col(Delivery.job_id).in_(job_ids))
            .group_by(col(Delivery.job_id))
        ).all()
    return dict(rows)


def bodies_stable(receiver: Receiver) -> bool:
    seen: dict[str, bytes] = {}
    return all(seen.setdefault(h.webhook_id, h.raw) == h.raw for h in receiver.received)
