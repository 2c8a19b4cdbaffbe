"""GPU-pool scaling on one machine: 1, 2 and 4 GPU-worker processes (the GPU worker's
shape: pipelined, ``PIPELINE_BATCHES`` threads; ``--gpu-pool solo`` for one batch at a
time) against one Redis and one database, side by side with bare Celery (solo) at the
same process counts, in one run.

Each run: N messages are put on the queue while no worker consumes (captionq: jobs
submitted through ``producers.submit`` with their rows and blobs; bare: a task that
only does ``INCR``), the queue's lists are moved aside, K workers are started and
ready, the lists are moved back (one ``RENAME`` each) and the clock runs until every
job is terminal (captionq) or the counter reads N (bare). What each process spent in
CPU during the run is read from /proc, so the bottleneck is named by numbers.

    .venv/bin/python -m benchmarks.scaling [--jobs 400] [--workers 1 2 4]
        [--models noop tiny] [--database postgresql|sqlite] [--gpu-pool threads|solo]
        [--out FILE]

Prints a table; never passes or fails on time.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from sqlmodel import col, func, select

from benchmarks.spine_throughput import (
    BARE_QUEUE,
    BARE_TASK,
    COUNTER_KEY,
    celery_worker,
    cpu_s,
    database,
    server_cpu_s,
    stop,
    wait_until,
)
from producers.redis_server import RedisServer
from schemas import keys
from schemas.api import JobRequest
from schemas.names import QUEUE_GPU
from schemas.settings import CoreSettings
from schemas.store.sessions import migrate, session_scope
from schemas.store.tenants import ensure_tenant
from schemas.tables import TERMINAL_STATUSES, Job, JobStatus
from tests.support.images import png

HOLD = "bench:hold:"


def hold(client: redis.Redis, queue: str) -> list[str]:
    """Move a queue's non-empty lists aside; their names."""
    moved = [name for name in keys.queue_lists(queue) if client.llen(name)]
    for name in moved:
        client.rename(name, HOLD + name)
    return moved


def release(client: redis.Redis, moved: list[str]) -> None:
    for name in moved:
        client.rename(HOLD + name, name)


def submit_jobs(n: int, settings: CoreSettings) -> None:
    from producers.submit import submit_many

    image = png()
    requests = [JobRequest(image_base64=_b64(image), styles=["playful"], platforms=["x"],
                           variants=1, metadata={"i": i}) for i in range(n)]  # fmt: skip
    with session_scope(settings.database_url) as session:
        tenant = ensure_tenant(session=session, name="bench")
        for at in range(0, n, 100):
            submit_many(session=session, settings=settings, tenant=tenant,
                        requests=requests[at : at + 100])  # fmt: skip


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def terminal(database_url: str, *, succeeded: bool | None = None) -> int:
    """Jobs finished (only the succeeded ones, or only the others, with ``succeeded``)."""
    statuses = [s.value for s in TERMINAL_STATUSES
                if succeeded is None or (s == JobStatus.succeeded) == succeeded]  # fmt: skip
    with session_scope(database_url) as session:
        return int(session.exec(select(func.count()).where(col(Job.status).in_(statuses))).one())


def all_succeeded(database_url: str, *, unsuccessful_before: int) -> None:
    """Refuse a run in which a job ended other than succeeded: a failed job is quick, and
    the run would read fast."""
    unsuccessful = terminal(database_url, succeeded=False) - unsuccessful_before
    if unsuccessful:
        raise RuntimeError(f"{unsuccessful} jobs did not succeed: not a measure of throughput")


