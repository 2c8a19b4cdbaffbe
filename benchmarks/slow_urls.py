"""Slow-URL isolation: inline jobs' throughput and p99 latency alone, and beside image
URLs whose server sends one byte a second; and the GPU worker's time on those URLs.

One run, real processes: a redis-server of its own, a database (SQLite file or a
PostgreSQL database of its own), one GPU worker (the pipelined pool, ``captionq/noop``
standing in ``--model-s`` per model call for the accelerator), one worker of 4 threads
for the io and fetch queues, jobs submitted through the in-cluster producer (the API's
admission). The inline jobs carry no callback: a job is done when its result is
stored. Each repetition:

1. alone: ``--inline`` inline jobs, bulk-submitted; timed from the first job's creation
   to the last one's result, from the database's own timestamps;
2. beside: ``--slow`` URL jobs of another tenant whose image server sends a byte a
   second (each fetch runs into ``FETCH_TIMEOUT_S`` and is retried up to
   ``FETCH_MAX_ATTEMPTS``) are fetching, then the same inline jobs again;
3. the slow jobs are waited out (they fail ``fetch_attempts_exhausted``).

The GPU worker's time on the slow jobs is what they cost it: their caption claims
(``Job.attempts``, each one a place in a batch) and its connects to their server (every
``socket.connect`` it makes is recorded by an audit hook, as in the tests). Medians of
the repetitions; ratios of the two phases, side by side in one run. Never passes or
fails on time.

    .venv/bin/python -m benchmarks.slow_urls [--reps 3] [--inline 200] [--slow 10]
        [--database sqlite|postgresql] [--out benchmarks/results/slow_urls_sqlite.json]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from sqlmodel import col, select

from benchmarks.spine_throughput import database
from producers.direct import DirectProducer
from producers.redis_server import RedisServer
from schemas.api import JobRequest
from schemas.settings import ApiSettings
from schemas.store.sessions import migrate, read_scope, session_scope
from schemas.store.tenants import ensure_tenant
from schemas.tables import Job
from tests.support.images import png
from tests.support.processes import Proc, start
from tests.support.servers import LoopbackServer
from tests.support.services import LOOPBACK, LOOPBACK_ENV
from tests.support.sockets import audit_env, audited

CHUNK = 50  # jobs per bulk submission


def drip(request: BaseHTTPRequestHandler) -> None:
    """An image server that sends a byte a second, for as long as the client listens."""
    request.send_response(200)
    request.send_header("Content-Type", "image/png")
    request.send_header("Content-Length", "1000000")
    request.end_headers()
    with contextlib.suppress(OSError):
        for _ in range(600):
            request.wfile.write(b"\x89")
            request.wfile.flush()
            time.sleep(1)


def _aware(at: datetime) -> datetime:
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _rows(database_url: str, ids: list[str]) -> list[Job]:
    with read_scope(database_url) as session:
        rows = list(session.exec(select(Job).where(col(Job.id).in_(ids))).all())
        session.expunge_all()
        return rows


def _wait_terminal(database_url: str, ids: list[str], timeout_s: float) -> list[Job]:
    deadline = time.monotonic() + timeout_s
    while True:
        rows = _rows(database_url, ids)
        if len(rows) == len(ids) and all(row.finished_at is not None for row in rows):
            return rows
        if time.monotonic() > deadline:
            raise RuntimeError(f"{sum(r.finished_at is None for r in rows)} jobs unfinished")
        time.sleep(0.2)


def submit(producer: DirectProducer, images: list[str | bytes]) -> list[str]:
    ids: list[str] = []
    for at in range(0, len(images), CHUNK):
        requests = [
            JobRequest.model_validate(
                {"styles": ["playful"], "platforms": ["instagram"], "variants": 1,
                 **({"image_url": image} if isinstance(image, str) else
                    {"image_base64": base64.b64encode(image).decode()})}
            )
            for image in images[at : at + CHUNK]
        ]  # fmt: skip
        for outcome in producer.submit_each(requests):
            assert not isinstance(outcome, Exception), outcome
            ids.append(outcome.job_id)
    return ids


def inline_phase(database_url: str, producer: DirectProducer, n: int) -> dict[str, float]:
    """Throughput and latency of ``n`` inline jobs, from the database's timestamps."""
    ids = submit(producer, [png(i) for i in range(n)])
    rows = _wait_terminal(database_url, ids, timeout_s=600)
    assert all(row.status == "succeeded" for row in rows), {row.status for row in rows}
    created = [_aware(row.created_at) for row in rows]
    finished = [_aware(row.finished_at) for row in rows if row.finished_at is not None]
    latencies = sorted((f - c).total_seconds() for c, f in zip(created, finished, strict=True))
    span_s = (max(finished) - min(created)).total_seconds()
    return {
        "jobs_per_s": n / span_s,
        "p50_s": statistics.median(latencies),
        "p99_s": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


@contextlib.contextmanager
def workers(env: dict[str, str], logdir: Path) -> Iterator[list[Proc]]:
    """The GPU worker (every connect it makes recorded) and one worker of 4 threads for
    the io and fetch queues (as measured; production gives fetches a pool of their own)."""
    gpu = start("gpu", env={**env, **audit_env(logdir / "gpu-connects.txt")}, logdir=logdir)
    io = start("io+fetch", env=env, logdir=logdir)
    try:
        yield [gpu, io]
    finally:
        for proc in (gpu, io):
            proc.stop()


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, database(args.database, Path(tmp)) as url:
        workdir = Path(tmp)
        migrate(url)
        redis = RedisServer.start()
        slow = LoopbackServer(fallback=drip)
        settings = ApiSettings(database_url=url, redis_url=redis.url, **LOOPBACK)
        with session_scope(url) as session:
            ensure_tenant(session=session, name="steady")
            ensure_tenant(session=session, name="slowco")
        env = {
            "DATABASE_URL": url, "REDIS_URL": redis.url, "CAPTIONER_MODEL": "captionq/noop",
            "NOOP_MODEL_S": str(args.model_s), "BATCH_SIZE": str(args.batch_size),
            "HF_HUB_OFFLINE": "1", **LOOPBACK_ENV,
        }  # fmt: skip
        reps: list[dict[str, Any]] = []
        slow_ids: list[str] = []
        try:
            with workers(env, workdir):
                steady = DirectProducer(tenant="steady", settings=settings)
                slowco = DirectProducer(tenant="slowco", settings=settings)
                inline_phase(url, steady, 16)  # warm-up: connections, first batches
                for rep in range(args.reps):
                    alone = inline_phase(url, steady, args.inline)
                    these = submit(slowco, [slow.url(f"/drip/{rep}/{i}.png")
                                            for i in range(args.slow)])  # fmt: skip
                    slow_ids += these
                    _wait_fetching(url, these, slow)
                    beside = inline_phase(url, steady, args.inline)
                    waited = time.monotonic()
                    ended = _wait_terminal(url, these, timeout_s=600)
                    reps.append({"alone": alone, "beside": beside,
                                 "slow_codes": sorted({r.error_code or "" for r in ended}),
                                 "slow_waited_out_s": time.monotonic() - waited})  # fmt: skip
                    line = (f"rep {rep + 1}: alone {alone['jobs_per_s']:.1f} jobs/s "
                            f"p99 {alone['p99_s']:.2f}s | beside slow URLs "
                            f"{beside['jobs_per_s']:.1f} jobs/s p99 {beside['p99_s']:.2f}s")
                    print(line, flush=True)  # noqa: T201
            connects = audited(workdir / "gpu-connects.txt")
            slow_rows = _rows(url, slow_ids)
        finally:
            slow.stop()
            redis.stop()
    return summary(args, reps, slow_rows, connects, slow_port=slow.port)


def _wait_fetching(database_url: str, ids: list[str], server: LoopbackServer) -> None:
    """Until every slow job's fetch has reached the server (or waits behind its caps)."""
    deadline = time.monotonic() + 60
    while len({s.path for s in server.seen}) < min(len(ids), 8) and time.monotonic() < deadline:
        time.sleep(0.1)


def summary(args: argparse.Namespace, reps: list[dict[str, Any]], slow_rows: list[Job],
            connects: set[tuple[str, int]], *, slow_port: int) -> dict[str, Any]:  # fmt: skip
    def median(phase: str, key: str) -> float:
        return statistics.median(rep[phase][key] for rep in reps)

    figures = {
        phase: {key: median(phase, key) for key in ("jobs_per_s", "p50_s", "p99_s")}
        for phase in ("alone", "beside")
    }
    return {
        "benchmark": "slow_urls",
        "database": args.database,
        "inline_jobs": args.inline,
        "slow_jobs": args.slow,
        "reps": args.reps,
        "batch_size": args.batch_size,
        "model": f"captionq/noop, {args.model_s}s per model call",
        "io_threads": 4,
        "median": figures,
        "throughput_ratio_beside_over_alone": figures["beside"]["jobs_per_s"]
        / figures["alone"]["jobs_per_s"],
        "p99_ratio_beside_over_alone": figures["beside"]["p99_s"] / figures["alone"]["p99_s"],
        "slow_jobs_gpu_claims": sum(row.attempts for row in slow_rows),
        "slow_jobs_fetch_attempts": sum(row.fetch_attempts for row in slow_rows),
        "slow_jobs_codes": sorted({row.error_code or row.status for row in slow_rows}),
        "gpu_worker_connects_to_slow_server": sum(1 for _, p in connects if p == slow_port),
        "gpu_worker_connect_ports": sorted({p for _, p in connects}),
        "runs": reps,
        "machine": f"{len(os.sched_getaffinity(0))} cores, shared",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--inline", type=int, default=200)
    parser.add_argument("--slow", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--model-s", type=float, default=0.05)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)  # noqa: T201
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
