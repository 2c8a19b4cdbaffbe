"""One world for the operations tests: PostgreSQL, Redis, the API and the review desk as
real processes, a worker (tiny BLIP) and beat exporting their metrics, and Debian's real
Prometheus scraping them all."""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from schemas.settings import CoreSettings
from schemas.store.reviewers import create_reviewer
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_api_key, tenant_by_name
from tests.support.images import png
from tests.support.processes import Proc, launch, start_api
from tests.support.prometheus import Prometheus, free_port
from tests.support.services import LOOPBACK, LOOPBACK_ENV
from tests.support.stack import TENANT, Stack

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
REVIEWER = ("rita@shop.example", "correct horse battery")
REQUEST_MAX_BYTES = 1 << 20


@dataclass
class World:
    stack: Stack
    api: Proc
    api_url: str
    key: str
    worker: Proc
    prometheus: Prometheus
    review_url: str

    def submit(self, count: int, **fields: object) -> list[str]:
        """Submit ``count`` jobs over HTTP; their ids."""
        jobs = [
            {
                "image_base64": base64.b64encode(png((i * 40 % 255, 90, 160))).decode(),
                "styles": ["playful"],
                "platforms": ["instagram"],
                "variants": 1,
                "callback_url": self.stack.receiver.url,
                **fields,
            }
            for i in range(count)
        ]
        answer = httpx.post(
            f"{self.api_url}/v1/jobs/bulk",
            json={"jobs": jobs},
            headers={"authorization": f"Bearer {self.key}"},
            timeout=30,
        )
        assert answer.status_code in (200, 202, 207), answer.text
        return [row["job"]["id"] for row in answer.json()["jobs"] if row.get("job")]


def start_review(*, env: dict[str, str], logdir: Path, port: int) -> Proc:
    """The review desk (``captionq review``) on ``port``; ready once ``/healthz`` answers."""

    def ready(_: Proc) -> bool:
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    argv = [sys.executable, "-m", "producers.cli", "review", "--port", str(port)]
    return launch(f"review-{port}", argv, env=env, logdir=logdir, ready=ready)


@pytest.fixture(scope="module")
def world(
    postgres_url: str, redis_db: str, tiny_blip: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    settings = CoreSettings(
        database_url=postgres_url, redis_url=redis_db, blob_store="db", **LOOPBACK
    )
    env = {
        "CAPTIONER_MODEL": str(tiny_blip),
        "MAX_NEW_TOKENS": "8",
        "HF_HUB_OFFLINE": "1",
        "HEARTBEAT_INTERVAL_S": "1",
        "LOG_FORMAT": "json",
        "REAPER_INTERVAL_S": "1",
        "REQUEST_MAX_BYTES": str(REQUEST_MAX_BYTES),
        **LOOPBACK_ENV,
    }
    logdir = tmp_path_factory.mktemp("ops")
    env["HEARTBEAT_FILE"] = str(logdir / "heartbeat")
    stack = Stack.open(settings, env=env, logdir=logdir)
    with session_scope(postgres_url) as session:
        tenant = tenant_by_name(session=session, name=TENANT)
        assert tenant is not None
        key = create_api_key(session=session, tenant=tenant)[1]
        create_reviewer(session=session, email=REVIEWER[0], password=REVIEWER[1], tenants=[tenant])
    api_port, worker_port, beat_port = free_port(), free_port(), free_port()
    review_port = free_port()
    api = start_api(env=stack.env, logdir=logdir, port=api_port)
    stack.procs[api.name] = api
    prometheus: Prometheus | None = None
    try:
        worker = stack.start("all", METRICS_PORT=str(worker_port))
        stack.start("beat", METRICS_PORT=str(beat_port))
        review = start_review(env=stack.env, logdir=logdir, port=review_port)
        stack.procs[review.name] = review
        targets = {"api": api_port, "worker": worker_port, "beat": beat_port, "review": review_port}
        prometheus = Prometheus.start(
            {name: f"127.0.0.1:{port}" for name, port in targets.items()},
            tmp_path_factory.mktemp("prometheus"),
            rule_files=(DEPLOY / "prometheus" / "recording-rules.yaml",),
        )
        yield World(
            stack, api, f"http://127.0.0.1:{api_port}", key, worker, prometheus,
            f"http://127.0.0.1:{review_port}",
        )  # fmt: skip
    finally:
        if prometheus is not None:
            prometheus.stop()
        stack.stop()
