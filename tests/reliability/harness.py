"""Real processes for fault injection: Redis, PostgreSQL database, workers, beat, receiver.

Everything here is owned by the test that made it: its own redis-server on its own
port, its own PostgreSQL database; nothing shared is flushed or stopped.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography.fernet import Fernet
from PIL import Image
from sqlmodel import col, func, select

from producers.demo import verified
from schemas.store.sessions import session_scope
from schemas.tables import TERMINAL_STATUSES, Delivery, Job, JobStatus, Variant

REPO = Path(__file__).resolve().parents[2]
SECRETS_KEY = Fernet.generate_key().decode()
# One line per fault scenario, printed at the end of the run (tests/conftest.py).
SCENARIO_REPORT: list[str] = []


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (seed * 37 % 256, 90, 160)).save(buf, format="PNG")
    return buf.getvalue()


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.2)


@dataclass
class Proc:
    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def worker_env(**overrides: str) -> dict[str, str]:
    """Short, test-sized timings (seconds), all through settings."""
    env = {
        "BLOB_STORE": "db",
        "CAPTIONER_MODEL": "captionq/noop",
        "HF_HUB_OFFLINE": "1",
        "URL_ALLOW_CIDRS": '["127.0.0.0/8"]',
        "WEBHOOK_SECRETS_KEY": SECRETS_KEY,
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
    }
    env.update(overrides)
    return env


def start(kind: str, env: dict[str, str], logdir: Path) -> Proc:
    """``gpu`` (solo pool), ``io`` (threads) or ``beat``; waits until it is ready."""
    name = f"{kind}-{uuid.uuid4().hex[:6]}"
    if kind == "beat":
        args = ["beat", "-s", str(logdir / f"{name}.schedule"), "-l", "INFO"]
        ready = "beat: Starting"
    else:
        pool = ["--pool", "solo"] if kind == "gpu" else ["--pool", "threads", "-c", "4"]
        args = [
            "worker",
            *pool,
            "-Q",
            f"captionq.{kind}",
            "-l",
            "INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            f"{name}@%h",
        ]
        ready = "ready."
    log = logdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "worker.app", *args],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    proc = Proc(name, process, log)
    deadline = time.monotonic() + 60
    while ready not in proc.output():
        if process.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"{name} did not start:\n{proc.output()[-3000:]}")
        time.sleep(0.1)
    return proc


@dataclass
class Hit:
    webhook_id: str
    body: bytes
    verified: bool


@dataclass
class Receiver:
    """A Standard Webhooks receiver whose behaviour a test switches: ``ok``, ``fail``
    (500), ``hang`` (answers after the sender's deadline), ``gone`` (410). ``on_first``
    runs once per webhook-id, before answering (to crash the sender at that moment)."""

    secret: str
    mode: str = "ok"
    hits: list[Hit] = field(default_factory=list)
    on_first: Callable[[str], None] | None = None

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                ok = verified(receiver.secret, body, dict(self.headers))
                msg_id = self.headers.get("webhook-id", "")
                mode = receiver.mode
                if mode == "ok":
                    first = msg_id not in {h.webhook_id for h in receiver.hits}
                    receiver.hits.append(Hit(msg_id, body, ok))
                    if first and receiver.on_first is not None:
                        receiver.on_first(msg_id)
                if mode == "hang":
                    time.sleep(4)
                status = {"ok": 204, "fail": 500, "gone": 410, "hang": 204}[mode]
                self.send_response(status if ok else 401)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SlowImages:
    """Serves a PNG per path after ``delay_s``: makes a batch last long enough to hit."""

    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s
        images = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                time.sleep(images.delay_s)
                data = png(hash(self.path) % 250)
                self.send_response(200)
                self.send_header("content-type", "image/png")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                try:
                    self.wfile.write(data)
                except OSError:  # the fetching worker was killed
                    return

            def log_message(self, *_: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, n: int) -> str:
        return f"http://127.0.0.1:{self.port}/img/{n}.png"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


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
    got = [h for h in receiver.hits if h.webhook_id in expected]
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
    return all(seen.setdefault(h.webhook_id, h.body) == h.body for h in receiver.hits)


def dump(obj: object) -> str:
    return json.dumps(obj, default=str)


__all__ = ["signal"]
