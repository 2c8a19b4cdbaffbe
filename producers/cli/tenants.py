"""``captionq tenant``: tenants, their API keys (create, list, revoke, expiry) and policy.

Only ``tenant create`` creates a tenant: every other command that names one which does
not exist says so (``not_found``).
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from producers.cli.errors import fail
from producers.cli.output import JsonOpt, as_json, emit, group
from schemas.errors import ErrorCode

if TYPE_CHECKING:
    from sqlmodel import Session

    from schemas.tables import ApiKey, Tenant

app = group("Tenants, their API keys and copy policy.")
keys_app = group("A tenant's API keys.")
app.add_typer(keys_app, name="keys")
TenantOpt = Annotated[str, typer.Option(help="Tenant name")]


def require_tenant(name: str, *, session: Session | None = None) -> Tenant:
    """The tenant named ``name``, or a ``not_found`` error that says how to create it."""
    from schemas.settings import core_settings
    from schemas.store.sessions import read_scope
    from schemas.store.tenants import tenant_by_name

    if session is None:
        with read_scope(core_settings().database_url) as reading:
            return require_tenant(name, session=reading)
    tenant = tenant_by_name(session=session, name=name)
    if tenant is None:
        fail(
            f"no tenant {name!r}",
            code=ErrorCode.not_found,
            hint=f"create it with: captionq tenant create {name}",
        )
    return tenant


@app.command("create")
def create(name: str) -> None:
    """Create a tenant; prints its id and webhook secret (JSON)."""
    from schemas.settings import core_settings
    from schemas.store.sessions import session_scope
    from schemas.store.tenants import create_tenant, webhook_secret

    settings = core_settings()
    with session_scope(settings.database_url) as session:
        tenant = create_tenant(session=session, name=name, key=settings.webhook_secrets_key)
        secret = webhook_secret(tenant, key=settings.webhook_secrets_key)
        typer.echo(json.dumps({"id": tenant.id, "name": tenant.name, "webhook_secret": secret}))


@app.command("key")
def key(
    name: str,
    scope: Annotated[
        list[str] | None, typer.Option(help="submit, read, review or admin (repeatable)")
    ] = None,
    expires_in_days: Annotated[
        float | None, typer.Option(min=0, help="Stop working after this many days")
    ] = None,
    save: Annotated[
        bool, typer.Option("--save", help="Also keep it for this machine's commands (--tenant)")
    ] = False,
) -> None:
    """Create an API key (default scopes: submit, read); printed once, stored hashed."""
    from schemas.settings import core_settings
    from schemas.store.sessions import session_scope
    from schemas.store.tenants import create_api_key, set_key_expiry

    with session_scope(core_settings().database_url) as session:
        tenant = require_tenant(name, session=session)
        try:
            created, plaintext = create_api_key(
                session=session, tenant=tenant, scopes=scope or ("submit", "read")
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--scope") from exc
        if expires_in_days is not None:
            set_key_expiry(session=session, key=created, expires_at=_in_days(expires_in_days))
        if save:
            from producers.cli.remote import save_key

            save_key(name, plaintext)
        typer.echo(
            json.dumps(
                {
                    "key": plaintext,
                    "prefix": created.prefix,
                    "scopes": created.scopes,
                    "expires_at": _iso(created.expires_at),
                }
            )
        )


@keys_app.command("list")
def keys_list(name: str, json_out: JsonOpt = False) -> None:
    """The tenant's keys: prefix, scopes, state, created, expires, last used."""
    from schemas.settings import core_settings
    from schemas.store.sessions import read_scope
    from schemas.store.tenants import list_api_keys

    with read_scope(core_settings().database_url) as session:
        tenant = require_tenant(name, session=session)
        rows = [_key_row(k) for k in list_api_keys(session=session, tenant_id=tenant.id)]
    columns = ["prefix", "scopes", "state", "created_at", "expires_at", "last_used_at"]
    emit(rows, columns=columns, json_out=json_out, empty="no keys")


@keys_app.command("revoke")
def keys_revoke(name: str, prefix: str, json_out: JsonOpt = False) -> None:
    """Revoke a key (by its prefix) now."""
    from schemas.store.tenants import revoke_api_key

    _change_key(name, prefix, json_out, lambda session, k: revoke_api_key(session=session, key=k))


