"""Fault injection with real processes: every job terminal, results stored once, every
event delivered at least once, and the unique webhook-ids exactly the expected set."""

from __future__ import annotations

import itertools
import json
import re
import signal
import time
from pathlib import Path

import psycopg
import pytest
import redis
from sqlmodel import select

from schemas.store.deliveries import replay_dead
from schemas.store.sessions import session_scope
from schemas.tables import Delivery, DeliveryStatus, Job, JobStatus
from tests.reliability.scenarios import (
    SCENARIO_REPORT,
    SLOTS,
    FaultStack,
    bodies_stable,
    events_per_job,
    tally,
)
from tests.support.processes import REPO
from tests.support.waiting import wait_for
from worker.models.tiny import build_blip_from_config

pytestmark = pytest.mark.reliability


def _succeeded(stack: FaultStack, ids: list[str]) -> int:
    with session_scope(stack.database_url) as session:
        jobs = session.exec(select(Job.status).where(Job.id.in_(ids))).all()  # type: ignore[attr-defined]
    return sum(1 for s in jobs if s == JobStatus.succeeded)


def _running(stack: FaultStack, ids: list[str]) -> int:
    with session_scope(stack.database_url) as session:
        jobs = session.exec(select(Job.status).where(Job.id.in_(ids))).all()  # type: ignore[attr-defined]
    return sum(1 for s in jobs if s == JobStatus.running)


def _check(stack: FaultStack, ids: list[str], scenario: str, *, timeout_s: float = 90) -> None:
    """Wait for the end state, print the tally, assert the guarantees."""

    def done() -> bool:
        t = tally(stack.database_url, ids, stack.receiver, SLOTS)
        return t.lost == 0 and t.delivered == t.expected_callbacks == len(ids)

    try:
        wait_for(done, timeout_s, f"{scenario}: all jobs terminal and all events delivered")
    except AssertionError as exc:  # say what the processes said
        raise AssertionError(f"{exc}\n{stack.logs()}") from None
    finally:
        result = tally(stack.database_url, ids, stack.receiver, SLOTS)
        database = stack.database_url.split(":", 1)[0].split("+", 1)[0]
        SCENARIO_REPORT.append(f"{database:<10} {result.line(scenario)}")
    assert result.lost == 0, stack.logs()
    assert result.duplicated == 0
    assert set(events_per_job(stack.database_url, ids).values()) == {1}  # one event per job
    assert result.delivered == result.expected_callbacks == len(ids)
    assert all(h.verified for h in stack.receiver.received)
    assert bodies_stable(stack.receiver)


def test_sigkill_worker_mid_batch_with_full_buffer(stack: FaultStack) -> None:
    stack.start("io+fetch")
    stack.start("beat")
    gpu = stack.start("gpu")
    ids = stack.submit(32)
    wait_for(
        lambda: _succeeded(stack, ids) >= 4 and _running(stack, ids) > 0,
        60,
        "a first batch done and the next one running",
    )
    gpu.signal(signal.SIGKILL)  # mid-batch, with a full celery-batches buffer
    gpu.process.wait()
    stack.start("gpu")
    _check(stack, ids, "sigkill-worker")
    assert _succeeded(stack, ids) == len(ids)
    assert stack.logged("lease expired")  # the reaper, not a restart, brought them back


def _fetches_in_flight(stack: FaultStack, ids: list[str]) -> int:
    with session_scope(stack.database_url) as session:
        rows = session.exec(
            select(Job.id).where(
                Job.id.in_(ids),  # type: ignore[attr-defined]
                Job.status == JobStatus.fetching,
                Job.lease_expires_at.is_not(None),  # type: ignore[union-attr]
            )
        ).all()
    return len(rows)


def test_sigkill_io_worker_mid_fetch(stack: FaultStack) -> None:
    """An IO worker killed while it fetches (threads mid-GET, more fetches in its
    buffer): the reaper fetches its claimed jobs again when their fetch lease lapses, and
    puts back the messages it took but never claimed; each image is fetched, captioned
    and announced once."""
    stack.start("beat")
    stack.start("gpu")
    io = stack.start("io+fetch")
    ids = stack.submit(16, folder="/long")
    wait_for(lambda: _fetches_in_flight(stack, ids) >= 2, 60, "fetches in flight")
    io.signal(signal.SIGKILL)
    io.process.wait()
    stack.start("io+fetch")
    _check(stack, ids, "sigkill-io-mid-fetch", timeout_s=120)
    assert _succeeded(stack, ids) == len(ids)
    assert stack.logged("fetches lost their lease")  # the reaper brought them back
    with session_scope(stack.database_url) as session:
        jobs = session.exec(select(Job).where(Job.id.in_(ids))).all()  # type: ignore[attr-defined]
    assert max(job.fetch_attempts for job in jobs) >= 2  # a killed fetch was a fetch attempt
    assert {job.attempts for job in jobs} == {1}  # and cost the model nothing


