"""A real Celery worker process, a callback receiver, and a client, per database kind."""

from __future__ import annotations

import io
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from PIL import Image

from producers.client import CaptionClient
from producers.demo import CallbackReceiver, worker_command
from schemas.settings import CoreSettings
from schemas.store.tenants import webhook_secret

REPO = Path(__file__).resolve().parents[2]


def png(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_worker(
    *, env: dict[str, str], log: Path, queues: str = "captionq.gpu,captionq.io"
) -> Worker:
    with log.open("wb") as out:
        process = subprocess.Popen(
            worker_command(queues, name=f"test-{os.getpid()}-{time.monotonic_ns()}@%h"),
            cwd=REPO,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    worker = Worker(process, log)
    deadline = time.monotonic() + 90
    while "ready." not in worker.output():
        if process.poll() is not None or time.monotonic() > deadline:
            worker.stop()
            raise RuntimeError(f"worker did not start:\n{worker.output()[-3000:]}")
        time.sleep(0.1)
    return worker


@dataclass
class Stack:
    settings: CoreSettings
    client: CaptionClient
    receiver: CallbackReceiver
    worker: Worker


@pytest.fixture(scope="module")
def redis_db(redis_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A Redis database of the session's own server, flushed for this module."""
    index = abs(hash(request.module.__name__)) % 15 + 1
    url = redis_url.rsplit("/", 1)[0] + f"/{index}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="module")
def stack(
    database_url: str, redis_db: str, tiny_blip: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    settings = CoreSettings(database_url=database_url, redis_url=redis_db, blob_store="db")
    client = CaptionClient(tenant="acme", settings=settings)
    from schemas.store.sessions import session_scope
    from schemas.tables import Tenant

    with session_scope(database_url) as session:
        tenant = session.get(Tenant, client.tenant_id)
        assert tenant is not None
        secret = webhook_secret(tenant)
    receiver = CallbackReceiver(secret=secret)
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    worker = start_worker(
        env={
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_db,
            "BLOB_STORE": "db",
            "CAPTIONER_MODEL": str(tiny_blip),
            "MAX_NEW_TOKENS": "8",
            "URL_ALLOW_CIDRS": '["127.0.0.0/8"]',
            "HF_HUB_OFFLINE": "1",
        },
        log=log,
    )
    yield Stack(settings, client, receiver, worker)
    worker.stop()
    receiver.stop()
