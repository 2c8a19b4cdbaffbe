"""/v1/keys: the calling tenant's API keys (create, list, revoke, expiry); ``admin`` scope."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, status

from producers.api.deps import ReadSessionDep, SessionDep, require
from schemas.accounts import KeyCreate, KeyCreated, KeyExpiry, KeyPublic
from schemas.store import tenants
from schemas.tables import ApiKey, Tenant, utcnow

router = APIRouter(prefix="/v1/keys", tags=["keys"])
AdminTenant = Annotated[Tenant, Depends(require("admin"))]


def owned_key(prefix: str, tenant: AdminTenant, session: SessionDep) -> ApiKey:
    """The tenant's key with this prefix; 404 (another tenant's, or none) before the body
    is even read."""
    return tenants.get_api_key(session=session, tenant_id=tenant.id, prefix=prefix)


OwnedKey = Annotated[ApiKey, Depends(owned_key)]


def _public(key: ApiKey) -> KeyPublic:
    return KeyPublic(
        prefix=key.prefix,
        scopes=key.scopes.split(","),
        state=tenants.key_state(key, now=utcnow()),  # type: ignore[arg-type]
        created_at=key.created_at,
        expires_at=key.expires_at,
        revoked_at=key.revoked_at,
        last_used_at=key.last_used_at,
    )


@router.post("", status_code=status.HTTP_201_CREATED, response_model=KeyCreated)
def create_key(body: KeyCreate, tenant: AdminTenant, session: SessionDep) -> KeyCreated:
    """A new key for the tenant; the key itself is in this answer only."""
    key, plaintext = tenants.create_api_key(
        session=session, tenant=tenant, scopes=dict.fromkeys(body.scopes)
    )
    if body.expires_at is not None:
        tenants.set_key_expiry(session=session, key=key, expires_at=body.expires_at)
    return KeyCreated(**_public(key).model_dump(), key=plaintext)


@router.get("", response_model=list[KeyPublic])
def list_keys(tenant: AdminTenant, session: ReadSessionDep) -> list[KeyPublic]:
    """Every key of the tenant, oldest first, revoked and expired ones included."""
    return [_public(k) for k in tenants.list_api_keys(session=session, tenant_id=tenant.id)]


@router.post("/{prefix}/revoke", response_model=KeyPublic)
def revoke_key(key: OwnedKey, session: SessionDep) -> KeyPublic:
    """Revoke a key now (revoking a revoked key changes nothing)."""
    return _public(tenants.revoke_api_key(session=session, key=key))


@router.put("/{prefix}/expiry", response_model=KeyPublic)
def set_expiry(key: OwnedKey, body: KeyExpiry, session: SessionDep) -> KeyPublic:
    """Set when a key stops working (``null``: never)."""
    return _public(tenants.set_key_expiry(session=session, key=key, expires_at=body.expires_at))
