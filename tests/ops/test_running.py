"""A running captionq as ops see it: a real Prometheus scrapes the API and a worker
after real jobs, and its query API shows the counters moved by exactly what happened;
the worker's own heartbeat; JSON log lines with the documented fields; the KEDA
ScaledObject's own query returns N queued + M in flight."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml
from kombu import Connection
from sqlmodel import select

from producers.client import CaptionClient
from schemas import heartbeats
from schemas.broker import celery_config
from schemas.names import QUEUE_GPU
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_api_key
from schemas.tables import Delivery, Job, Tenant, Variant, utcnow
from tests.ops.conftest import DEPLOY, World
from tests.support.stack import TENANT
from tests.support.waiting import wait_for

JOBS = 3


def settles(world: World, expr: str, expected: float, timeout_s: float = 60.0) -> None:
    """Wait until Prometheus answers ``expected`` for ``expr`` (scrapes are every second)."""
    seen: list[float | None] = []

    def check() -> bool:
        seen.append(world.prometheus.value(expr))
        return seen[-1] == expected

    try:
        wait_for(check, timeout_s=timeout_s, what=f"{expr} == {expected}")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; last answer {seen[-1:]}\n{world.stack.logs()}") from None


def test_counters_move_by_what_happened(world: World) -> None:
    client: CaptionClient = world.stack.client
    wait_for(world.prometheus.targets_up, timeout_s=30, what="every target up")
    refused = world.submit(1, styles=["playful"], image_base64="bm90IGFuIGltYWdl")
    assert refused == []
    ids = world.submit(JOBS)
    assert len(ids) == JOBS
    for job_id in ids:
        assert client.wait(job_id, timeout_s=120).status == "succeeded", world.stack.logs()
    wait_for(lambda: {r.job_id for r in world.stack.receiver.received} >= set(ids))

    settles(world, 'captionq_jobs_submitted_total{outcome="accepted"}', JOBS)
    settles(world, 'sum(captionq_jobs_submitted_total{outcome="refused"})', 1)
    settles(world, 'sum(captionq_jobs_finished_total{outcome="succeeded"})', JOBS)
    settles(world, "sum(captionq_images_processed_total)", JOBS)
    settles(world, "sum(captionq_batch_size_sum)", JOBS)
    settles(world, "sum(captionq_job_duration_seconds_count)", JOBS)
    settles(world, 'sum(captionq_deliveries_total{outcome="delivered",status_class="2xx"})', JOBS)
    settles(world, 'captionq_jobs{status="succeeded"}', JOBS)
    settles(world, "captionq_deliveries_dead", 0)
    settles(world, 'captionq_workers_alive{pool="gpu+io"}', 1)
    settles(world, 'captionq_jobs_in_flight{job="worker"}', 0)
    settles(world, 'sum(captionq_queue_depth{queue="captionq.gpu"})', 0)
    settles(world, 'captionq_dependency_up{dependency="database"}', 1)
    assert world.prometheus.value('captionq_model_load_seconds{job="worker"}') > 0
    assert world.prometheus.value('captionq_model_seconds_count{job="worker"}') >= 1


def test_worker_heartbeat_lives_without_celery_events(world: World) -> None:
    """The worker runs without Celery's heartbeat, gossip and mingle; its own heartbeat
    says it is alive, what it holds, and keeps its liveness file fresh."""
    client = redis.Redis.from_url(world.stack.settings.redis_url)
    (beat,) = heartbeats.alive(client)
    assert beat.pool == "gpu+io"
    assert beat.pid == world.worker.process.pid
    assert time.time() - beat.at < 3 * 1.0 + 1
    # The jobs above are finished: a beat after them says the worker holds none.
    wait_for(lambda: heartbeats.alive(client)[0].in_flight == 0, timeout_s=10, what="idle")
    touched = Path(world.stack.env["HEARTBEAT_FILE"])
    first = touched.stat().st_mtime
    wait_for(lambda: touched.stat().st_mtime > first, timeout_s=10, what="a fresh heartbeat")
    last = world.prometheus.value('captionq_worker_heartbeat_timestamp_seconds{job="worker"}')
    assert last is not None
    assert time.time() - last < 10


def test_every_dashboard_query_returns_data(world: World) -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "captionq.json").read_text())
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(queries) >= 15
    settles(world, "sum(captionq_reaper_actions_total) >= bool 0", 1)
    empty: list[str] = []

    def all_answer() -> bool:
        # A scrape that a loaded machine lets time out leaves a gap: ask again.
        empty[:] = [q for q in queries if not world.prometheus.query(q)]
        return not empty

    wait_for(all_answer, timeout_s=30, what=f"data for every dashboard query (none: {empty})")
    assert world.prometheus.value('captionq_process_start_time_seconds{role="beat"}')


def json_lines(text: str) -> list[dict[str, object]]:
    lines = [line for line in text.splitlines() if line.startswith("{")]
    return [json.loads(line) for line in lines]


def test_log_lines_are_json_with_the_documented_fields(world: World) -> None:
    """After the jobs above: each job's line carries its id, tenant, attempt, batch and
    task; every JSON line has the base fields; the API's lines are JSON too."""
    ids = world.submit(2)
    for job_id in ids:
        world.stack.client.wait(job_id, timeout_s=120)
    lines = json_lines(world.worker.output())
    assert lines, world.worker.output()[-2000:]
    for line in lines:
        assert {"ts", "level", "logger", "message", "process"} <= set(line)
    for job_id in ids:
        (done,) = [line for line in lines if line.get("job_id") == job_id]
        assert done["message"] == f"job {job_id} succeeded"
        assert done["task"] == "captionq.caption"
        assert done["tenant"] == world.stack.tenant_id
        assert done["attempt"] == 1
        assert isinstance(done["batch_id"], str)
        assert done["batch_id"]
    delivered = [line for line in lines if line.get("task") == "captionq.deliver"]
    assert delivered
    assert all(line.get("task_id") for line in delivered)
    api = json_lines(world.api.output())
    assert any(line["logger"] == "uvicorn.access" for line in api), world.api.output()[-2000:]


