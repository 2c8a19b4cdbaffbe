"""Finding (or starting) the local services the demo runs on: Redis and a callback receiver."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

import redis
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def worker_command(queues: str, *, name: str | None = None) -> list[str]:
    """The ``celery worker`` command line of a local GPU-shaped worker (solo pool), as the
    demo and the tests start it; ``captionq worker`` is the production entry point."""
    argv = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", "solo",
            "-Q", queues, "-l", "INFO", "--without-gossip", "--without-mingle",
            "--without-heartbeat"]  # fmt: skip
    return [*argv, "-n", name] if name else argv


def verified(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    """Whether a callback's Standard Webhooks signature verifies with ``secret``."""
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_answers(url: str, timeout_s: float = 0.5) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=timeout_s).ping())
    except (redis.RedisError, OSError):
        return False


@dataclass
class RedisServer:
    """A redis-server this process started (no persistence), stopped on exit."""

    url: str
    process: subprocess.Popen[bytes]
    workdir: str

    @classmethod
    def start(cls) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "no Redis: set REDIS_URL, run one on localhost:6379, or install redis-server"
            )
        port = free_port()
        workdir = tempfile.mkdtemp(prefix="captionq-redis-")
        process = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while not redis_answers(url):
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"redis-server did not start on port {port}")
            time.sleep(0.05)
        return cls(url=url, process=process, workdir=workdir)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)


@dataclass
class Received:
    webhook_id: str
    event_type: str
    job_id: str
    verified: bool
    body: dict[str, object]


@dataclass
class CallbackReceiver:
    """An HTTP endpoint on loopback that verifies Standard Webhooks signatures."""

    secret: str
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keeps the sender's connection alive

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                ok = verified(receiver.secret, body, dict(self.headers))
                event = json.loads(body)
                receiver.received.append(
                    Received(
                        webhook_id=self.headers.get("webhook-id", ""),
                        event_type=event.get("type", ""),
                        job_id=event.get("data", {}).get("id", ""),
                        verified=ok,
                        body=event,
                    )
                )
                self.send_response(204 if ok else 401)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hooks/captionq"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def describe_url(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.hostname}:{parsed.port}{parsed.path}"
