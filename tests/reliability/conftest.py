"""Per-test stacks under fault (tests/reliability/scenarios.py), on each database kind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.settings import CoreSettings
from tests.reliability.scenarios import TIMINGS, FaultStack, slow_png
from tests.support.servers import LoopbackServer
from tests.support.services import SECRETS_KEY, migrated_database, start_redis


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield from migrated_database(request.param, tmp_path)


@pytest.fixture
def stack(database_url: str, tmp_path: Path) -> Iterator[FaultStack]:
    redis = start_redis()
    images = LoopbackServer(fallback=slow_png)
    settings = CoreSettings(
        database_url=database_url,
        redis_url=redis.url,
        blob_store="db",
        url_allow_cidrs=["127.0.0.0/8"],
        url_allowed_ports=[images.port],
        webhook_secrets_key=SECRETS_KEY,  # the workers' key too
    )
    env = {
        "CAPTIONER_MODEL": "captionq/noop",
        "HF_HUB_OFFLINE": "1",
        "URL_ALLOW_CIDRS": '["127.0.0.0/8"]',
        "URL_ALLOWED_PORTS": f"[{images.port}]",
        "WEBHOOK_SECRETS_KEY": SECRETS_KEY,
        **TIMINGS,
    }
    built = FaultStack.open(settings, env=env, logdir=tmp_path, redis=redis, images=images)
    try:
        yield built
    finally:
        built.stop()
