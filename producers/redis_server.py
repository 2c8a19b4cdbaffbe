"""A redis-server this process starts (no persistence): the demo's broker when none runs
on localhost, and the tests' and benchmarks' own."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from urllib.parse import urlparse

import redis

from producers.api.serve import free_port


def redis_answers(url: str, timeout_s: float = 0.5) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=timeout_s).ping())
    except (redis.RedisError, OSError):
        return False


def _redis_server(port: int, workdir: str) -> subprocess.Popen[bytes]:
    """A redis-server on ``port`` (no persistence), once it answers."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "no Redis: set REDIS_URL, run one on localhost:6379, or install redis-server"
        )
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
    return process


@dataclass
class RedisServer:
    """A redis-server this process started (no persistence), stopped on exit."""

    url: str
    process: subprocess.Popen[bytes]
    workdir: str

    @classmethod
    def start(cls) -> RedisServer:
        port = free_port()
        workdir = tempfile.mkdtemp(prefix="captionq-redis-")
        try:
            process = _redis_server(port, workdir)
        except RuntimeError:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        return cls(url=f"redis://127.0.0.1:{port}/0", process=process, workdir=workdir)

    def restart_empty(self, *, away_s: float) -> None:
        """Stop the server and, ``away_s`` later, start a new, empty one on its port (a
        failover that kept nothing)."""
        self.process.terminate()
        self.process.wait(timeout=10)
        time.sleep(away_s)
        port = urlparse(self.url).port
        assert port is not None
        self.process = _redis_server(port, self.workdir)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)
        shutil.rmtree(self.workdir, ignore_errors=True)
