"""A prefork worker (two children, each replaced after one task) exports one target:
its parent serves the sum of every child's files (prometheus-client's multiprocess
mode), so Debian's real Prometheus sees counters that add up over children living and
dead, and no gauge of a dead child. Without the folder, the prefork pool refuses to
start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from schemas import heartbeats
from schemas.settings import CoreSettings
from tests.support.images import png
from tests.support.processes import REPO, Proc, celery_args
from tests.support.prometheus import Prometheus, free_port
from tests.support.services import LOOPBACK, LOOPBACK_ENV
from tests.support.stack import Stack
from tests.support.waiting import wait_for

JOBS = 3


@dataclass
class Forked:
    stack: Stack
    worker: Proc
    folder: Path
    prometheus: Prometheus

    def settles(self, expr: str, expected: float) -> None:
        seen: list[float | None] = []

        def check() -> bool:
            seen.append(self.prometheus.value(expr))
            return seen[-1] == expected

        try:
            wait_for(check, timeout_s=60, what=f"{expr} == {expected}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; last {seen[-1:]}\n{self.stack.logs()}") from None


@pytest.fixture(scope="module")
def forked(
    postgres_url: str, redis_db: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Forked]:
    settings = CoreSettings(
        database_url=postgres_url, redis_url=redis_db, blob_store="db", **LOOPBACK
    )
    logdir = tmp_path_factory.mktemp("prefork")
    folder = tmp_path_factory.mktemp("multiproc")
    (folder / "counter_999999.db").write_bytes(b"left by an earlier run")
    port = free_port()
    env = {
        "CAPTIONER_MODEL": "captionq/noop",  # each fresh child loads at once
        "HEARTBEAT_INTERVAL_S": "1",
        "BATCH_SIZE": "1",
        "LOG_FORMAT": "json",
        "PROMETHEUS_MULTIPROC_DIR": str(folder),
        "METRICS_PORT": str(port),
        **LOOPBACK_ENV,
    }
    stack = Stack.open(settings, env=env, logdir=logdir)
    prometheus: Prometheus | None = None
    try:
        worker = stack.start("prefork")
        prometheus = Prometheus.start(
            {"worker": f"127.0.0.1:{port}"}, tmp_path_factory.mktemp("prometheus")
        )
        yield Forked(stack, worker, folder, prometheus)
    finally:
        if prometheus is not None:
            prometheus.stop()
        stack.stop()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_counters_sum_over_children_living_and_dead(forked: Forked) -> None:
    assert not (forked.folder / "counter_999999.db").exists()  # cleared at the start
    wait_for(forked.prometheus.targets_up, timeout_s=30, what="the worker's one port up")
    client = forked.stack.client
    ids = [
        client.submit(image=png((40 * i, 90, 160)), styles=["playful"], platforms=["instagram"],
                      variants=1, callback_url=forked.stack.receiver.url).id
        for i in range(JOBS)
    ]  # fmt: skip
    for job_id in ids:
        assert client.wait(job_id, timeout_s=120).status == "succeeded", forked.stack.logs()
    wait_for(lambda: {r.job_id for r in forked.stack.receiver.received} >= set(ids))

    forked.settles('sum(captionq_jobs_finished_total{outcome="succeeded"})', JOBS)
    forked.settles("sum(captionq_images_processed_total)", JOBS)
    forked.settles("sum(captionq_batch_size_count)", JOBS)
    forked.settles('sum(captionq_deliveries_total{outcome="delivered"})', JOBS)
    forked.settles("sum(captionq_delivery_lag_seconds_count)", JOBS)
    forked.settles("captionq_jobs_in_flight", 0)
    # One series per metric, not one per child: the parent sums them.
    assert len(forked.prometheus.query("captionq_jobs_finished_total")) == 1
    forked.settles("captionq_model_load_seconds > bool 0", 1)  # the live children's

    # Every batch ran in a child of its own, and those children have exited.
    lines = [json.loads(line) for line in forked.worker.output().splitlines()
             if line.startswith("{")]  # fmt: skip
    children = {line["process"] for line in lines if line.get("job_id") in ids
                and line["message"].endswith("succeeded")}  # fmt: skip
    assert len(children) == JOBS, children
    assert forked.worker.process.pid not in children
    wait_for(lambda: not any(map(pid_alive, children)), timeout_s=30, what="the children gone")
    # No live gauge of a dead child is left in the folder.
    live = [p for p in forked.folder.iterdir() if p.name.startswith("gauge_live")]
    stale = [p.name for p in live if not pid_alive(int(p.stem.rsplit("_", 1)[1]))]
    assert stale == []


def test_the_parent_beats_for_the_worker(forked: Forked) -> None:
    """The heartbeat is the parent's (the process Kubernetes runs), and what it holds is
    what its children hold."""
    client = redis.Redis.from_url(forked.stack.settings.redis_url)
    # Its key lives three intervals (3 s here): on a busy host, wait for the next beat.
    wait_for(lambda: heartbeats.alive(client), timeout_s=15, what="the parent's heartbeat")
    (beat,) = heartbeats.alive(client)
    assert beat.pid == forked.worker.process.pid
    assert beat.in_flight == 0
    forked.settles('captionq_worker_heartbeat_timestamp_seconds > bool 0', 1)


def test_prefork_without_the_folder_refuses_to_start(tmp_path: Path, redis_db: str) -> None:
    args, _ = celery_args("prefork", "refused", tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "worker.app", *args],
        cwd=REPO, env={**env, "METRICS_PORT": str(free_port()), "REDIS_URL": redis_db,
                       "LOG_FORMAT": "text"},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    said = done.stdout + done.stderr
    assert "error[settings_invalid]" in said
    assert "PROMETHEUS_MULTIPROC_DIR" in said
    assert "Traceback" not in said
