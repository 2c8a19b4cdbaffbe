"""Per-test stacks: own redis-server, own database, GPU worker, IO worker, beat, receiver."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from producers.client import CaptionClient
from producers.demo import RedisServer
from schemas.settings import CoreSettings
from schemas.store.sessions import migrate, session_scope
from schemas.store.tenants import webhook_secret
from schemas.tables import Tenant
from tests.conftest import _postgres_database, unavailable
from tests.reliability.harness import (
    SECRETS_KEY,
    Proc,
    Receiver,
    SlowImages,
    png,
    start,
    worker_env,
)

STYLES = ["playful"]
PLATFORMS = ["instagram"]
VARIANTS = 2
SLOTS = len(STYLES) * len(PLATFORMS) * VARIANTS


@dataclass
class Stack:
    database_url: str
    redis: RedisServer
    env: dict[str, str]
    logdir: Path
    client: CaptionClient
    receiver: Receiver
    images: SlowImages
    procs: dict[str, Proc] = field(default_factory=dict)

    def start(self, kind: str, **overrides: str) -> Proc:
        proc = start(kind, {**self.env, **overrides}, self.logdir)
        self.procs[proc.name] = proc
        return proc

    def submit(self, n: int, *, slow: bool = True) -> list[str]:
        return self.client.submit_many(
            [
                {
                    "image": self.images.url(i) if slow else png(i),
                    "styles": STYLES,
                    "platforms": PLATFORMS,
                    "variants": VARIANTS,
                    "callback_url": self.receiver.url,
                }
                for i in range(n)
            ]
        )

    def logged(self, text: str) -> bool:
        return any(text in p.output() for p in self.procs.values())

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-2500:]}" for p in self.procs.values())


@pytest.fixture(params=["postgresql", "sqlite"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'captionq.db'}"
        migrate(url)
        yield url
        return
    for url in _postgres_database():
        migrate(url)
        yield url


@pytest.fixture
def stack(database_url: str, tmp_path: Path) -> Iterator[Stack]:
    try:
        redis = RedisServer.start()
    except RuntimeError as exc:
        unavailable(str(exc))
    images = SlowImages(delay_s=0.25)
    settings = CoreSettings(
        database_url=database_url,
        redis_url=redis.url,
        blob_store="db",
        url_allow_cidrs=["127.0.0.0/8"],
        url_allowed_ports=[images.port],
        webhook_secrets_key=SECRETS_KEY,  # the workers' key (harness.worker_env)
    )
    client = CaptionClient(tenant="acme", settings=settings)
    with session_scope(database_url) as session:
        tenant = session.get(Tenant, client.tenant_id)
        assert tenant is not None
        secret = webhook_secret(tenant, key=SECRETS_KEY)
    receiver = Receiver(secret=secret)
    env = worker_env(
        DATABASE_URL=database_url,
        REDIS_URL=redis.url,
        URL_ALLOWED_PORTS=f"[{images.port}]",
    )
    built = Stack(database_url, redis, env, tmp_path, client, receiver, images)
    try:
        yield built
    finally:
        for proc in built.procs.values():
            proc.stop()
        receiver.stop()
        images.stop()
        redis.stop()