def test_redis_loses_everything_mid_stream(stack: FaultStack) -> None:
    stack.start("io+fetch")
    stack.start("beat")
    stack.start("gpu")
    ids = stack.submit(32)
    wait_for(lambda: _succeeded(stack, ids) >= 4, 60, "a first batch")
    redis.Redis.from_url(stack.redis.url).flushall()  # the test's own redis-server
    _check(stack, ids, "redis-flushall")
    assert stack.logged("the broker lost its data")
    assert _succeeded(stack, ids) == len(ids)


def test_redis_goes_away_mid_fetch_and_comes_back_empty(stack: FaultStack) -> None:
    """The broker stops while image fetches and batches are in flight, and a new, empty
    one takes its port a few seconds later (a failover that kept nothing). Every job
    still ends once, with one callback each; and no worker prints a traceback for the
    broker being away: it is an outage each one says in a line and recovers from."""
    stack.start("io+fetch")
    stack.start("beat")
    stack.start("gpu")
    ids = stack.submit(24, folder="/long")
    wait_for(lambda: _fetches_in_flight(stack, ids) >= 2, 60, "fetches in flight")
    # The fetches in flight finish and publish while the broker is away.
    stack.redis.restart_empty(away_s=3)
    _check(stack, ids, "redis-away-then-empty", timeout_s=120)
    assert _succeeded(stack, ids) == len(ids)
    assert stack.logged("the broker is away")
    tracebacks = [p.name for p in stack.procs.values() if "Traceback" in p.output()]
    assert not tracebacks, stack.logs()


def test_receiver_fails_then_recovers_hangs_and_goes_away(stack: FaultStack) -> None:
    stack.start("io+fetch")
    stack.start("beat")
    stack.start("gpu")
    receiver = stack.receiver
    receiver.mode = "fail"  # 500 for a while, then recovers
    ids = stack.submit(12, slow=False)
    wait_for(lambda: _succeeded(stack, ids) == len(ids), 60, "jobs done")
    time.sleep(2)
    receiver.mode = "ok"
    _check(stack, ids, "receiver-500-then-ok")

    receiver.mode = "hang"  # answers only after the sender's 1.5 s deadline
    hung = stack.submit(6, slow=False)
    wait_for(lambda: _succeeded(stack, hung) == len(hung), 60, "jobs done")
    time.sleep(3)
    receiver.mode = "ok"
    _check(stack, hung, "receiver-hangs")

    receiver.mode = "fail"  # gone for good: every attempt fails, the deliveries die
    gone = stack.submit(6, slow=False)

    def all_dead() -> bool:
        with session_scope(stack.database_url) as session:
            rows = session.exec(select(Delivery).where(Delivery.job_id.in_(gone))).all()  # type: ignore[attr-defined]
        return len(rows) == len(gone) and all(r.status == DeliveryStatus.dead for r in rows)

    wait_for(all_dead, 60, "deliveries dead after the last attempt")
    receiver.mode = "ok"  # it is back: replay from the store (what the CLI and API call)
    with session_scope(stack.database_url) as session:
        assert replay_dead(session=session, tenant_id=stack.tenant_id) == len(gone)
    _check(stack, gone, "receiver-gone-dead-replayed")


def test_crash_after_2xx_before_marked_delivered(stack: FaultStack) -> None:
    stack.start("beat")
    stack.start("gpu")
    io = stack.start("io+fetch")
    crashed: list[str] = []

    def crash_sender(msg_id: str) -> None:
        if not crashed:
            crashed.append(msg_id)
            io.signal(signal.SIGKILL)  # the receiver has the event; the sender dies now

    stack.receiver.on_first = crash_sender
    ids = stack.submit(8, slow=False)
    wait_for(lambda: bool(crashed), 60, "the first callback")
    io.process.wait()
    stack.start("io+fetch")

    def redelivered() -> bool:
        return sum(1 for h in stack.receiver.received if h.webhook_id == crashed[0]) >= 2

    wait_for(redelivered, 60, "the same event again")
    _check(stack, ids, "crash-after-2xx")


