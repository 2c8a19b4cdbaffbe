"""The API as integrators meet it: served on loopback, and a tenant's HTTP SDK client."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from producers.api import create_app
from producers.api.serve import Served
from producers.client import CaptionClient
from schemas.settings import ApiSettings, CoreSettings
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_api_key, ensure_tenant, webhook_secret

EVERY_SCOPE = ("submit", "read", "review", "admin")


@dataclass(frozen=True)
class TenantKey:
    tenant_id: str
    key: str
    webhook_secret: str


def new_tenant(
    settings: CoreSettings, name: str, *, scopes: Sequence[str] = EVERY_SCOPE
) -> TenantKey:
    """The tenant ``name`` (created unless a test made it already, as ``captionq tenant
    create`` does) and a new API key of it."""
    with session_scope(settings.database_url) as session:
        tenant = ensure_tenant(session=session, name=name, key=settings.webhook_secrets_key)
        key = create_api_key(session=session, tenant=tenant, scopes=scopes)[1]
        secret = webhook_secret(tenant, key=settings.webhook_secrets_key)
        return TenantKey(tenant.id, key, secret)


@contextmanager
def served_api(settings: CoreSettings) -> Iterator[Served]:
    """The API on the same database and Redis as ``settings`` (its other fields too)."""
    api = Served(create_app(ApiSettings(**settings.model_dump())))
    try:
        yield api
    finally:
        api.stop()


def client_of(api: Served, tenant: TenantKey, **options: float) -> CaptionClient:
    return CaptionClient(api.url, api_key=tenant.key, **options)  # type: ignore[arg-type]
