"""Webhook endpoints: where a tenant receives callbacks, with secrets encrypted at rest.

An endpoint is (tenant, URL, secret, event types). A job's ``callback_url`` is one of
its tenant's endpoints, or becomes one on first use (signed with the tenant's secret,
so receivers set up before endpoints existed keep verifying). Secrets rotate: the old
one keeps signing, next to the new one, until its grace period ends.

Secrets are stored as Fernet tokens under ``WEBHOOK_SECRETS_KEY``; without that
setting a key file is created under the default home (one-host development only).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from schemas.api import EVENT_TYPES
from schemas.errors import ErrorCode, RequestError
from schemas.store.secrets import decrypt, encrypt, new_webhook_secret
from schemas.store.tenants import owned_row
from schemas.tables import Tenant, WebhookEndpoint, utcnow


def signing_secrets(endpoint: WebhookEndpoint, *, key: str | None) -> list[str]:
    """The secrets that sign a callback now: the current one, and the previous one
    while its grace period lasts."""
    secrets = [decrypt(endpoint.secret_encrypted, key=key)]
    expires = endpoint.previous_secret_expires_at
    if endpoint.previous_secret_encrypted and expires is not None and expires > utcnow():
        secrets.append(decrypt(endpoint.previous_secret_encrypted, key=key))
    return secrets


def _check_events(event_types: Sequence[str]) -> list[str]:
    unknown = sorted(set(event_types) - set(EVENT_TYPES))
    if unknown:
        raise RequestError(
            f"unknown event type(s) {unknown}; known: {list(EVENT_TYPES)}",
            code=ErrorCode.invalid_request,
        )
    return list(dict.fromkeys(event_types)) or list(EVENT_TYPES)


def create_endpoint(
    *,
    session: Session,
    tenant_id: str,
    url: str,
    key: str | None,
    event_types: Sequence[str] = (),
    secret: str | None = None,
) -> tuple[WebhookEndpoint, str]:
    """Register ``url`` for the tenant; returns the endpoint and its plaintext secret.

    The caller checks the URL (``schemas.checks.urls.check_url``) first."""
    if find_endpoint(session=session, tenant_id=tenant_id, url=url) is not None:
        raise RequestError(
            "this URL is already an endpoint of the tenant", code=ErrorCode.endpoint_exists
        )
    secret = secret or new_webhook_secret()
    endpoint = WebhookEndpoint(
        tenant_id=tenant_id,
        url=url,
        secret_encrypted=encrypt(secret, key=key),
        event_types=_check_events(event_types),
    )
    session.add(endpoint)
    session.flush()
    return endpoint, secret


def find_endpoint(*, session: Session, tenant_id: str, url: str) -> WebhookEndpoint | None:
    query = select(WebhookEndpoint).where(
        WebhookEndpoint.tenant_id == tenant_id, WebhookEndpoint.url == url
    )
    return session.exec(query).first()


def ensure_endpoint(
    *, session: Session, tenant_id: str, url: str, key: str | None
) -> WebhookEndpoint:
    """The tenant's endpoint for ``url``, registered on first use with the tenant's secret."""
    found = find_endpoint(session=session, tenant_id=tenant_id, url=url)
    if found is not None:
        return found
    tenant = session.get(Tenant, tenant_id)
    assert tenant is not None, f"no tenant {tenant_id}"
    try:
        with session.begin_nested():
            endpoint, _ = create_endpoint(
                session=session,
                tenant_id=tenant_id,
                url=url,
                key=key,
                secret=decrypt(tenant.webhook_secret_encrypted, key=key),
            )
    except (IntegrityError, RequestError):  # registered concurrently by another sender
        found = find_endpoint(session=session, tenant_id=tenant_id, url=url)
        if found is None:
            raise
        return found
    return endpoint


def get_endpoint(*, session: Session, tenant_id: str, endpoint_id: str) -> WebhookEndpoint:
    """The tenant's endpoint; ``not_found`` if it has none with that id."""
    return owned_row(
        session=session,
        table=WebhookEndpoint,
        row_id=endpoint_id,
        tenant_id=tenant_id,
        what="endpoint",
    )


def list_endpoints(*, session: Session, tenant_id: str) -> list[WebhookEndpoint]:
    query = (
        select(WebhookEndpoint)
        .where(WebhookEndpoint.tenant_id == tenant_id)
        .order_by(col(WebhookEndpoint.created_at))
    )
    return list(session.exec(query).all())


def rotate_secret(
    *, session: Session, endpoint: WebhookEndpoint, key: str | None, grace_s: float
) -> str:
    """A new secret; the old one keeps signing for ``grace_s``. Returns the new plaintext."""
    secret = new_webhook_secret()
    endpoint.previous_secret_encrypted = endpoint.secret_encrypted
    endpoint.previous_secret_expires_at = utcnow() + timedelta(seconds=grace_s)
    endpoint.secret_encrypted = encrypt(secret, key=key)
    endpoint.updated_at = utcnow()
    session.add(endpoint)
    session.flush()
    return secret


def set_enabled(
    *, session: Session, endpoint: WebhookEndpoint, enabled: bool, reason: str | None = None
) -> None:
    now: datetime | None = None if enabled else utcnow()
    endpoint.disabled_at = now
    endpoint.disabled_reason = None if enabled else (reason or "disabled by the tenant")
    endpoint.updated_at = utcnow()
    session.add(endpoint)
    session.flush()


def delete_endpoint(*, session: Session, endpoint: WebhookEndpoint) -> None:
    session.delete(endpoint)
    session.flush()