@keys_app.command("expire")
def keys_expire(
    name: str,
    prefix: str,
    in_days: Annotated[float | None, typer.Option(min=0, help="From now")] = None,
    never: Annotated[bool, typer.Option("--never", help="Remove the expiry")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Set or change when a key stops working (--in-days or --never)."""
    from schemas.store.tenants import set_key_expiry

    if never == (in_days is not None):
        fail("give one of --in-days N or --never", code=ErrorCode.invalid_request)
    when = None if never else _in_days(in_days or 0.0)
    _change_key(
        name,
        prefix,
        json_out,
        lambda session, k: set_key_expiry(session=session, key=k, expires_at=when),
    )


def _change_key(name: str, prefix: str, json_out: bool, change) -> None:  # type: ignore[no-untyped-def]
    from schemas.settings import core_settings
    from schemas.store.sessions import session_scope
    from schemas.store.tenants import get_api_key

    with session_scope(core_settings().database_url) as session:
        tenant = require_tenant(name, session=session)
        changed = change(session, get_api_key(session=session, tenant_id=tenant.id, prefix=prefix))
        row = _key_row(changed)
    typer.echo(
        as_json(row)
        if json_out
        else f"{row['prefix']} {row['state']}, expires {row['expires_at'] or 'never'}"
    )


def _key_row(k: ApiKey) -> dict[str, object]:
    from schemas.store.tenants import key_state
    from schemas.tables import utcnow

    return {
        "prefix": k.prefix,
        "scopes": k.scopes.split(","),
        "state": key_state(k, now=utcnow()),
        "created_at": _iso(k.created_at),
        "expires_at": _iso(k.expires_at),
        "last_used_at": _iso(k.last_used_at),
    }


def _in_days(days: float) -> datetime:
    from schemas.tables import utcnow

    return utcnow() + timedelta(days=days)


def _iso(when: datetime | None) -> str | None:
    return None if when is None else when.isoformat().replace("+00:00", "Z")


@app.command("usage")
def usage_(
    name: Annotated[str | None, typer.Argument(help="Tenant name (default: every tenant)")] = None,
    since: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"])] = None,
    until: Annotated[datetime | None, typer.Option(formats=["%Y-%m-%d"])] = None,
    json_out: JsonOpt = False,
) -> None:
    """Usage by tenant and UTC day: jobs, images, variants, model seconds, callbacks."""
    from sqlmodel import select

    from schemas.settings import core_settings
    from schemas.store.sessions import read_scope
    from schemas.store.usage import usage
    from schemas.tables import Tenant

    with read_scope(core_settings().database_url) as session:
        tenant_id = require_tenant(name, session=session).id if name else None
        names = {t.id: t.name for t in session.exec(select(Tenant)).all()}
        rows = [
            {**row.model_dump(), "day": row.day.isoformat(), "tenant": names[row.tenant_id],
             "model_seconds": round(row.model_seconds, 3)}
            for row in usage(
                session=session, tenant_id=tenant_id,
                since=since.date() if since else None, until=until.date() if until else None,
            )
        ]  # fmt: skip
    columns = ["day", "tenant", "jobs", "images", "variants", "model_seconds", "callbacks"]
    emit(rows, columns=columns, json_out=json_out, empty="no usage recorded")


@app.command("policy")
def policy(
    name: str,
    ban: Annotated[list[str] | None, typer.Option(help="Banned term (repeatable)")] = None,
    allow_domain: Annotated[list[str] | None, typer.Option(help="Domain copy may name")] = None,
    allow_handle: Annotated[list[str] | None, typer.Option(help="@handle copy may name")] = None,
    threshold: Annotated[
        float | None, typer.Option(min=0, max=1, help="Auto-approve at or above this score")
    ] = None,
    never: Annotated[
        bool, typer.Option("--never", help="Never auto-approve (the default)")
    ] = False,
) -> None:
    """Set a tenant's copy policy (replacing the lists given) and auto-approve threshold.

    The threshold is normally fitted by captionq eval calibrate."""
    from schemas.settings import core_settings
    from schemas.store.sessions import session_scope
    from schemas.tables import QUALITY_SCORE_VERSION

    with session_scope(core_settings().database_url) as session:
        tenant = require_tenant(name, session=session)
        if ban is not None:
            tenant.banned_terms = sorted(set(ban))
        if allow_domain is not None:
            tenant.allow_domains = sorted(set(allow_domain))
        if allow_handle is not None:
            tenant.allow_handles = sorted(set(allow_handle))
        if never:
            tenant.auto_approve_threshold = None
            tenant.auto_approve_score_version = None
        elif threshold is not None:
            tenant.auto_approve_threshold = threshold
            tenant.auto_approve_score_version = QUALITY_SCORE_VERSION
        session.add(tenant)
        typer.echo(
            json.dumps(
                {
                    "tenant": tenant.name,
                    "banned_terms": tenant.banned_terms,
                    "allow_domains": tenant.allow_domains,
                    "allow_handles": tenant.allow_handles,
                    "auto_approve_threshold": tenant.auto_approve_threshold,
                    "auto_approve_score_version": tenant.auto_approve_score_version,
                    # Fitted on an older quality score: run captionq eval calibrate again.
                    "threshold_stale": tenant.threshold_stale,
                }
            )
        )