def run(kind: str, k: int, n: int, *, env: dict[str, str], settings: CoreSettings,
        workdir: Path, redis_pid: int, gpu_pool: str = "threads") -> dict[str, Any]:  # fmt: skip
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()
    if kind == "bare":
        from celery import Celery

        from schemas.broker import celery_config

        producer = Celery("bench-producer")
        producer.conf.update(celery_config(settings.redis_url))
        with producer.producer_or_acquire() as conn:
            for _ in range(n):
                producer.send_task(BARE_TASK, queue=BARE_QUEUE, producer=conn)
        client.set(COUNTER_KEY, 0)
        queue, app, done = BARE_QUEUE, "benchmarks.spine_throughput:bare_app", None
        unsuccessful = 0
        pool = "solo"
    else:
        migrate(settings.database_url)
        before = terminal(settings.database_url)
        unsuccessful = terminal(settings.database_url, succeeded=False)
        submit_jobs(n, settings)
        queue, app, pool = QUEUE_GPU, "worker.app", gpu_pool

        def done() -> bool:
            return terminal(settings.database_url) - before >= n

    moved = hold(client, queue)
    workers = [celery_worker(app, queue, env=env, log=workdir / f"{kind}-{k}-{i}.log",
                             pool=(pool,)) for i in range(k)]  # fmt: skip
    cpu0 = {w.pid: cpu_s(w.pid) for w in workers} | {redis_pid: cpu_s(redis_pid)}
    postgres0 = server_cpu_s("postgres")
    started = time.perf_counter()
    release(client, moved)
    if done is None:
        wait_until(lambda: int(client.get(COUNTER_KEY) or 0) >= n, what="bare", timeout_s=900)
    else:
        wait_until(done, what="captionq jobs", timeout_s=900)
    elapsed = time.perf_counter() - started
    if done is not None:
        all_succeeded(settings.database_url, unsuccessful_before=unsuccessful)
    workers_cpu = sum(cpu_s(w.pid) - cpu0[w.pid] for w in workers)
    redis_cpu = cpu_s(redis_pid) - cpu0[redis_pid]
    postgres = server_cpu_s("postgres")
    pg_cpu = sum(t - postgres0.get(pid, 0.0) for pid, t in postgres.items())
    for w in workers:
        stop(w)
    return {
        "kind": kind, "workers": k, "jobs": n, "jobs_s": round(n / elapsed, 1),
        "elapsed_s": round(elapsed, 2),
        "cpu_ms_per_job": {"workers": round(workers_cpu * 1000 / n, 2),
                           "redis": round(redis_cpu * 1000 / n, 2),
                           "postgresql": round(pg_cpu * 1000 / n, 2)},
        "cpu_busy_of_wall": round((workers_cpu + redis_cpu + pg_cpu) / elapsed, 2),
    }  # fmt: skip


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=400)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--models", nargs="+", default=["noop", "tiny"])
    parser.add_argument("--database", choices=["postgresql", "sqlite"], default="postgresql")
    parser.add_argument("--gpu-pool", choices=["threads", "solo"], default="threads")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    server = RedisServer.start()
    try:
        with tempfile.TemporaryDirectory() as tmp, database(args.database, Path(tmp)) as url:
            workdir = Path(tmp)
            settings = CoreSettings(database_url=url, redis_url=server.url, blob_store="db")
            models = {"noop": "captionq/noop"}
            if "tiny" in args.models:
                from worker.models.tiny import build_tiny_blip

                models["tiny"] = str(build_tiny_blip(workdir / "tiny-blip"))
            for model in args.models:
                env = {"DATABASE_URL": url, "REDIS_URL": server.url, "BLOB_STORE": "db",
                       "CAPTIONER_MODEL": models[model], "MAX_NEW_TOKENS": "8",
                       "HF_HUB_OFFLINE": "1", "LOG_FORMAT": "text"}  # fmt: skip
                n = args.jobs if model == "noop" else max(40, args.jobs // 4)
                for k in args.workers:
                    for kind in ("bare", f"captionq-{model}"):
                        row = run(kind if kind == "bare" else "captionq", k, n, env=env,
                                  settings=settings, workdir=workdir,
                                  redis_pid=server.process.pid,
                                  gpu_pool=args.gpu_pool)  # fmt: skip
                        row["kind"] = kind
                        rows.append(row)
                        print(json.dumps(row), flush=True)  # noqa: T201
    finally:
        server.stop()
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return rows


if __name__ == "__main__":
    main()
