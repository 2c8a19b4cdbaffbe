"""One world for the operations tests: PostgreSQL, Redis, the API as a real process, a
worker (tiny BLIP) exporting its metrics, and Debian's real Prometheus scraping both."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from schemas.settings import CoreSettings
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_api_key, tenant_by_name
from tests.support.images import png
from tests.support.processes import Proc, start_api
from tests.support.prometheus import Prometheus, free_port
from tests.support.services import LOOPBACK, LOOPBACK_ENV
from tests.support.stack import TENANT, Stack

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


@dataclass
class World:
    stack: Stack
    api: Proc
    api_url: str
    key: str
    worker: Proc
    prometheus: Prometheus

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
        **LOOPBACK_ENV,
    }
    logdir = tmp_path_factory.mktemp("ops")
    env["HEARTBEAT_FILE"] = str(logdir / "heartbeat")
    stack = Stack.open(settings, env=env, logdir=logdir)
    with session_scope(postgres_url) as session:
        tenant = tenant_by_name(session=session, name=TENANT)
        assert tenant is not None
        key = create_api_key(session=session, tenant=tenant)[1]
    api_port, worker_port, beat_port = free_port(), free_port(), free_port()
    api = start_api(env=stack.env, logdir=logdir, port=api_port)
    stack.procs[api.name] = api
    prometheus: Prometheus | None = None
    try:
        worker = stack.start("gpu+io", METRICS_PORT=str(worker_port))
        stack.start("beat", METRICS_PORT=str(beat_port))
        targets = {"api": api_port, "worker": worker_port, "beat": beat_port}
        prometheus = Prometheus.start(
            {name: f"127.0.0.1:{port}" for name, port in targets.items()},
            tmp_path_factory.mktemp("prometheus"),
            rule_files=(DEPLOY / "prometheus" / "recording-rules.yaml",),
        )
        yield World(stack, api, f"http://127.0.0.1:{api_port}", key, worker, prometheus)
    finally:
        if prometheus is not None:
            prometheus.stop()
        stack.stop()
