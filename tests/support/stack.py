"""One tenant over one database and Redis: the API served on loopback, the tenant's
HTTP SDK client (a key with every scope), its callback receiver, and the worker
processes a test starts for it; ``stop()`` ends everything it started."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from producers.api import create_app
from producers.api.serve import Served
from producers.client import CaptionClient
from producers.direct import DirectProducer
from schemas.settings import ApiSettings, CoreSettings
from tests.support.api import client_of, new_tenant
from tests.support.processes import Proc, start
from tests.support.receivers import Receiver

TENANT = "acme"


@dataclass
class Stack:
    settings: ApiSettings
    client: CaptionClient
    tenant_id: str
    api_key: str  # every scope
    api: Served
    receiver: Receiver
    env: dict[str, str]  # every process's settings, over this process's environment
    logdir: Path
    procs: dict[str, Proc] = field(default_factory=dict)

    @classmethod
    def open(
        cls, settings: CoreSettings, *, env: dict[str, str], logdir: Path, **extra: Any
    ) -> Self:
        """The tenant (created), the API, the tenant's client and a receiver that knows
        its webhook secret; ``env`` adds to the database, Redis and blob store that the
        processes share."""
        api_settings = ApiSettings(**settings.model_dump())
        tenant = new_tenant(settings, TENANT)
        api = Served(create_app(api_settings))
        client = client_of(api, tenant)
        receiver = Receiver(secret=tenant.webhook_secret)
        shared = {
            "DATABASE_URL": settings.database_url,
            "REDIS_URL": settings.redis_url,
            "BLOB_STORE": settings.blob_store,
        }
        return cls(
            api_settings,
            client,
            tenant.tenant_id,
            tenant.key,
            api,
            receiver,
            {**shared, **env},
            logdir,
            **extra,
        )

    def direct(self) -> DirectProducer:
        """The in-cluster producer for this tenant (same admission as the API): for the
        fault harness, which submits while it breaks the services the API needs."""
        return DirectProducer(tenant=TENANT, settings=self.settings)

    @property
    def database_url(self) -> str:
        return self.settings.database_url

    def start(self, kind: str, **overrides: str) -> Proc:
        """A worker of a kind in ``tests.support.processes.POOLS``, or ``beat``."""
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
        self.client.close()
        self.api.stop()
        self.receiver.stop()
