"""Spine throughput: the whole path against bare Celery, same Redis, same run.

Spine: N jobs submitted in bulk to the API (a real uvicorn server on loopback)
→ job rows and blobs in the database → caption tasks published to Redis → one
real Celery worker (the GPU worker's shape: ``PIPELINE_BATCHES`` threads, or the
solo pool with ``--gpu-pool solo``; ``captionq/noop`` model)
→ results and outbox rows → ``captionq.deliver`` POSTs a Standard-Webhooks
signed callback → received and verified by the tests' callback ``Receiver``. Timed from
the first submit to the last callback received.

Baseline: bare Celery on the same Redis: ``bare_app`` below (the broker
configuration captionq uses, the same prefetch and late acks), one solo worker,
a task that only increments a Redis counter; N tasks published over one
connection, timed until the counter reads N.

Stage costs come two ways, both per job:
* CPU seconds each process spent during the spine runs (API server, worker,
  Redis, this process = HTTP client + callback receiver), read from /proc;
* the stages run one at a time in this process against the same database and
  Redis (no concurrency): DB writes of a submit, publishing, the worker's batch
  (claim / load / model / store) and the delivery (DB / sign+POST).

``--drained`` also times each process alone, as many reps: the other processes
paused (SIGSTOP) and its input queued in front of it, from the moment it is let go
(SIGCONT) until it has done all of it. Bare Celery's worker drains N queued no-op
tasks; the API takes N jobs in bulk; the GPU worker stores N queued jobs; the IO
worker sends their N callbacks. A process alone has the cores to itself (and the
database server's), so its rate, as a share of bare Celery's (one process too), is
the most the spine can reach with it in the path, however many cores the host has.

Prints a table and ratios; never passes or fails on time.

    .venv/bin/python -m benchmarks.spine_throughput [--jobs 300] [--reps 3]
        [--batch-size 8] [--chunk 50] [--database sqlite|postgresql] [--out FILE]
        [--gpu-pool threads|solo] [--pipeline-batches 3] [--profile DIR] [--drained]

``--profile DIR`` samples the API, GPU worker and IO worker with py-spy (the
``bench`` extra) during the timed reps and writes each one's collapsed stacks and
an account of its active milliseconds per job by where they went
(:mod:`benchmarks.profile_account`).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import redis
from celery import Celery

from benchmarks import profile_account
from producers.demo import free_port
from producers.redis_server import RedisServer
from schemas.broker import celery_config
from schemas.settings import CoreSettings, WorkerSettings
from tests.support.images import png
from tests.support.receivers import Receiver

REPO = Path(__file__).resolve().parents[1]
BARE_QUEUE = "bench.noop"
BARE_TASK = "bench.noop"
COUNTER_KEY = "bench:noop:done"
PREFETCH = max(1, 2 * int(os.environ.get("BATCH_SIZE", "8")))  # two batches, as a solo GPU worker

# The baseline worker imports this module (-A benchmarks.spine_throughput:bare_app);
# it gets REDIS_URL and BATCH_SIZE from the environment the benchmark gives it.
bare_app = Celery("captionq-bare")
bare_app.conf.update(celery_config(CoreSettings().redis_url))
bare_app.conf.update(
    task_acks_late=True,
    worker_prefetch_multiplier=PREFETCH,
    task_default_queue=BARE_QUEUE,
    worker_hijack_root_logger=False,
)
_counter: redis.Redis | None = None


@bare_app.task(name=BARE_TASK, acks_late=True)
def noop() -> None:
    global _counter
    if _counter is None:
        _counter = redis.Redis.from_url(bare_app.conf.broker_url)
    _counter.incr(COUNTER_KEY)


def api_app() -> Any:
    """The API for ``uvicorn --factory``, configured from the environment."""
    from producers.api import create_app

    return create_app()


# --- processes -------------------------------------------------------------------------


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_cpu_s(name: str) -> dict[int, float]:
    """CPU seconds so far of every process called ``name`` (PostgreSQL's server runs one
    per connection)."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError):
            if (stat.parent / "comm").read_text().strip() == name:
                found[int(stat.parent.name)] = cpu_s(int(stat.parent.name))
    return found


