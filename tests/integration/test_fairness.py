"""Fairness between tenants: a small tenant's job is not stuck behind a large tenant's flood.
Both submit as integrators do, through the HTTP SDK and a served API.

The flood and the small job are queued first, then one worker drains the queue,
so the order of service is the broker's (priority) order, not a race.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from producers.client import CaptionClient
from schemas.settings import CoreSettings
from schemas.store.sessions import migrate
from tests.support.api import client_of, new_tenant, served_api
from tests.support.images import png
from tests.support.processes import start

FLOOD = 120


def rank_of_small_tenant(
    tmp_path: Path, redis_db: str, *, steps: list[int]
) -> tuple[int, float, float]:
    """Submit a flood then one small job; return the small job's finishing rank and the
    small and median-flood latencies (s)."""
    url = f"sqlite:///{tmp_path / 'fair.db'}"
    migrate(url)
    settings = CoreSettings(database_url=url, redis_url=redis_db, fair_share_steps=steps)
    with (
        served_api(settings) as api,
        client_of(api, new_tenant(settings, "big")) as big,
        client_of(api, new_tenant(settings, "small")) as small,
    ):
        return _race(tmp_path, url, redis_db, big, small)


def _race(
    tmp_path: Path, url: str, redis_db: str, big: CaptionClient, small: CaptionClient
) -> tuple[int, float, float]:
    job = {"image": png(), "styles": ["minimal"], "platforms": ["x"], "variants": 1}
    flood_ids = [accepted.id for accepted in big.submit_bulk([job] * FLOOD)]
    small_id = small.submit(**job).id
    worker = start(
        "all",
        env={
            "DATABASE_URL": url,
            "REDIS_URL": redis_db,
            "CAPTIONER_MODEL": "captionq/noop",
            "BATCH_SIZE": "4",
        },
        logdir=tmp_path,
    )
    try:
        finished = {job_id: big.wait(job_id, timeout_s=120) for job_id in flood_ids}
        mine = small.wait(small_id, timeout_s=120)
    finally:
        worker.stop()
    order = sorted([*finished.values(), mine], key=lambda j: j.finished_at)
    latencies = sorted((j.finished_at - j.created_at).total_seconds() for j in finished.values())
    rank = [j.id for j in order].index(small_id)
    return (
        rank,
        (mine.finished_at - mine.created_at).total_seconds(),
        latencies[len(latencies) // 2],
    )


def test_a_small_tenant_is_served_before_a_large_tenants_backlog(
    tmp_path_factory: pytest.TempPathFactory, redis_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    fair_rank, fair_small, fair_median = rank_of_small_tenant(
        tmp_path_factory.mktemp("fair"), redis_db, steps=[16, 32, 64, 96]
    )
    fifo_rank, fifo_small, fifo_median = rank_of_small_tenant(
        tmp_path_factory.mktemp("fifo"), redis_db, steps=[]
    )
    with capsys.disabled():
        print(  # noqa: T201
            f"\nfairness, {FLOOD}-job flood then 1 small job:"
            f" fair-share rank {fair_rank} (latency {fair_small:.2f} s, flood median"
            f" {fair_median:.2f} s); FIFO rank {fifo_rank} (latency {fifo_small:.2f} s)"
        )
    assert fifo_rank >= FLOOD - 10  # without fair share the small job waits for the flood
    assert fair_rank <= 16 + 3 * 8  # served once the flood's first step is used up


def test_an_urgent_job_overtakes_a_queued_backlog(
    tmp_path_factory: pytest.TempPathFactory, redis_db: str
) -> None:
    folder = tmp_path_factory.mktemp("priority")
    url = f"sqlite:///{folder / 'priority.db'}"
    migrate(url)
    settings = CoreSettings(database_url=url, redis_url=redis_db, fair_share_steps=[])
    with served_api(settings) as api, client_of(api, new_tenant(settings, "one")) as client:
        job = {"image": png(), "styles": ["minimal"], "platforms": ["x"], "variants": 1}
        backlog = [a.id for a in client.submit_bulk([{**job, "priority": 1}] * 60)]
        urgent = client.submit(**job, priority=9).id
        order = _drain(folder, url, redis_db, client, [*backlog, urgent])
    assert order.index(urgent) < 12  # within the first prefetch window, not 61st


def _drain(
    folder: Path, url: str, redis_db: str, client: CaptionClient, ids: list[str]
) -> list[str]:
    """Start one worker on the queued jobs; their ids in the order they finished."""
    worker = start(
        "all",
        env={"DATABASE_URL": url, "REDIS_URL": redis_db, "CAPTIONER_MODEL": "captionq/noop",
             "BATCH_SIZE": "4"},
        logdir=folder,
    )  # fmt: skip
    try:
        done = [client.wait(job_id, timeout_s=120) for job_id in ids]
    finally:
        worker.stop()
    return [j.id for j in sorted(done, key=lambda j: j.finished_at)]
