"""Celery workers and beat as real processes, each logging to its own file.

``start(kind, env=..., logdir=...)`` runs one and returns once it says it is ready:

- ``gpu``: the GPU worker's shape, pipelined: ``PIPELINE_BATCHES`` threads on the gpu queue;
- ``io+fetch``: the io and fetch queues in one worker of four threads (callbacks,
  beat's ticks, image fetches), as a small deployment may run them;
- ``io`` and ``fetch``: each of those two queues alone, four threads, as
  production runs them (a pool per queue);
- ``all``: one solo process on every queue, as ``captionq demo`` runs it;
- ``prefork``: every queue in two prefork children, each replaced after one task (so
  every batch runs in a fresh child and children exit all along);
- ``beat``: the scheduler (reaper, outbox dispatch).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
READY_S = 90
SOLO = ("--pool", "solo")
THREADS = ("--pool", "threads", "-c", "4")
# As ``captionq worker --queues io`` runs it: deliver messages for a gathered batch each.
IO_THREADS = (*THREADS, "--prefetch-multiplier", "4")
POOLS = {
    "gpu": (("--pool", "threads"), "captionq.gpu"),
    "io+fetch": (THREADS, "captionq.io,captionq.fetch"),
    "io": (IO_THREADS, "captionq.io"),
    "fetch": (THREADS, "captionq.fetch"),
    "all": (SOLO, "captionq.gpu,captionq.io,captionq.fetch"),
    "prefork": (
        ("--pool", "prefork", "-c", "2", "--max-tasks-per-child", "1"),
        "captionq.gpu,captionq.io,captionq.fetch",
    ),
}


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
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def celery_args(kind: str, name: str, logdir: Path) -> tuple[list[str], str]:
    """The ``celery -A worker.app`` arguments of a ``kind``, and the line that says ready."""
    if kind == "beat":
        return ["beat", "-s", str(logdir / f"{name}.schedule"), "-l", "INFO"], "beat: Starting"
    pool, queues = POOLS[kind]
    return [
        "worker", *pool, "-Q", queues, "-l", "INFO", "--without-gossip", "--without-mingle",
        "--without-heartbeat", "-n", f"{name}@%h",
    ], "ready."  # fmt: skip


def start(kind: str, *, env: dict[str, str], logdir: Path) -> Proc:
    """Start a worker of a ``kind`` in ``POOLS``, or ``beat``, with ``env`` over this
    process's environment; wait until it is ready (or fail with its log)."""
    name = f"{kind.replace('+', '-')}-{uuid.uuid4().hex[:6]}"
    args, ready = celery_args(kind, name, logdir)
    argv = [sys.executable, "-m", "celery", "-A", "worker.app", *args]
    return launch(name, argv, env=env, logdir=logdir, ready=lambda p: ready in p.output())


def start_api(*, env: dict[str, str], logdir: Path, port: int) -> Proc:
    """The ingestion API (``captionq api``) on ``port``; ready once ``/livez`` answers."""

    def ready(_: Proc) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=2):
                return True
        except OSError:
            return False

    argv = [sys.executable, "-m", "producers.cli", "api", "--port", str(port)]
    return launch(f"api-{port}", argv, env=env, logdir=logdir, ready=ready)


def launch(
    name: str, argv: list[str], *, env: dict[str, str], logdir: Path,
    ready: Callable[[Proc], bool],
) -> Proc:  # fmt: skip
    log = logdir / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv,
            cwd=REPO,
            # Human lines unless a test asks for JSON (their log is a file, not a terminal).
            env={**os.environ, "LOG_FORMAT": "text", **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    proc = Proc(name, process, log)
    deadline = time.monotonic() + READY_S
    while not ready(proc):
        if process.poll() is not None or time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"{name} did not start:\n{proc.output()[-3000:]}")
        time.sleep(0.1)
    return proc
