"""A running captionq as ops see it: a real Prometheus scrapes the API, the review desk,
a worker and beat after real jobs, and its query API shows the counters moved by
exactly what happened (callbacks and their delivery lag, requests by route template,
review decisions where each is made); the worker's own heartbeat; JSON log lines with
the documented fields; the KEDA ScaledObject's own query returns N queued + M in
flight."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml
from kombu import Connection
from sqlmodel import col, select

from producers.client import CaptionClient
from schemas import heartbeats
from schemas.broker import celery_config
from schemas.names import QUEUE_GPU
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_api_key
from schemas.tables import QUALITY_SCORE_VERSION, Delivery, Job, Tenant, Variant, utcnow
from tests.ops.conftest import DEPLOY, REQUEST_MAX_BYTES, REVIEWER, World
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
    started = time.monotonic()
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
    settles(world, 'captionq_jobs{status="running"}', 0)  # a state with no job: 0, not absent
    settles(world, "captionq_deliveries_dead", 0)
    # Each job.succeeded callback's lag (row written → 2xx recorded): one each, none
    # longer than the test so far, every one in the buckets below an hour.
    settles(world, "sum(captionq_delivery_lag_seconds_count)", JOBS)
    settles(world, 'sum(captionq_delivery_lag_seconds_bucket{le="3600.0"})', JOBS)
    lag_s = world.prometheus.value("sum(captionq_delivery_lag_seconds_sum)")
    assert lag_s is not None
    assert 0 < lag_s <= JOBS * (time.monotonic() - started)
    settles(world, 'captionq_workers_alive{pool="fetch+gpu+io"}', 1)
    settles(world, 'captionq_jobs_in_flight{job="worker"}', 0)
    settles(world, 'sum(captionq_queue_depth{queue="captionq.gpu"})', 0)
    settles(world, 'captionq_dependency_up{dependency="database"}', 1)
    assert world.prometheus.value('captionq_model_load_seconds{job="worker"}') > 0
    assert world.prometheus.value('captionq_model_seconds_count{job="worker"}') >= 1


def requests_seen(world: World, route: str, method: str, status_class: str) -> str:
    return (
        f'sum(captionq_http_request_duration_seconds_count{{job="api",route="{route}",'
        f'method="{method}",status_class="{status_class}"}})'
    )


def test_request_latency_by_route_template(world: World) -> None:
    """Each answer is timed under its route's template (never the path itself), its
    method and status class; a path no route knows is ``unmatched``; a body refused for
    its size before routing is timed under the route it was sent to."""
    headers = {"authorization": f"Bearer {world.key}"}
    (known,) = world.submit(1)
    for job_id in (known, known, known, "job_missing1", "job_missing2"):
        httpx.get(f"{world.api_url}/v1/jobs/{job_id}", headers=headers, timeout=10)
    assert httpx.get(f"{world.api_url}/no/such/{known}", timeout=10).status_code == 404
    body = b" " * (REQUEST_MAX_BYTES + 1)
    too_big = httpx.post(f"{world.api_url}/v1/jobs", content=body, headers=headers, timeout=60)
    assert too_big.status_code == 413
    settles(world, requests_seen(world, "/v1/jobs/{job_id}", "GET", "2xx"), 3)
    settles(world, requests_seen(world, "/v1/jobs/{job_id}", "GET", "4xx"), 2)
    settles(world, requests_seen(world, "unmatched", "GET", "4xx"), 1)
    settles(world, requests_seen(world, "/v1/jobs", "POST", "4xx"), 1)
    routes = world.prometheus.query(
        'count by (route) (captionq_http_request_duration_seconds_count{job="api"})'
    )
    assert not [labels for labels, _ in routes if known in labels["route"]]
    wait_for(lambda: world.stack.client.get(known).status == "succeeded", timeout_s=120)


def desk(world: World) -> tuple[httpx.Client, str]:
    """A signed-in session at the review desk, and its CSRF token."""
    http = httpx.Client(base_url=world.review_url, follow_redirects=False, timeout=30)
    form = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/login").text)
    assert form is not None
    email, password = REVIEWER
    signed = http.post(
        "/login", data={"email": email, "password": password, "csrf_token": form[1], "next": "/"}
    )
    assert signed.status_code == 303, signed.text
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/").text)
    assert token is not None
    return http, token[1]


def decisions_of(world: World, job: str, action: str) -> str:
    return f'sum(captionq_review_decisions_total{{job="{job}",action="{action}"}})'


def test_review_decisions_are_counted_where_they_are_made(world: World) -> None:
    """An approval through the API, a rejection and an edit at the desk, variants the
    worker auto-approves: each counted once, by the process that made it; a refused
    decision is not counted."""
    with session_scope(world.stack.database_url) as session:
        pending = session.exec(
            select(Variant.id).where(Variant.review_state == "pending_review").limit(3)
        ).all()
    assert len(pending) == 3
    api = {"authorization": f"Bearer {world.stack.api_key}"}
    approve = f"{world.api_url}/v1/review/variants/{pending[0]}/approve"
    assert httpx.post(approve, json={}, headers=api, timeout=10).status_code == 200
    assert httpx.post(approve, json={}, headers=api, timeout=10).status_code == 409
    http, token = desk(world)
    json_please = {"accept": "application/json"}
    try:
        rejected = http.post(
            f"/variants/{pending[1]}/reject",
            data={"csrf_token": token, "reason": "off_brand"}, headers=json_please,
        )  # fmt: skip
        assert rejected.status_code == 200, rejected.text
        edited = http.post(
            f"/variants/{pending[2]}/edit",
            data={"csrf_token": token, "text": "Fresh light for a bright morning"},
            headers=json_please,
        )
        assert edited.status_code == 200, edited.text
        again = http.post(
            f"/variants/{pending[2]}/edit",
            data={"csrf_token": token, "text": "Another go"}, headers=json_please,
        )  # fmt: skip
        assert again.status_code == 409
    finally:
        http.close()
    with session_scope(world.stack.database_url) as session:
        tenant = session.get(Tenant, world.stack.tenant_id)
        assert tenant is not None
        tenant.auto_approve_threshold = 0.0
        tenant.auto_approve_score_version = QUALITY_SCORE_VERSION
        session.add(tenant)
    try:
        ids = world.submit(2)
        for job_id in ids:
            assert world.stack.client.wait(job_id, timeout_s=120).status == "succeeded"
    finally:
        with session_scope(world.stack.database_url) as session:
            tenant = session.get(Tenant, world.stack.tenant_id)
            assert tenant is not None
            tenant.auto_approve_threshold = None
            session.add(tenant)
    with session_scope(world.stack.database_url) as session:
        auto = session.exec(
            select(Variant.id).where(
                col(Variant.job_id).in_(ids), Variant.review_state == "auto_approved"
            )
        ).all()
    assert auto, "the tiny model's variants were all flagged: nothing to auto-approve"
    settles(world, decisions_of(world, "api", "approved"), 1)
    settles(world, decisions_of(world, "review", "rejected"), 1)
    settles(world, decisions_of(world, "review", "edited"), 1)
    settles(world, decisions_of(world, "worker", "auto_approved"), len(auto))
    settles(world, decisions_of(world, "api", "rejected"), 0)
    settles(world, decisions_of(world, "review", "approved"), 0)
    totals = world.prometheus.query("sum by (action) (captionq_review_decisions_total)")
    assert {labels["action"]: value for labels, value in totals} == {
        "approved": 1, "edited": 1, "rejected": 1, "auto_approved": len(auto)
    }


def test_worker_heartbeat_lives_without_celery_events(world: World) -> None:
    """The worker runs without Celery's heartbeat, gossip and mingle; its own heartbeat
    says it is alive, what it holds, and keeps its liveness file fresh."""
    client = redis.Redis.from_url(world.stack.settings.redis_url)
    (beat,) = heartbeats.alive(client)
    assert beat.pool == "fetch+gpu+io"
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
    assert worker["pool"] == "fetch+gpu+io"
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
    """No worker consumes; N jobs wait on the broker (one of them marked running, as a
    claimed one is) and a message of M jobs is taken and held unacknowledged, as a worker
    holds its prefetched jobs; the autoscaler's query, over the jobs the store counts
    queued or running, says N + M."""
    world.worker.stop()
    settles(world, 'captionq_workers_alive{pool="fetch+gpu+io"}', 0)
    assert heartbeats.alive(redis.Redis.from_url(world.stack.settings.redis_url)) == []
    queued, in_flight = 5, 3
    # Two bulk submissions: two caption messages, of 3 jobs and of 5.
    assert len(world.submit(in_flight)) == in_flight
    waiting = world.submit(queued)
    assert len(waiting) == queued
    with session_scope(world.stack.settings.database_url) as session:
        claimed = session.get(Job, waiting[0])
        assert claimed is not None
        claimed.status = "running"
        session.add(claimed)
    transport = celery_config(world.stack.settings.redis_url)["broker_transport_options"]
    with Connection(world.stack.settings.redis_url, transport_options=transport) as conn:
        held = conn.channel().basic_get(QUEUE_GPU, no_ack=False)  # the first: 3 jobs
        assert held is not None
        assert len(held.payload[0][0]["job_ids"]) == in_flight
        settles(world, 'sum(captionq_queue_taken{queue="captionq.gpu"})', 1)
        settles(world, keda_query(), queued + in_flight)
        settles(world, "captionq:gpu_work", queued + in_flight)
        found = status(world)
    assert found["workers"] == []
    gpu = next(q for q in found["queues"] if q["queue"] == QUEUE_GPU)
    assert (gpu["waiting"], gpu["taken"]) == (1, 1)  # the broker counts messages
    assert gpu["oldest_age_s"] > 0