def host_cpu_s() -> tuple[float, float]:
    """Busy and idle CPU seconds of the whole host so far, all cores (/proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields) - idle) / os.sysconf("SC_CLK_TCK"), idle / os.sysconf("SC_CLK_TCK")


def waiting_s(pid: int) -> dict[int, float]:
    """Seconds each thread of a process (by thread id) has spent runnable but waiting
    for a core (the scheduler's run queue, /proc/<pid>/task/*/schedstat); empty where
    the kernel keeps no such count."""
    found = {}
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            found[int(stat.parent.name)] = int(stat.read_text().split()[1]) / 1e9
    return found


def waited_s(before: dict[int, float], after: dict[int, float]) -> float:
    """A process's threads' wait for a core between two :func:`waiting_s` readings: each
    thread alive at the second from where it was at the first (0 if it began since); a
    thread that ended between them is not counted."""
    return sum(t - before.get(tid, 0.0) for tid, t in after.items())


def postgres_ms_per_job(before: dict[int, float], n: int) -> float:
    """CPU ms per job that PostgreSQL's server processes spent since ``before`` (a
    :func:`server_cpu_s` reading)."""
    spent = sum(t - before.get(pid, 0.0) for pid, t in server_cpu_s("postgres").items())
    return spent * 1000 / n


def spawn(args: list[str], *, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env={**os.environ, **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def wait_until(
    ready: Callable[[], bool], *, what: str, timeout_s: float = 90, poll_s: float = 0.01
) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(poll_s)


def celery_worker(
    app: str, queues: str, *, env: dict[str, str], log: Path, pool: tuple[str, ...] = ("solo",)
) -> subprocess.Popen[bytes]:
    process = spawn(
        ["celery", "-A", app, "worker", "--pool", *pool, "-Q", queues, "-l", "INFO",
         "--without-gossip", "--without-mingle", "--without-heartbeat",
         "-n", f"bench-{queues}-{os.getpid()}@%h"],
        env=env,
        log=log,
    )  # fmt: skip
    wait_until(
        lambda: process.poll() is None and "ready." in log.read_text(errors="replace"),
        what=f"worker {app} (log {log})",
    )
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextlib.contextmanager
def database(kind: str, workdir: Path) -> Iterator[str]:
    if kind == "sqlite":
        yield f"sqlite:///{workdir / 'bench.db'}"
        return
    import psycopg

    name = f"captionq_bench_{os.getpid()}"
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    finally:
        from schemas.store.sessions import dispose_engine

        dispose_engine(f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}")
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Stamped(list):  # type: ignore[type-arg]
    """The receiver's list of callbacks, with the wall time each one arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    def append(self, item: object) -> None:
        self.times.append(time.time())
        super().append(item)


def png_base64() -> str:
    return base64.b64encode(png()).decode()


def bulk_jobs(n: int, *, callback_url: str) -> list[dict[str, Any]]:
    """The jobs of a run, as the bulk route takes them: one small image, one variant."""
    image = png_base64()
    return [
        {"image_base64": image, "styles": ["playful"], "platforms": ["x"], "variants": 1,
         "callback_url": callback_url, "metadata": {"i": i}}
        for i in range(n)
    ]  # fmt: skip


# --- one run of each ---------------------------------------------------------------------


def run_bare(n: int, *, redis_url: str, worker_pid: int) -> dict[str, float]:
    producer = Celery("captionq-bare-producer")
    producer.conf.update(celery_config(redis_url))
    counter = redis.Redis.from_url(redis_url)
    counter.set(COUNTER_KEY, 0)
    cpu0 = cpu_s(worker_pid)
    started = time.perf_counter()
    with producer.producer_or_acquire() as conn:
        for _ in range(n):
            producer.send_task(BARE_TASK, queue=BARE_QUEUE, producer=conn)
    published = time.perf_counter()
    # Read every millisecond: the end is found within 1 ms of it (a rep lasts ~0.3 s), as
    # the spine's is to the microsecond (the time its last callback arrived).
    wait_until(lambda: int(counter.get(COUNTER_KEY) or 0) >= n, what="bare tasks", timeout_s=300,
               poll_s=0.001)  # fmt: skip
    elapsed = time.perf_counter() - started
    return {
        "jobs_s": n / elapsed,
        "elapsed_s": elapsed,
        "publish_ms_per_job": (published - started) * 1000 / n,
        "worker_cpu_ms_per_job": (cpu_s(worker_pid) - cpu0) * 1000 / n,
    }


