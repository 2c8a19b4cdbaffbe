"""One tenant over one database and Redis: its client, its callback receiver, and the
worker processes a test starts for it; ``stop()`` ends everything it started."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from producers.client import CaptionClient
from schemas.settings import CoreSettings
from schemas.store.sessions import session_scope
from schemas.store.tenants import webhook_secret
from schemas.tables import Tenant
from tests.support.processes import Proc, start
from tests.support.receivers import Receiver

TENANT = "acme"


@dataclass
class Stack:
    settings: CoreSettings
    client: CaptionClient
    receiver: Receiver
    env: dict[str, str]  # every process's settings, over this process's environment
    logdir: Path
    procs: dict[str, Proc] = field(default_factory=dict)

    @classmethod
    def open(
        cls, settings: CoreSettings, *, env: dict[str, str], logdir: Path, **extra: Any
    ) -> Self:
        """The tenant (created), its client and a receiver that knows its webhook secret;
        ``env`` adds to the database, Redis and blob store that the processes share."""
        client = CaptionClient(tenant=TENANT, settings=settings)
        with session_scope(settings.database_url) as session:
            tenant = session.get(Tenant, client.tenant_id)
            assert tenant is not None
            secret = webhook_secret(tenant, key=settings.webhook_secrets_key)
        shared = {
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "BLOB_STORE": settings.blob_store,
        }
        receiver = Receiver(secret=secret)
        return cls(settings, client, receiver, {**shared, **env}, logdir, **extra)

    @property
    def database_url(self) -> str:
        return self.settings.database_url

    def start(self, kind: str, **overrides: str) -> Proc:
        """A ``gpu``, ``io``, ``gpu+io`` worker or ``beat`` (``tests.support.processes``)."""
        proc = start(kind, env={**self.env, **overrides}, logdir=self.logdir)
        self.procs[proc.name] = proc
        return proc

    def logged(self, text: str) -> bool:
        return any(text in p.output() for p in self.procs.values())

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.output()[-2500:]}" for p in self.procs.values())

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()
        self.receiver.stop()