def test_sigterm_during_a_batch(stack: FaultStack) -> None:
    stack.start("io+fetch")
    stack.start("beat")
    gpu = stack.start("gpu")
    ids = stack.submit(24)
    wait_for(lambda: _succeeded(stack, ids) >= 4, 60, "a first batch")
    gpu.signal(signal.SIGTERM)
    assert gpu.process.wait(timeout=40) in (0, 75)  # bounded by SHUTDOWN_GRACE_S
    stack.start("gpu")
    _check(stack, ids, "sigterm-worker")
    assert _succeeded(stack, ids) == len(ids)


def test_sigterm_to_the_whole_gpu_pool_while_jobs_stream_in(stack: FaultStack) -> None:
    """Scale-in as Kubernetes does it, pool-wide: SIGTERM to every GPU worker at once
    while jobs keep arriving. Each exits within SHUTDOWN_GRACE_S, its batch finished or
    handed back; a new pool finishes everything, nothing lost or stored twice."""
    stack.start("io+fetch")
    stack.start("beat")
    pool = [stack.start("gpu") for _ in range(3)]
    ids = stack.submit(12)
    wait_for(lambda: _running(stack, ids) > 0, 60, "batches in hand")
    ids += stack.submit(12)
    for worker in pool:
        worker.signal(signal.SIGTERM)
    ids += stack.submit(12)  # still streaming in while the pool winds down
    for worker in pool:
        assert worker.process.wait(timeout=45) in (0, 75), stack.logs()
    ids += stack.submit(12)
    for _ in range(2):
        stack.start("gpu")
    _check(stack, ids, "sigterm-whole-pool", timeout_s=120)
    assert _succeeded(stack, ids) == len(ids)


def _stages(log: str) -> list[dict[str, float]]:
    """The ``stages`` of each batch a worker stored, from its JSON log lines."""
    found = []
    for line in log.splitlines():
        if line.startswith("{") and '"stages"' in line:
            found.append(json.loads(line)["stages"])
    return sorted(found, key=lambda stages: stages["gpu_from"])


def test_sigterm_with_batches_in_several_stages(stack: FaultStack, tmp_path: Path) -> None:
    """A pipelined GPU worker with a model slow enough to catch: one batch generating,
    the next prepared and waiting for the GPU, more being fetched. Its stored batches
    show the overlap (each claimed before the one ahead of it left the GPU, one on the
    GPU at a time); SIGTERM, and past the shutdown grace every batch in hand is handed
    back at once; a new worker finishes them, nothing lost or stored twice."""
    config = json.loads((REPO / "benchmarks" / "configs" / "blip-cpu-small.json").read_text())
    model = build_blip_from_config(tmp_path / "blip-cpu-small", config["config"])
    stack.start("io+fetch")
    stack.start("beat")
    gpu = stack.start("gpu", CAPTIONER_MODEL=str(model), MAX_NEW_TOKENS="12",
                      SHUTDOWN_GRACE_S="0.5", LOG_FORMAT="json")  # fmt: skip
    ids = stack.submit(24)
    wait_for(lambda: _succeeded(stack, ids) >= 8, 120, "two batches stored")
    wait_for(lambda: _running(stack, ids) >= 8, 60, "two batches in hand")
    gpu.signal(signal.SIGTERM)
    assert gpu.process.wait(timeout=40) == 75, stack.logs()  # past the grace: handed back
    handed = re.search(r"(\d+) batches \((\d+) jobs\) in hand", gpu.output())
    assert handed is not None, gpu.output()
    assert int(handed.group(1)) >= 2  # several batches, in several stages
    stored = _stages(gpu.output())
    assert len(stored) >= 2
    for ahead, behind in itertools.pairwise(stored):
        assert ahead["gpu_until"] <= behind["gpu_from"]  # one batch on the GPU at a time
    assert any(behind["claim"] < ahead["gpu_until"]
               for ahead, behind in itertools.pairwise(stored))  # fmt: skip
    stack.start("gpu")
    _check(stack, ids, "sigterm-pipelined-stages", timeout_s=120)
    assert _succeeded(stack, ids) == len(ids)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # PostgreSQL's fault
def test_postgres_connections_killed_while_workers_write(stack: FaultStack) -> None:
    stack.start("io+fetch")
    stack.start("beat")
    stack.start("gpu")
    ids = stack.submit(32)
    name = stack.database_url.rsplit("/", 1)[1]
    admin = stack.database_url.rsplit("/", 1)[0].replace("postgresql+psycopg", "postgresql")
    for _ in range(3):
        wait_for(lambda: _succeeded(stack, ids) >= 4, 60, "a first batch")
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
        time.sleep(1)
    _check(stack, ids, "postgres-terminated")
