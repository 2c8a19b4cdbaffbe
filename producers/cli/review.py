"""``captionq review``: serve the review desk, and its accounts (``review user ...``).

Accounts are rows in the store and need only ``schemas``; serving the desk imports the
``review`` package, here, inside the command that runs it.
"""

from __future__ import annotations

import json
import secrets
import sys
from typing import Annotated

import typer

from producers.cli.errors import fail
from producers.cli.output import console, group
from schemas.errors import ErrorCode
from schemas.tables import ReviewerRole

app = typer.Typer(
    help="The review desk: a web page where content teams decide on copy.",
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
users = group("Reviewer accounts and the tenants granted to them.")
app.add_typer(users, name="user")


@app.callback(invoke_without_command=True)
def review(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Default: REVIEW_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: REVIEW_PORT")] = None,
) -> None:
    """Serve the review desk (accounts: captionq review user add)."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from review.app import create_app
    from schemas.settings import review_settings

    settings = review_settings()
    host, port = host or settings.review_host, port or settings.review_port
    console.print(f"Review desk on http://{host}:{port}/ (accounts: captionq review user add)")
    uvicorn.run(create_app(settings), host=host, port=port)


def _password(generate: bool) -> str:
    if generate:
        return secrets.token_urlsafe(15)
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    return str(typer.prompt("Password", hide_input=True, confirmation_prompt=True))


def _tenants(session, names: list[str]):  # type: ignore[no-untyped-def]
    from schemas.store.tenants import tenant_by_name

    found = [tenant_by_name(session=session, name=n) for n in names]
    missing = [n for n, t in zip(names, found, strict=True) if t is None]
    if missing:
        fail(f"no tenant {', '.join(missing)}", code=ErrorCode.not_found)
    return found


def _reviewer(session, email: str):  # type: ignore[no-untyped-def]
    from schemas.store.reviewers import reviewer_by_email

    reviewer = reviewer_by_email(session=session, email=email)
    if reviewer is None:
        fail(f"no reviewer {email}", code=ErrorCode.not_found)
    return reviewer


@users.command("add")
def user_add(
    email: str,
    tenant: Annotated[list[str], typer.Option("--tenant", "-t", help="Tenant name (repeatable)")],
    role: Annotated[ReviewerRole, typer.Option(help="reviewer, or admin")] = ReviewerRole.reviewer,
    generate: Annotated[
        bool, typer.Option(help="Make up a password and print it once (else: prompt, or stdin)")
    ] = False,
) -> None:
    """Create a reviewer account with the tenants it may review."""
    from schemas.settings import core_settings
    from schemas.store.reviewers import create_reviewer
    from schemas.store.sessions import session_scope

    password = _password(generate)
    with session_scope(core_settings().database_url) as session:
        try:
            reviewer = create_reviewer(
                session=session,
                email=email,
                password=password,
                role=role,
                tenants=_tenants(session, tenant),
            )
        except ValueError as exc:
            fail(str(exc), code=ErrorCode.invalid_request)
        shown = {"id": reviewer.id, "email": reviewer.email, "role": reviewer.role}
        typer.echo(
            json.dumps({**shown, "tenants": tenant, **({"password": password} if generate else {})})
        )


@users.command("grant")
def user_grant(
    email: str,
    tenant: Annotated[list[str], typer.Option("--tenant", "-t", help="Tenant name (repeatable)")],
    revoke: Annotated[bool, typer.Option(help="Take the tenants away instead")] = False,
) -> None:
    """Let a reviewer see more tenants (or fewer, with --revoke)."""
    from schemas.settings import core_settings
    from schemas.store import reviewers
    from schemas.store.sessions import session_scope

    with session_scope(core_settings().database_url) as session:
        reviewer = _reviewer(session, email)
        change = reviewers.revoke if revoke else reviewers.grant
        change(session=session, reviewer=reviewer, tenants=_tenants(session, tenant))
    console.print(f"{email}: {'revoked' if revoke else 'granted'} {', '.join(tenant)}")


@users.command("password")
def user_password(email: str) -> None:
    """Set a reviewer's password (prompted, or one line on stdin); signs them out."""
    from schemas.settings import core_settings
    from schemas.store import reviewers
    from schemas.store.sessions import session_scope

    with session_scope(core_settings().database_url) as session:
        reviewer = _reviewer(session, email)
        try:
            reviewers.set_password(session=session, reviewer=reviewer, password=_password(False))
        except ValueError as exc:
            fail(str(exc), code=ErrorCode.invalid_request)
    console.print(f"{email}: password changed, signed out everywhere")


@users.command("disable")
def user_disable(email: str) -> None:
    """Close a reviewer's account and end its sessions (its decisions stay)."""
    from schemas.settings import core_settings
    from schemas.store import reviewers
    from schemas.store.sessions import session_scope

    with session_scope(core_settings().database_url) as session:
        reviewer = _reviewer(session, email)
        reviewers.disable(session=session, reviewer=reviewer)
    console.print(f"{email}: disabled")


@users.command("list")
def user_list() -> None:
    """Every reviewer, with role and tenants."""
    from schemas.settings import core_settings
    from schemas.store import reviewers
    from schemas.store.sessions import session_scope

    with session_scope(core_settings().database_url) as session:
        for reviewer in reviewers.list_reviewers(session=session):
            names = [
                t.name for t in reviewers.granted_tenants(session=session, reviewer_id=reviewer.id)
            ]
            state = "disabled" if reviewer.disabled_at else reviewer.role
            typer.echo(f"{reviewer.email}\t{state}\t{','.join(names)}")