def run_spine(
    n: int, *, chunk: int, api_url: str, key: str, receiver: Receiver,
    pids: dict[str, int], database_url: str,
) -> dict[str, Any]:  # fmt: skip
    jobs = bulk_jobs(n, callback_url=receiver.url)
    stamped: Stamped = receiver.received  # type: ignore[assignment]
    first = len(stamped)
    cpu0 = {name: cpu_s(pid) for name, pid in pids.items()}
    waiting0 = {name: waiting_s(pid) for name, pid in pids.items()}
    host0 = host_cpu_s()
    postgres0 = server_cpu_s("postgres")
    self0 = time.process_time()
    post_s: list[float] = []
    ids: list[str] = []
    failed_posts = 0
    # The client is made before the clock starts (its TLS context alone takes tens of ms).
    with httpx.Client(base_url=api_url, headers={"authorization": f"Bearer {key}"}) as client:
        started = time.perf_counter()
        wall0 = time.time()
        for at in range(0, n, chunk):
            body = {"jobs": jobs[at : at + chunk]}
            for _ in range(10):
                t = time.perf_counter()
                try:
                    response = client.post("/v1/jobs/bulk", json=body, timeout=120)
                except httpx.TransportError:  # the server closed a connection after a 500
                    continue
                finally:
                    post_s.append(time.perf_counter() - t)
                # A refused bulk request rolled back whole (SQLite "database is locked"
                # while the worker writes, see README): send it again, and count it.
                if response.status_code != 500:
                    break
                failed_posts += 1
            if response.status_code != 202:
                raise RuntimeError(f"bulk submit: {response.status_code} {response.text[:2000]}")
            ids += [item["job"]["id"] for item in response.json()["jobs"]]
    submitted = time.perf_counter()
    wait_until(lambda: len(stamped) - first >= n, what="callbacks", timeout_s=300)
    elapsed = stamped.times[first + n - 1] - wall0  # to the n-th callback's arrival
    busy, idle = (now - then for now, then in zip(host_cpu_s(), host0, strict=True))
    read_for = time.time() - wall0  # the host's span: to the end found, within 10 ms of it
    waited = {name: waiting_s(pid) for name, pid in pids.items()}
    cpu = {name: (cpu_s(pid) - cpu0[name]) * 1000 / n for name, pid in pids.items()}
    cpu["bench (client + receiver)"] = (time.process_time() - self0) * 1000 / n
    if database_url.startswith("postgresql"):
        cpu["postgresql (all server processes)"] = postgres_ms_per_job(postgres0, n)
    received = stamped[first:]
    arrived = {r.job_id: t for r, t in zip(received, stamped.times[first:], strict=True)}
    return {
        "jobs_s": n / elapsed,
        "elapsed_s": elapsed,
        "submit_s": submitted - started,
        "api_ms_per_job_client_side": sum(post_s) * 1000 / n,
        "verified": sum(r.verified for r in received),
        "bulk_posts": len(post_s),
        "bulk_posts_500_retried": failed_posts,
        "cpu_ms_per_job": cpu,
        # The host's cores over the rep: how many were busy, and each process's wait
        # for one.
        "host_cores_busy": busy / read_for,
        "host_cores_idle": idle / read_for,
        "waiting_for_a_core_ms_per_job": {
            name: waited_s(waiting0[name], after) * 1000 / n
            for name, after in waited.items()
            if after
        },
        "latency_ms": latencies(database_url, ids, arrived, wall0),
    }


