"""``captionq review user ...``: reviewer accounts and the tenants granted to them.

Accounts are rows in the store and need only ``schemas``; ``captionq review`` itself,
which serves the desk, is in ``producers/cli.py`` (the one place that imports the
``review`` package, lazily).
"""

from __future__ import annotations

import json
import secrets
import sys
from typing import Annotated

import typer
from rich.console import Console

from schemas.tables import ReviewerRole

app = typer.Typer(help="The review desk: a web page where content teams decide on copy.")
users = typer.Typer(help="Reviewer accounts and the tenants granted to them.", no_args_is_help=True)
app.add_typer(users, name="user")
console = Console()


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
        console.print(f"[red]not_found[/red]: no tenant {', '.join(missing)}")
        raise typer.Exit(1)
    return found


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
            console.print(f"[red]refused[/red]: {exc}")
            raise typer.Exit(2) from exc
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
        reviewer = reviewers.reviewer_by_email(session=session, email=email)
        if reviewer is None:
            console.print(f"[red]not_found[/red]: no reviewer {email}")
            raise typer.Exit(1)
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
        reviewer = reviewers.reviewer_by_email(session=session, email=email)
        if reviewer is None:
            console.print(f"[red]not_found[/red]: no reviewer {email}")
            raise typer.Exit(1)
        try:
            reviewers.set_password(session=session, reviewer=reviewer, password=_password(False))
        except ValueError as exc:
            console.print(f"[red]refused[/red]: {exc}")
            raise typer.Exit(2) from exc
    console.print(f"{email}: password changed, signed out everywhere")


@users.command("disable")
def user_disable(email: str) -> None:
    """Close a reviewer's account and end its sessions (its decisions stay)."""
    from schemas.settings import core_settings
    from schemas.store import reviewers
    from schemas.store.sessions import session_scope

    with session_scope(core_settings().database_url) as session:
        reviewer = reviewers.reviewer_by_email(session=session, email=email)
        if reviewer is None:
            console.print(f"[red]not_found[/red]: no reviewer {email}")
            raise typer.Exit(1)
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