def status(world: World) -> dict[str, Any]:
    """``captionq status --json`` as a script runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "producers.cli", "status", "--json"],
        env={**os.environ, **world.stack.env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_status_shows_workers_queues_and_jobs(world: World) -> None:
    found = status(world)
    (worker,) = found["workers"]
    assert worker["pool"] == "gpu+io"
    assert worker["pid"] == world.worker.process.pid
    assert worker["in_flight"] == 0
    gpu = next(q for q in found["queues"] if q["queue"] == QUEUE_GPU)
    assert (gpu["waiting"], gpu["taken"], gpu["oldest_age_s"]) == (0, 0, 0)
    with session_scope(world.stack.database_url) as session:
        succeeded = len(session.exec(select(Job).where(Job.status == "succeeded")).all())
    assert found["jobs"] == {"succeeded": succeeded}
    assert found["dead_deliveries"] == 0
    assert found["reaper"]["age_s"] < 30  # beat's reaper runs every second here
    screen = subprocess.run(
        [sys.executable, "-m", "producers.cli", "status"],
        env={**os.environ, **world.stack.env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert screen.returncode == 0, screen.stderr
    assert worker["worker"] in screen.stdout
    assert "dead deliveries: 0" in screen.stdout


def test_usage_by_tenant_and_day_after_real_jobs(world: World) -> None:
    """The API (admin scope) and the CLI give the same figures as the store's rows."""
    with session_scope(world.stack.database_url) as session:
        jobs = session.exec(select(Job)).all()
        variants = session.exec(select(Variant)).all()
        delivered = session.exec(select(Delivery).where(Delivery.status == "delivered")).all()
        tenant = session.get(Tenant, world.stack.tenant_id)
        assert tenant is not None
        admin = create_api_key(session=session, tenant=tenant, scopes=["admin"])[1]
    headers = {"authorization": f"Bearer {admin}"}
    answer = httpx.get(f"{world.api_url}/v1/usage", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    (today,) = answer.json()["days"]
    assert today["day"] == utcnow().date().isoformat()
    assert (today["jobs"], today["images"], today["variants"], today["callbacks"]) == (
        len(jobs), len(jobs), len(variants), len(delivered)
    )
    assert today["model_seconds"] > 0
    refused = httpx.get(f"{world.api_url}/v1/usage", headers={"authorization": f"Bearer "
                        f"{world.key}"}, timeout=10)  # fmt: skip
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    done = subprocess.run(
        [sys.executable, "-m", "producers.cli", "tenant", "usage", TENANT, "--json"],
        env={**os.environ, **world.stack.env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(done.stdout)
    assert row["tenant"] == TENANT
    assert {k: row[k] for k in ("day", "jobs", "images", "variants", "callbacks")} == {
        k: today[k] for k in ("day", "jobs", "images", "variants", "callbacks")
    }


def keda_query() -> str:
    documents = yaml.safe_load_all((DEPLOY / "k8s" / "base" / "keda-scaledobject.yaml").read_text())
    (scaled,) = [d for d in documents if d and d["kind"] == "ScaledObject"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    return str(trigger["metadata"]["query"])


def test_keda_query_counts_queued_and_in_flight(world: World) -> None:
    """No worker consumes; M messages are taken and held unacknowledged, as a worker
    holds its prefetched and running jobs; the autoscaler's query says N + M."""
    world.worker.stop()
    settles(world, 'captionq_workers_alive{pool="gpu+io"}', 0)
    assert heartbeats.alive(redis.Redis.from_url(world.stack.settings.redis_url)) == []
    queued, in_flight = 5, 3
    assert len(world.submit(queued + in_flight)) == queued + in_flight
    transport = celery_config(world.stack.settings.redis_url)["broker_transport_options"]
    with Connection(world.stack.settings.redis_url, transport_options=transport) as conn:
        channel = conn.channel()
        held = [channel.basic_get(QUEUE_GPU, no_ack=False) for _ in range(in_flight)]
        assert all(message is not None for message in held)
        settles(world, 'sum(captionq_queue_taken{queue="captionq.gpu"})', in_flight)
        settles(world, keda_query(), queued + in_flight)
        settles(world, "captionq:gpu_work", queued + in_flight)
        found = status(world)
    assert found["workers"] == []
    gpu = next(q for q in found["queues"] if q["queue"] == QUEUE_GPU)
    assert (gpu["waiting"], gpu["taken"]) == (queued, in_flight)
    assert gpu["oldest_age_s"] > 0