def latencies(
    database_url: str, ids: list[str], arrived: dict[str, float], wall0: float
) -> dict[str, float]:
    """Median per-job time between the job's timestamps (queueing included)."""
    from sqlmodel import col, select

    from schemas.store.sessions import session_scope
    from schemas.tables import Job

    def epoch(at: datetime) -> float:
        return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()

    spans: dict[str, list[float]] = {
        "created→queued": [], "queued→started": [], "started→finished": [],
        "finished→callback received": [], "submit start→callback received": [],
    }  # fmt: skip
    with session_scope(database_url) as session:
        for job in session.exec(select(Job).where(col(Job.id).in_(ids))).all():
            assert job.started_at is not None, job.id
            assert job.finished_at is not None, job.id
            # A job the worker claimed before the API marked it queued has no queued_at.
            queued = epoch(job.queued_at) if job.queued_at else None
            stamps = [epoch(job.created_at), queued, epoch(job.started_at),
                      epoch(job.finished_at), arrived[job.id]]  # fmt: skip
            for name, a, b in zip(spans, stamps, stamps[1:], strict=False):
                if a is not None and b is not None:
                    spans[name].append(b - a)
            spans["submit start→callback received"].append(arrived[job.id] - wall0)
    return {name: statistics.median(v) * 1000 for name, v in spans.items() if v}


# --- each process alone, draining its queue ---------------------------------------------


@contextlib.contextmanager
def paused(*pids: int) -> Iterator[None]:
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)


def stored(database_url: str) -> int:
    """Jobs succeeded so far."""
    from sqlalchemy import func
    from sqlmodel import col, select

    from schemas.store.sessions import session_scope
    from schemas.tables import Job, JobStatus

    with session_scope(database_url) as session:
        return session.exec(
            select(func.count()).where(col(Job.status) == JobStatus.succeeded.value)
        ).one()


def alone(
    pid: int, work: Callable[[], object], *, n: int, database_url: str
) -> dict[str, float]:
    """Time ``work`` (a process's share of the run, the others paused): jobs/s, the
    process's CPU ms/job, and (PostgreSQL) the database server's."""
    postgres0 = server_cpu_s("postgres") if database_url.startswith("postgresql") else {}
    cpu0 = cpu_s(pid)
    started = time.perf_counter()
    work()
    elapsed = time.perf_counter() - started
    out = {"jobs_s": n / elapsed, "cpu_ms_per_job": (cpu_s(pid) - cpu0) * 1000 / n}
    if postgres0:
        out["postgresql_cpu_ms_per_job"] = postgres_ms_per_job(postgres0, n)
    return out


def drain(
    pid: int, done: Callable[[], bool], *, what: str, n: int, database_url: str
) -> dict[str, float]:
    """Let a paused process go (``paused`` sends SIGCONT again on the way out, which is
    harmless) and time it until ``done``."""

    def work() -> None:
        os.kill(pid, signal.SIGCONT)
        wait_until(done, what=what, timeout_s=300)

    return alone(pid, work, n=n, database_url=database_url)


def run_drained(
    n: int, *, chunk: int, api_url: str, key: str, receiver: Receiver, pids: dict[str, int],
    redis_url: str, database_url: str,
) -> dict[str, dict[str, float]]:  # fmt: skip
    """Each process alone (module docstring, ``--drained``)."""
    out: dict[str, dict[str, float]] = {}
    producer = Celery("captionq-bare-producer")
    producer.conf.update(celery_config(redis_url))
    counter = redis.Redis.from_url(redis_url)
    counter.set(COUNTER_KEY, 0)
    with paused(pids["bare worker"]):
        with producer.producer_or_acquire() as conn:
            for _ in range(n):
                producer.send_task(BARE_TASK, queue=BARE_QUEUE, producer=conn)
        out["bare worker"] = drain(
            pids["bare worker"], lambda: int(counter.get(COUNTER_KEY) or 0) >= n,
            what="bare tasks", n=n, database_url=database_url,
        )  # fmt: skip

    gpu, io = pids["gpu worker"], pids["io worker"]
    jobs = bulk_jobs(n, callback_url=receiver.url)
    stored0, received0 = stored(database_url), len(receiver.received)

    def submit() -> None:
        with httpx.Client(base_url=api_url, headers={"authorization": f"Bearer {key}"}) as client:
            for at in range(0, n, chunk):
                response = client.post("/v1/jobs/bulk", json={"jobs": jobs[at : at + chunk]},
                                       timeout=120)  # fmt: skip
                if response.status_code != 202:
                    raise RuntimeError(f"bulk submit: {response.status_code} {response.text[:500]}")

    with paused(gpu, io):
        out["api server"] = alone(pids["api server"], submit, n=n, database_url=database_url)
        out["gpu worker"] = drain(
            gpu, lambda: stored(database_url) - stored0 >= n, what="jobs stored", n=n,
            database_url=database_url,
        )  # fmt: skip
        receiving = time.process_time()
        out["io worker"] = drain(
            io, lambda: len(receiver.received) - received0 >= n, what="callbacks", n=n,
            database_url=database_url,
        )  # fmt: skip
        out["io worker"]["receiver_cpu_ms_per_job"] = (time.process_time() - receiving) * 1000 / n
    return out


