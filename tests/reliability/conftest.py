"""Per-test stacks under fault (tests/reliability/scenarios.py), on each database kind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from schemas.settings import CoreSettings
from tests.reliability.scenarios import TIMINGS, FaultStack, slow_png
from tests.support.servers import LoopbackServer
from tests.support.services import (
    LOOPBACK,
    LOOPBACK_ENV,
    SECRETS_KEY,
    migrated_database,
    start_redis,
)


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
        **LOOPBACK,  # the image server and the receiver
        webhook_secrets_key=SECRETS_KEY,  # the workers' key too
    )
    env = {
        "CAPTIONER_MODEL": "captionq/noop",
        "HF_HUB_OFFLINE": "1",
        **LOOPBACK_ENV,
        "WEBHOOK_SECRETS_KEY": SECRETS_KEY,
        **TIMINGS,
    }
    built = FaultStack.open(settings, env=env, logdir=tmp_path, redis=redis, images=images)
    try:
        yield built
    finally:
        built.stop()
