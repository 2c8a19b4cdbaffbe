"""Slow image servers hold fetch workers only, on SQLite and PostgreSQL: while image
servers that send a byte a second hold every thread of the fetch pool, the jobs of
inline images are captioned and their callbacks sent, by the IO workers, before any
of those fetches has ended (workers as production runs them: a pool per queue)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

import pytest

from schemas.settings import CoreSettings
from schemas.tables import JobStatus
from tests.support.images import png
from tests.support.processes import THREADS
from tests.support.servers import LoopbackServer
from tests.support.services import LOOPBACK, LOOPBACK_ENV
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

FETCH_THREADS = int(THREADS[THREADS.index("-c") + 1])  # the harness's fetch pool
DRIP_S = 20  # FETCH_TIMEOUT_S: how long each slow server holds its fetch thread
TIMINGS = {
    "FETCH_TIMEOUT_S": str(DRIP_S),
    "FETCH_LEASE_S": str(DRIP_S + 10),
    "FETCH_MAX_ATTEMPTS": "1",
    # One tenant, one host: the caps leave every fetch thread to the slow servers.
    "FETCH_TENANT_MAX": "64",
    "FETCH_HOST_MAX": "64",
    "BATCH_INTERVAL_S": "0.1",
}


@dataclass
class DripServer:
    """Image URLs whose server sends one byte a second, counting fetches in flight."""

    server: LoopbackServer = field(default_factory=LoopbackServer)
    in_flight: int = 0
    ended: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.server.fallback = self._drip

    def _drip(self, request: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.in_flight += 1
        try:
            request.send_response(200)
            request.send_header("Content-Type", "image/png")
            request.send_header("Content-Length", "100000")
            request.end_headers()
            for _ in range(3 * DRIP_S):
                request.wfile.write(b"\x89")
                request.wfile.flush()
                time.sleep(1)
        except OSError:
            pass  # the fetch gave up at its deadline and closed the connection
        finally:
            with self.lock:
                self.in_flight -= 1
                self.ended += 1


@pytest.fixture(scope="module")
def world(
    database_url: str, redis_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Stack, DripServer]]:
    settings = CoreSettings(
        database_url=database_url, redis_url=redis_db, blob_store="db", **LOOPBACK
    )
    env = {"CAPTIONER_MODEL": "captionq/noop", "HF_HUB_OFFLINE": "1", **LOOPBACK_ENV, **TIMINGS}
    stack = Stack.open(settings, env=env, logdir=tmp_path_factory.mktemp("isolation"))
    drips = DripServer()
    try:
        stack.start("gpu")
        stack.start("io")
        fetch = stack.start("fetch")
        yield stack, drips
    finally:
        # Its threads would finish their slow fetches first on a warm shutdown.
        fetch.process.kill()
        stack.stop()
        drips.server.stop()


def until(condition: object, what: str, stack: Stack, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}, in {timeout_s:.0f}s\n{stack.logs()}")
        time.sleep(0.05)


def test_slow_image_servers_hold_fetch_threads_and_nothing_else(
    world: tuple[Stack, DripServer],
) -> None:
    stack, drips = world
    client, receiver = stack.client, stack.receiver
    slow = client.submit_bulk(
        [
            {"image": drips.server.url(f"/drip/{n}.png"), "styles": ["playful"],
             "platforms": ["x"], "variants": 1, "callback_url": receiver.url}
            for n in range(2 * FETCH_THREADS)
        ]  # fmt: skip
    )
    # Every fetch thread is held, and as many slow fetches again wait for one.
    until(lambda: drips.in_flight == FETCH_THREADS, "the fetch pool never filled", stack, 30)
    inline = client.submit_bulk(
        [
            {"image": png((40 * n, 90, 160)), "styles": ["playful"], "platforms": ["x"],
             "variants": 1, "callback_url": receiver.url}
            for n in range(4)
        ]  # fmt: skip
    )
    inline_ids = {item.id for item in inline}

    def called_back() -> bool:
        done = {r.job_id for r in receiver.received if r.event_type == "job.succeeded"}
        return inline_ids <= done

    until(called_back, "the inline jobs' callbacks did not come", stack, 2 * DRIP_S)
    # ... while every slow fetch was still in flight or waiting for a thread.
    assert drips.ended == 0, "a slow fetch ended before the inline jobs' callbacks came"
    assert drips.in_flight == FETCH_THREADS
    statuses = {client.get(item.id).status for item in slow}
    assert statuses == {JobStatus.fetching}, statuses
    assert all(r.verified for r in receiver.received)
