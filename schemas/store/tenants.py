"""Tenants, their API keys, and the rows each one owns.

A key reads ``cq_<prefix>_<secret>``: the prefix is visible and indexed, the
whole key is stored as a SHA-256 (keys are 256-bit random, so a fast hash is
enough) and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Protocol, TypeVar

from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from schemas.errors import ErrorCode, RequestError
from schemas.store.secrets import decrypt, encrypt, new_webhook_secret
from schemas.tables import ApiKey, Tenant, utcnow

SCOPES = ("submit", "read", "review", "admin")
# How stale a key's "last used" may be: authentication writes it at most this often.
LAST_USED_PRECISION = timedelta(minutes=1)


class _Owned(Protocol):
    tenant_id: str


OwnedRow = TypeVar("OwnedRow", bound=_Owned)


def create_tenant(*, session: Session, name: str, key: str | None = None) -> Tenant:
    """A tenant with a fresh webhook secret, stored encrypted under ``key``
    (``WEBHOOK_SECRETS_KEY``); read it back with :func:`webhook_secret`. A name that is
    taken is refused (``tenant_exists``)."""
    if tenant_by_name(session=session, name=name) is not None:
        raise RequestError(f"a tenant named {name!r} exists", code=ErrorCode.tenant_exists)
    tenant = Tenant(name=name, webhook_secret_encrypted=encrypt(new_webhook_secret(), key=key))
    session.add(tenant)
    session.flush()
    return tenant


def webhook_secret(tenant: Tenant, *, key: str | None = None) -> str:
    """The tenant's default signing secret (``whsec_...``), decrypted."""
    return decrypt(tenant.webhook_secret_encrypted, key=key)


def tenant_by_name(*, session: Session, name: str) -> Tenant | None:
    return session.exec(select(Tenant).where(Tenant.name == name)).first()


def ensure_tenant(*, session: Session, name: str, key: str | None = None) -> Tenant:
    found = tenant_by_name(session=session, name=name)
    return found or create_tenant(session=session, name=name, key=key)


def _hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_api_key(
    *, session: Session, tenant: Tenant, scopes: Iterable[str] = ("submit", "read")
) -> tuple[ApiKey, str]:
    """Create a key; the plaintext is returned once and never stored."""
    scopes = tuple(scopes)
    unknown = set(scopes) - set(SCOPES)
    if unknown:
        raise ValueError(f"unknown scope(s) {sorted(unknown)}; known: {list(SCOPES)}")
    prefix = secrets.token_hex(6)
    plaintext = f"cq_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        tenant_id=tenant.id, prefix=prefix, key_hash=_hash(plaintext), scopes=",".join(scopes)
    )
    session.add(key)
    session.flush()
    return key, plaintext


def authenticate(*, session: Session, presented: str) -> tuple[Tenant, ApiKey] | None:
    """The tenant and key for ``presented``, or None (unknown, revoked, expired, malformed).
    Only reads: a read-only session will do (:func:`record_use` writes the key's use)."""
    parts = presented.split("_", 2)
    if len(parts) != 3 or parts[0] != "cq":
        return None
    key = session.exec(select(ApiKey).where(ApiKey.prefix == parts[1])).first()
    if key is None or not hmac.compare_digest(key.key_hash, _hash(presented)):
        return None
    now = utcnow()
    if key.revoked_at is not None or (key.expires_at is not None and key.expires_at <= now):
        return None
    tenant = session.get(Tenant, key.tenant_id)
    if tenant is None:
        return None
    return tenant, key


def use_unrecorded(key: ApiKey) -> bool:
    """Whether ``key``'s last use, as read, is older than ``LAST_USED_PRECISION``: a
    use to record (:func:`record_use`)."""
    return key.last_used_at is None or key.last_used_at < utcnow() - LAST_USED_PRECISION


def record_use(*, session: Session, key_id: str) -> None:
    """Record a key's use now, if its last use is older than ``LAST_USED_PRECISION``:
    at most one write per key per minute, however many requests race to record it."""
    now = utcnow()
    table = ApiKey.__table__  # type: ignore[attr-defined]
    session.connection().execute(
        update(table)
        .where(
            table.c.id == key_id,
            or_(table.c.last_used_at.is_(None), table.c.last_used_at < now - LAST_USED_PRECISION),
        )
        .values(last_used_at=now)
    )


def has_scope(key: ApiKey, scope: str) -> bool:
    granted = set(key.scopes.split(","))
    return scope in granted or "admin" in granted


def owned_row(
    *, session: Session, table: type[OwnedRow], row_id: str, tenant_id: str | None, what: str
) -> OwnedRow:
    """The ``table`` row ``row_id`` if the tenant owns it (any tenant's for ``tenant_id``
    None: operators); ``not_found`` otherwise, as if another tenant's did not exist."""
    row = session.get(table, row_id)
    if row is None or (tenant_id is not None and row.tenant_id != tenant_id):
        raise RequestError(f"no {what} {row_id}", code=ErrorCode.not_found)
    return row


def list_api_keys(*, session: Session, tenant_id: str) -> list[ApiKey]:
    """The tenant's keys, oldest first (revoked and expired ones included)."""
    query = select(ApiKey).where(ApiKey.tenant_id == tenant_id).order_by(col(ApiKey.created_at))
    return list(session.exec(query).all())


def get_api_key(*, session: Session, tenant_id: str, prefix: str) -> ApiKey:
    """One of the tenant's keys by its visible prefix (``cq_<prefix>_...``)."""
    key = session.exec(
        select(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.prefix == prefix)
    ).first()
    if key is None:
        raise RequestError(f"no key with prefix {prefix!r}", code=ErrorCode.not_found)
    return key


def revoke_api_key(*, session: Session, key: ApiKey) -> ApiKey:
    """Revoke ``key`` now; revoking a revoked key changes nothing."""
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        session.add(key)
        session.flush()
    return key


def set_key_expiry(*, session: Session, key: ApiKey, expires_at: datetime | None) -> ApiKey:
    """Set (or, with None, remove) when ``key`` stops working."""
    key.expires_at = expires_at
    session.add(key)
    session.flush()
    return key


def key_state(key: ApiKey, *, now: datetime) -> str:
    if key.revoked_at is not None:
        return "revoked"
    if key.expires_at is not None and key.expires_at <= now:
        return "expired"
    return "active"