# --- stages alone, in this process ------------------------------------------------------


def timed(totals: dict[str, float], name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - t

    return wrapper


def stages_alone(
    n: int, *, batch_size: int, chunk: int, database_url: str, redis_url: str, receiver_url: str
) -> dict[str, float]:
    """Each stage on its own, ms per job. Publishing goes to an unconsumed Redis database."""
    from sqlmodel import col, select

    from schemas.api import JobRequest
    from schemas.settings import ApiSettings
    from schemas.store.sessions import session_scope
    from schemas.store.tenants import ensure_tenant
    from schemas.tables import Delivery

    os.environ.update(
        DATABASE_URL=database_url, REDIS_URL=redis_url, CAPTIONER_MODEL="captionq/noop",
        BATCH_SIZE=str(batch_size), URL_ALLOW_CIDRS='["127.0.0.0/8"]', BLOB_STORE="db",
        URL_ALLOWED_PORTS='["1024-65535"]',
    )  # fmt: skip
    from producers import submit
    from producers.direct import DirectProducer
    from schemas.messages import DeliverMessage
    from worker import batch, pipeline, sender
    from worker.models import load_engine
    from worker.tasks import deliver

    out: dict[str, float] = {}
    request = JobRequest(image_base64=png_base64(), styles=["playful"], platforms=["x"], variants=1,
                         callback_url=receiver_url)  # fmt: skip
    spare = redis_url.rsplit("/", 1)[0] + "/15"
    # Admission runs as at the API (its limits set past this run's size, so it never says no).
    api_settings = ApiSettings(database_url=database_url, redis_url=spare,
                               rate_limit_jobs_per_s=1e6, rate_limit_burst=10**6,
                               max_in_flight=10**7)  # fmt: skip
    with session_scope(database_url) as session:
        ensure_tenant(session=session, name="bench")  # an operator's step; the receiver's secret
    producer = DirectProducer(tenant="bench", settings=api_settings)
    parts: dict[str, float] = {}
    saved_submit = submit._create, submit.publish_jobs, submit.mark_queued
    submit._create = timed(parts, "submit: blob + job rows (db)", submit._create)
    submit.publish_jobs = timed(parts, "submit: publish", submit.publish_jobs)
    submit.mark_queued = timed(parts, "submit: mark queued (db)", submit.mark_queued)
    job_ids: list[str] = []
    try:
        t = time.perf_counter()
        for at in range(0, n, chunk):
            outcomes = producer.submit_each([request] * min(chunk, n - at))
            job_ids += [o.job_id for o in outcomes if isinstance(o, submit.Submitted)]
        out[f"in-cluster producer total ({chunk} per call, admission, no HTTP)"] = (
            time.perf_counter() - t
        )
    finally:
        submit._create, submit.publish_jobs, submit.mark_queued = saved_submit
    redis.Redis.from_url(spare).flushdb()
    out.update(parts)
    assert len(job_ids) == n, f"submitted {len(job_ids)} of {n}"

    settings = WorkerSettings()
    engine = load_engine(settings)
    parts = {}
    saved = batch.claim, batch.load_all, batch._store_batch, pipeline.run
    batch.claim = timed(parts, "worker: claim (db)", batch.claim)
    batch.load_all = timed(parts, "worker: load blobs (db)", batch.load_all)
    batch._store_batch = timed(parts, "worker: store results + outbox (db)", batch._store_batch)
    pipeline.run = timed(parts, "worker: pipeline (decode + noop model + copy)", pipeline.run)
    try:
        t = time.perf_counter()
        deliveries: list[tuple[str, str]] = []
        for at in range(0, n, batch_size):
            deliveries += batch.process(
                job_ids[at : at + batch_size], settings=settings, engine=engine
            ).deliveries
        out["worker: batch.process total"] = time.perf_counter() - t
    finally:
        batch.claim, batch.load_all, batch._store_batch, pipeline.run = saved
    out.update(parts)

    saved_post = sender.Sender.post
    sender.Sender.post = timed(parts, "callback: sign + POST", sender.Sender.post)  # type: ignore[method-assign]
    try:
        t = time.perf_counter()
        # As an IO worker sends them: gathered, CALLBACK_BATCH_MAX at a time.
        gathered = settings.callback_batch_max
        for at in range(0, len(deliveries), gathered):
            delivery_ids = [delivery_id for delivery_id, _ in deliveries[at : at + gathered]]
            deliver.apply(args=[DeliverMessage(delivery_ids=delivery_ids).model_dump()])
        out["callback: deliver task total"] = time.perf_counter() - t
    finally:
        sender.Sender.post = saved_post  # type: ignore[method-assign]
    out["callback: sign + POST"] = parts["callback: sign + POST"]
    with session_scope(database_url) as session:
        left = session.exec(select(Delivery).where(col(Delivery.job_id).in_(job_ids))).all()
        assert len(left) == n, f"{len(left)} outbox rows for {n} jobs"
        bad = [
            (d.status, d.last_status_code, d.last_error) for d in left if d.status != "delivered"
        ]
        assert not bad, f"stage-alone deliveries failed: {bad[:3]}"
    return {name: s * 1000 / n for name, s in out.items()}


# --- the benchmark ----------------------------------------------------------------------


def credentials(database_url: str) -> tuple[str, str]:
    """An API key with the submit scope, and the tenant's webhook secret."""
    from schemas.store.sessions import session_scope
    from schemas.store.tenants import create_api_key, ensure_tenant, webhook_secret

    with session_scope(database_url) as session:
        tenant = ensure_tenant(session=session, name="bench")
        _, key = create_api_key(session=session, tenant=tenant, scopes=("submit", "read"))
        return key, webhook_secret(tenant)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=8, help="BATCH_SIZE of the worker")
    parser.add_argument("--batch-interval-s", type=float, default=0.05)
    parser.add_argument("--chunk", type=int, default=50, help="jobs per bulk request")
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--redis-url", help="default: a redis-server started for the run")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--gpu-pool", choices=["threads", "solo"], default="threads",
                        help="threads: pipelined, as deployed; solo: one batch at a time")
    parser.add_argument("--pipeline-batches", type=int, default=3, help="PIPELINE_BATCHES")
    parser.add_argument("--profile", type=Path, help="py-spy the processes into this folder")
    parser.add_argument("--drained", action="store_true",
                        help="also time each process alone, draining its queue")
    args = parser.parse_args(argv)

    from schemas.store.sessions import migrate

    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="captionq-bench-")))
        redis_url = args.redis_url
        if redis_url is None:
            server = RedisServer.start()
            stack.callback(server.stop)
            redis_url = server.url
        database_url = stack.enter_context(database(args.database, workdir))
        migrate(database_url)
        key, secret = credentials(database_url)
        receiver = Receiver(secret=secret)
        receiver.received = Stamped()
        stack.callback(receiver.stop)

        env = {
            "DATABASE_URL": database_url, "REDIS_URL": redis_url, "BLOB_STORE": "db",
            "CAPTIONER_MODEL": "captionq/noop", "BATCH_SIZE": str(args.batch_size),
            "BATCH_INTERVAL_S": str(args.batch_interval_s), "URL_ALLOW_CIDRS": '["127.0.0.0/8"]',
            "URL_ALLOWED_PORTS": '["1024-65535"]',
            "BULK_MAX_JOBS": str(max(500, args.chunk)), "HF_HUB_OFFLINE": "1",
            # Admission is checked on every request, with limits this run never reaches.
            "RATE_LIMIT_BURST": str(10 * args.jobs), "RATE_LIMIT_JOBS_PER_S": "100000",
            "PYTHONUNBUFFERED": "1", "PIPELINE_BATCHES": str(args.pipeline_batches),
        }  # fmt: skip
        port = free_port()
        api = spawn(
            ["uvicorn", "benchmarks.spine_throughput:api_app", "--factory", "--host", "127.0.0.1",
             "--port", str(port), "--log-level", "warning", "--no-access-log"],
            env=env, log=workdir / "api.log",
        )  # fmt: skip
        stack.callback(stop, api)
        api_url = f"http://127.0.0.1:{port}"

        def answers() -> bool:
            try:
                return httpx.get(f"{api_url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return api.poll() is None and False

        wait_until(answers, what=f"the API (log {workdir / 'api.log'})")
        # As deployed: one GPU worker process (pipelined threads) for captions, and an IO
        # worker (threads) for callbacks.
        worker = celery_worker("worker.app", "captionq.gpu", env=env, log=workdir / "worker.log",
                               pool=(args.gpu_pool,))  # fmt: skip
        stack.callback(stop, worker)
        # As ``captionq worker --queues io --concurrency 4`` runs it.
        prefetch = WorkerSettings(batch_size=args.batch_size).io_prefetch_multiplier
        io_worker = celery_worker(
            "worker.app", "captionq.io", env=env, log=workdir / "io.log",
            pool=("threads", "-c", "4", "--prefetch-multiplier", str(prefetch)),
        )  # fmt: skip
        stack.callback(stop, io_worker)
        bare = celery_worker(
            "benchmarks.spine_throughput:bare_app", BARE_QUEUE, env=env, log=workdir / "bare.log"
        )
        stack.callback(stop, bare)
        redis_pid = _redis_pid(redis_url)
        pids = {"api server": api.pid, "gpu worker": worker.pid, "io worker": io_worker.pid}
        if redis_pid is not None:
            pids["redis-server"] = redis_pid

        stack.push(lambda kind, *_: kind is not None and _dump_logs(workdir))
        # Warm both paths (imports, connections, first-use caches) before timing.
        run_bare(20, redis_url=redis_url, worker_pid=bare.pid)
        run_spine(20, chunk=args.chunk, api_url=api_url, key=key, receiver=receiver,
                  pids=pids, database_url=database_url)  # fmt: skip
        runs = []
        profiles = profile_account.start(args.profile, pids) if args.profile else []
        for rep in range(args.reps):
            b = run_bare(args.jobs, redis_url=redis_url, worker_pid=bare.pid)
            s = run_spine(args.jobs, chunk=args.chunk, api_url=api_url, key=key,
                          receiver=receiver, pids=pids, database_url=database_url)  # fmt: skip
            runs.append({"bare": b, "spine": s, "ratio": s["jobs_s"] / b["jobs_s"]})
            progress = f"rep {rep + 1}: bare {b['jobs_s']:.0f} jobs/s, spine {s['jobs_s']:.1f}"
            print(f"{progress} jobs/s, ratio {runs[-1]['ratio']:.3f}", file=sys.stderr)  # noqa: T201
        if args.profile:
            cpu = {name: statistics.mean(r["spine"]["cpu_ms_per_job"][name] for r in runs)
                   for name in pids if name != "redis-server"}  # fmt: skip
            accounts = profile_account.finish(profiles, cpu_ms_per_job=cpu)
        drained = [
            run_drained(args.jobs, chunk=args.chunk, api_url=api_url, key=key, receiver=receiver,
                        pids={**pids, "bare worker": bare.pid}, redis_url=redis_url,
                        database_url=database_url)
            for _ in range(args.reps if args.drained else 0)
        ]  # fmt: skip
        alone = stages_alone(args.jobs, batch_size=args.batch_size, chunk=args.chunk,
                             database_url=database_url, redis_url=redis_url,
                             receiver_url=receiver.url)  # fmt: skip

    result = {
        "machine": f"{os.cpu_count()} CPUs, {sys.platform}, Python {sys.version.split()[0]}",
        "settings": {  # where the results go is not one of them
            k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"
        },
        "runs": runs,
        "median": {
            "bare_jobs_s": statistics.median(r["bare"]["jobs_s"] for r in runs),
            "spine_jobs_s": statistics.median(r["spine"]["jobs_s"] for r in runs),
            "ratio": statistics.median(r["ratio"] for r in runs),
        },
        "stages_alone_ms_per_job": alone,
    }
    if args.profile:
        result["profile_ms_per_job"] = accounts
    if drained:
        result["drained"] = drained
    report(result)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


def _dump_logs(workdir: Path) -> bool:
    """On failure, the tail of each process's log (they go with the temporary folder)."""
    for log in sorted(workdir.glob("*.log")):
        print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}", file=sys.stderr)  # noqa: T201
    return False


