"""A worker's heartbeat never stops while the worker lives, and a prefork worker's
metric files are read safely while its children come and go.

A prefork parent's heartbeat reads its children's in-flight gauges from the metric
files. A child that has just started creates its file empty, then sizes it; read in
between, prometheus-client failed on the empty file, and when that happened at the
worker's first beat the heartbeat never started: the worker looked dead (no
heartbeat, liveness file stale) while it worked. Exiting children, the parent's
scrape thread and its heartbeat thread also remove dead children's gauge files, at
times the same file at once."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import redis
from prometheus_client.mmap_dict import MmapedDict, mmap_key

from schemas import heartbeats
from schemas.settings import WorkerSettings
from worker import multiprocess
from worker.heartbeat import Heartbeat
from worker.multiprocess import Children, child_exited

pytestmark = pytest.mark.ops


def test_a_file_still_empty_holds_no_value_yet(tmp_path: Path) -> None:
    values = MmapedDict(str(tmp_path / f"gauge_livesum_{os.getpid()}.db"))
    key = mmap_key("captionq_jobs_in_flight", "captionq_jobs_in_flight", [], [], "in flight")
    values.write_value(key, 2.0, 0.0)
    values.close()
    (tmp_path / "counter_4000002.db").touch()  # a child that has just created its file
    assert Children(str(tmp_path)).value("captionq_jobs_in_flight") == 2.0


def test_a_dead_childs_gauges_go_when_another_removes_some_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = 4_000_001
    files = [tmp_path / f"gauge_{mode}_{pid}.db" for mode in ("livesum", "livemax")]
    for path in files:
        path.write_bytes(b"\0" * 16)
    real = multiprocess.mark_process_dead

    def raced(dead: int, path: str) -> None:
        files[0].unlink(missing_ok=True)  # another thread's removal, first
        if not raced.done:  # type: ignore[attr-defined]
            raced.done = True  # type: ignore[attr-defined]
            raise FileNotFoundError(str(files[0]))
        real(dead, path=path)

    raced.done = False  # type: ignore[attr-defined]
    monkeypatch.setattr(multiprocess, "mark_process_dead", raced)
    child_exited(str(tmp_path), pid=pid)  # no error
    assert not any(path.exists() for path in files)


def test_a_beat_that_cannot_say_what_it_holds_touches_nothing(
    redis_db: str, tmp_path: Path
) -> None:
    """The liveness file ages while beats fail, so Kubernetes restarts a worker whose
    heartbeat is gone (and status and the alerts, which read the key, agree)."""
    alive = tmp_path / "heartbeat"
    settings = WorkerSettings(redis_url=redis_db, heartbeat_file=str(alive))

    def held() -> int:
        raise FileNotFoundError("a child's file went while it was read")

    beat = Heartbeat(settings, pool="gpu", held=held, model="captionq/noop")
    with pytest.raises(FileNotFoundError):
        beat.beat()
    assert not alive.exists()
    assert not heartbeats.alive(redis.Redis.from_url(redis_db))


def test_the_heartbeat_outlives_a_beat_that_failed(redis_db: str) -> None:
    settings = WorkerSettings(redis_url=redis_db, heartbeat_interval_s=0.05)
    reads = iter(["fail", "fail"])  # the first beat, at start, fails too

    def held() -> int:
        read = next(reads, 3)
        if read == "fail":
            raise FileNotFoundError("a child's file went while it was read")
        return int(read)

    beat = Heartbeat(settings, pool="gpu", held=held, model="captionq/noop")
    client = redis.Redis.from_url(redis_db)
    beat.start()
    try:
        deadline = time.monotonic() + 10
        seen: list[int] = []
        while time.monotonic() < deadline and 3 not in seen:
            seen = [b.in_flight for b in heartbeats.alive(client) if b.worker == beat.name]
            time.sleep(0.05)
        assert seen == [3], "the heartbeat stopped after a beat failed"
    finally:
        beat.stop()
