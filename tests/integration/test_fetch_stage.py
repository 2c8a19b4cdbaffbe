"""The fetch stage with real processes, on SQLite and PostgreSQL: IO workers fetch image
URLs (each fetch error with its code and its own attempts), and the GPU worker, whose
every connect is recorded, never opens a socket to the image server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlmodel import col, select

from schemas.settings import CoreSettings
from schemas.store.sessions import read_scope
from schemas.tables import Job, JobStatus
from tests.support.images import png
from tests.support.servers import LoopbackServer, redirect, send
from tests.support.services import LOOPBACK, LOOPBACK_ENV
from tests.support.sockets import audit_env, audited, remote_ports
from tests.support.stack import Stack

pytestmark = pytest.mark.integration

RETRY_AFTER_S = 6
HOST_MAX = 3
TIMINGS = {
    "FETCH_TIMEOUT_S": "1.5",
    "FETCH_LEASE_S": "4",
    "FETCH_MAX_ATTEMPTS": "2",
    "FETCH_HOST_MAX": str(HOST_MAX),
    "BATCH_INTERVAL_S": "0.1",
}


@dataclass
class ImageServer:
    """A loopback image server that counts requests per path and fetches in flight."""

    server: LoopbackServer = field(default_factory=LoopbackServer)
    hits: dict[str, list[float]] = field(default_factory=dict)
    in_flight: int = 0
    most_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.server.fallback = self._answer

    def _answer(self, request: BaseHTTPRequestHandler) -> None:
        path = urlsplit(request.path).path
        counted = path.startswith("/ok/")  # answers whole: in flight exactly while fetched
        with self.lock:
            self.hits.setdefault(path, []).append(time.monotonic())
            tries = len(self.hits[path])
            self.in_flight += counted
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            _respond(request, path, tries)
        finally:
            with self.lock:
                self.in_flight -= counted


def _drip(request: BaseHTTPRequestHandler) -> None:
    """A byte a second, far past FETCH_TIMEOUT_S."""
    request.send_response(200)
    request.send_header("Content-Type", "image/png")
    request.send_header("Content-Length", "100000")
    request.end_headers()
    for _ in range(30):
        request.wfile.write(b"\x89")
        request.wfile.flush()
        time.sleep(1)


def _busy(request: BaseHTTPRequestHandler, tries: int) -> None:
    """503 with Retry-After the first time, then the image."""
    if tries > 1:
        send(request, png(7))
        return
    send(request, b"busy", status=503, content_type="text/plain",
         headers={"Retry-After": str(RETRY_AFTER_S)})  # fmt: skip


ANSWERS: dict[str, Callable[[BaseHTTPRequestHandler, int], None]] = {
    "/missing.png": lambda r, _: send(r, b"gone", status=404, content_type="text/plain"),
    "/not-implemented.png": lambda r, _: send(r, b"no", status=501, content_type="text/plain"),
    "/busy.png": _busy,
    "/drip.png": lambda r, _: _drip(r),
    "/page.png": lambda r, _: send(r, b"<html>hello</html>", content_type="text/html"),
    "/junk.png": lambda r, _: send(r, b"these bytes are no image at all"),
    "/inward.png": lambda r, _: redirect("http://169.254.169.254/latest/meta-data/")(r),
}


def _respond(request: BaseHTTPRequestHandler, path: str, tries: int) -> None:
    if path.startswith("/ok/"):
        time.sleep(0.2)  # long enough for fetches to overlap
        send(request, png(int(path.split("/")[2].split(".")[0])))
        return
    answer = ANSWERS.get(path)
    if answer is None:
        send(request, b"?", status=404, content_type="text/plain")
        return
    answer(request, tries)


@dataclass
class FetchWorld:
    stack: Stack
    images: ImageServer
    connect_log: Path
    gpu_ports: set[int]  # remote ports of the GPU worker's sockets, sampled


@pytest.fixture(scope="module")
def world(
    database_url: str, redis_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FetchWorld]:
    logdir = tmp_path_factory.mktemp("fetch")
    settings = CoreSettings(
        database_url=database_url, redis_url=redis_db, blob_store="db", **LOOPBACK
    )
    env = {"CAPTIONER_MODEL": "captionq/noop", "HF_HUB_OFFLINE": "1", **LOOPBACK_ENV, **TIMINGS}
    stack = Stack.open(settings, env=env, logdir=logdir)
    images = ImageServer()
    connect_log = logdir / "gpu-connects.txt"
    sampled: set[int] = set()
    stop = threading.Event()
    try:
        with ThreadPoolExecutor(2) as starting:  # side by side: each waits on its imports
            gpu_started = starting.submit(stack.start, "gpu", **audit_env(connect_log))
            io_started = starting.submit(stack.start, "io+fetch")  # no beat: no reaper needed here
            gpu, _ = gpu_started.result(), io_started.result()

        def sample() -> None:
            while not stop.is_set():
                sampled.update(remote_ports(gpu.process.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        yield FetchWorld(stack, images, connect_log, sampled)
    finally:
        stop.set()
        stack.stop()
        images.server.stop()


CASES = {  # path -> (status, error code, fetch attempts)
    "/ok/1.png": ("succeeded", None, 1),
    "/ok/2.png": ("succeeded", None, 1),
    "/ok/3.png": ("succeeded", None, 1),
    "/ok/4.png": ("succeeded", None, 1),
    "/ok/5.png": ("succeeded", None, 1),
    "/busy.png": ("succeeded", None, 2),
    "/missing.png": ("failed", "fetch_refused", 1),
    "/not-implemented.png": ("failed", "fetch_refused", 1),
    "/drip.png": ("failed", "fetch_attempts_exhausted", 2),
    "/page.png": ("failed", "url_not_image", 1),
    "/junk.png": ("failed", "image_unreadable", 1),
    "/inward.png": ("failed", "url_blocked", 1),
}


def _jobs(world: FetchWorld, ids: list[str]) -> list[Job]:
    with read_scope(world.stack.database_url) as session:
        jobs = list(session.exec(select(Job).where(col(Job.id).in_(ids))).all())
        session.expunge_all()
        return jobs


def test_url_jobs_are_fetched_by_io_workers_each_failure_with_its_code(
    world: FetchWorld,
) -> None:
    client = world.stack.client
    paths = list(CASES)
    accepted = client.submit_bulk(
        [
            {"image": world.images.server.url(path), "styles": ["playful"],
             "platforms": ["x"], "variants": 1}
            for path in paths
        ]  # fmt: skip
    )
    assert {a.status for a in accepted} == {"fetching"}
    ids = [a.id for a in accepted]
    finished = {}
    for job_id in ids:
        finished[job_id] = client.wait(job_id, timeout_s=90)
    jobs = {job.id: job for job in _jobs(world, ids)}
    for path, job_id in zip(paths, ids, strict=True):
        status, code, fetches = CASES[path]
        job, public = jobs[job_id], finished[job_id]
        seen = (public.status, public.error.code if public.error else None, job.fetch_attempts)
        assert seen == (status, code, fetches), (path, public.error, world.stack.logs())
        assert public.fetch_attempts == fetches
        # The model's attempts are the GPU's: a job whose fetch failed never reached it.
        assert job.attempts == (1 if status == "succeeded" else 0), path
        assert (job.image_sha256 is not None) == (status == "succeeded"), path
    busy = world.images.hits["/busy.png"]
    assert busy[1] - busy[0] >= RETRY_AFTER_S - 0.5  # Retry-After honoured
    assert len(world.images.hits["/not-implemented.png"]) == 1  # a 501 is not retried
    assert len(world.images.hits["/drip.png"]) == 2  # its own budget: FETCH_MAX_ATTEMPTS
    assert world.images.most_in_flight <= HOST_MAX  # the per-host cap, across the pool


def test_the_gpu_worker_connects_to_nothing_but_redis_and_the_database(
    world: FetchWorld,
) -> None:
    client = world.stack.client
    urls = [world.images.server.url(f"/ok/{n}.png") for n in range(10, 16)]
    accepted = client.submit_bulk(
        [{"image": url, "styles": ["minimal"], "platforms": ["instagram"]} for url in urls]
    )
    for item in accepted:
        assert client.wait(item.id, timeout_s=60).status == JobStatus.succeeded
    assert all(world.images.hits.get(urlsplit(u).path) for u in urls)  # fetched, by someone
    redis_port = urlsplit(world.stack.settings.redis_url).port
    database = urlsplit(world.stack.database_url.replace("+psycopg", ""))
    allowed = {redis_port} | ({database.port or 5432} if database.scheme == "postgresql" else set())
    connects = audited(world.connect_log)
    assert connects, "the audit hook recorded nothing: is it on the GPU worker's path?"
    assert {port for _, port in connects} <= allowed, connects
    assert world.images.server.port not in {port for _, port in connects}
    assert world.gpu_ports - {0} <= allowed, world.gpu_ports
    assert world.images.server.port not in world.gpu_ports