def _redis_pid(url: str) -> int | None:
    with contextlib.suppress(redis.RedisError, KeyError, ValueError):
        return int(redis.Redis.from_url(url).info("server")["process_id"])
    return None


def report(result: dict[str, Any]) -> None:
    runs, median = result["runs"], result["median"]
    mid = sorted(runs, key=lambda r: r["ratio"])[len(runs) // 2]
    per_rep = ", ".join(f"{r['ratio']:.3f}" for r in runs)
    s, b = mid["spine"], mid["bare"]
    lines = [
        f"machine: {result['machine']}; settings: {result['settings']}",
        "",
        f"{'':38}{'jobs/s':>10}",
        f"{'bare Celery no-op (median)':38}{median['bare_jobs_s']:>10.1f}",
        f"{'captionq spine, noop model (median)':38}{median['spine_jobs_s']:>10.1f}",
        f"{'ratio spine / bare (median of pairs)':38}{median['ratio']:>10.3f}"
        f"   (per rep: {per_rep})",
        "",
        f"median-ratio rep, CPU ms per job by process (bare worker: "
        f"{b['worker_cpu_ms_per_job']:.2f} ms/job):",
        *(f"  {name:36}{ms:>10.2f}" for name, ms in s["cpu_ms_per_job"].items()),
        f"  {'API, client side (POST wall / job)':36}{s['api_ms_per_job_client_side']:>10.2f}",
        f"  host: {s['host_cores_busy']:.2f} cores busy, {s['host_cores_idle']:.2f} idle, of "
        f"{os.cpu_count()}; waiting for a core (runnable, not running), ms per job: "
        + ", ".join(f"{name} {ms:.2f}" for name, ms in s["waiting_for_a_core_ms_per_job"].items()),
        f"  submit phase {s['submit_s']:.2f} s of {s['elapsed_s']:.2f} s; "
        f"{s['verified']} callbacks verified; {s['bulk_posts_500_retried']} of "
        f"{s['bulk_posts']} bulk POSTs answered 500 and were sent again",
        "",
        "median-ratio rep, median latency per job (ms, queueing included):",
        *(f"  {name:36}{ms:>10.1f}" for name, ms in s["latency_ms"].items()),
        "",
        "stages alone, in-process, no concurrency (ms per job):",
        *(f"  {name:46}{ms:>8.3f}" for name, ms in result["stages_alone_ms_per_job"].items()),
    ]
    if drained := result.get("drained"):
        bare = statistics.median(rep["bare worker"]["jobs_s"] for rep in drained)
        lines += ["", "each process alone, draining its queue (medians of the reps):",
                  f"  {'':24}{'jobs/s':>10}{'/ bare':>8}{'CPU ms/job':>12}"]  # fmt: skip
        for name in drained[0]:
            rate = statistics.median(rep[name]["jobs_s"] for rep in drained)
            cpu = statistics.median(rep[name]["cpu_ms_per_job"] for rep in drained)
            lines.append(f"  {name:24}{rate:>10.1f}{rate / bare:>8.3f}{cpu:>12.2f}")
    for process, account in result.get("profile_ms_per_job", {}).items():
        total = account["total"]["cpu_ms_per_job"]
        lines += ["", f"py-spy, {process}: CPU ms per job {total:.2f} (mean of the reps), by stage"]
        lines += [f"  {name:56}{ms:>8.3f}" for name, ms in account["by_stage"].items()]
    print("\n".join(lines))  # noqa: T201


if __name__ == "__main__":
    main()
