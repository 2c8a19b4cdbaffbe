"""Reviewer accounts, the tenants granted to them, sign-in and browser sessions.

Passwords are hashed with argon2id (argon2-cffi's defaults, rehashed when they
change). Failed sign-ins are counted per account: after ``max_failures`` in a row the
account refuses every password, right or wrong, for ``lockout_s``. A session is a random
token in an HttpOnly cookie; only its SHA-256 is stored, with the session's CSRF token
and its expiry, so signing out (or an expiry) ends it on every host at once.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete
from sqlmodel import Session, col, select

from schemas.tables import (
    Reviewer,
    ReviewerGrant,
    ReviewerRole,
    ReviewSession,
    Tenant,
    utcnow,
)

PASSWORD_MIN_CHARS = 12
_HASHER = PasswordHasher()
# Verified against when the e-mail is unknown, so that a miss takes as long as a hit.
_DUMMY_HASH = _HASHER.hash(secrets.token_urlsafe(16))


def _email(email: str) -> str:
    return email.strip().casefold()


def create_reviewer(
    *,
    session: Session,
    email: str,
    password: str,
    role: ReviewerRole = ReviewerRole.reviewer,
    tenants: Iterable[Tenant] = (),
) -> Reviewer:
    """A reviewer who may see and decide ``tenants``' jobs. Raises ``ValueError`` for a
    short password or an e-mail already taken."""
    if len(password) < PASSWORD_MIN_CHARS:
        raise ValueError(f"a password needs at least {PASSWORD_MIN_CHARS} characters")
    address = _email(email)
    if "@" not in address:
        raise ValueError(f"not an e-mail address: {email!r}")
    if reviewer_by_email(session=session, email=address) is not None:
        raise ValueError(f"a reviewer {address} exists already")
    reviewer = Reviewer(email=address, password_hash=_HASHER.hash(password), role=role.value)
    session.add(reviewer)
    session.flush()
    grant(session=session, reviewer=reviewer, tenants=tenants)
    return reviewer


def reviewer_by_email(*, session: Session, email: str) -> Reviewer | None:
    return session.exec(select(Reviewer).where(Reviewer.email == _email(email))).first()


def grant(*, session: Session, reviewer: Reviewer, tenants: Iterable[Tenant]) -> None:
    """Let ``reviewer`` see and decide these tenants' jobs too."""
    have = set(granted_tenant_ids(session=session, reviewer_id=reviewer.id))
    session.add_all(
        ReviewerGrant(reviewer_id=reviewer.id, tenant_id=t.id) for t in tenants if t.id not in have
    )
    session.flush()


def revoke(*, session: Session, reviewer: Reviewer, tenants: Iterable[Tenant]) -> None:
    ids = [t.id for t in tenants]
    session.execute(
        delete(ReviewerGrant).where(
            col(ReviewerGrant.reviewer_id) == reviewer.id, col(ReviewerGrant.tenant_id).in_(ids)
        )
    )


def granted_tenant_ids(*, session: Session, reviewer_id: str) -> list[str]:
    query = select(ReviewerGrant.tenant_id).where(ReviewerGrant.reviewer_id == reviewer_id)
    return list(session.exec(query).all())


def granted_tenants(*, session: Session, reviewer_id: str) -> list[Tenant]:
    """The tenants a reviewer may see, by name."""
    query = (
        select(Tenant)
        .join(ReviewerGrant, col(ReviewerGrant.tenant_id) == col(Tenant.id))
        .where(ReviewerGrant.reviewer_id == reviewer_id)
        .order_by(col(Tenant.name))
    )
    return list(session.exec(query).all())


def set_password(*, session: Session, reviewer: Reviewer, password: str) -> None:
    if len(password) < PASSWORD_MIN_CHARS:
        raise ValueError(f"a password needs at least {PASSWORD_MIN_CHARS} characters")
    reviewer.password_hash = _HASHER.hash(password)
    reviewer.failed_logins = 0
    reviewer.locked_until = None
    session.add(reviewer)
    end_sessions(session=session, reviewer_id=reviewer.id)
    session.flush()


@dataclass(frozen=True)
class SignIn:
    """The outcome of a sign-in: the reviewer, or why not (``locked`` says to wait)."""

    reviewer: Reviewer | None
    locked: bool = False
    known: bool = True  # False: no such account (or a disabled one); the caller counts it


def sign_in(
    *, session: Session, email: str, password: str, max_failures: int, lockout_s: float
) -> SignIn:
    """Check a password; a locked account refuses even the right password. Unknown
    e-mails and disabled accounts cost the same hash as a wrong password and say only
    ``known=False``: the caller counts their failures to the same lockout, so that
    neither the answer nor its timing tells whether an account exists."""
    reviewer = reviewer_by_email(session=session, email=email)
    now = utcnow()
    if reviewer is None or reviewer.disabled_at is not None:
        _verify(_DUMMY_HASH, password)
        return SignIn(None, known=False)
    if reviewer.locked_until is not None and reviewer.locked_until > now:
        return SignIn(None, locked=True)
    if not _verify(reviewer.password_hash, password):
        reviewer.failed_logins += 1
        locked = reviewer.failed_logins >= max_failures
        if locked:
            reviewer.failed_logins = 0
            reviewer.locked_until = now + timedelta(seconds=lockout_s)
        session.add(reviewer)
        session.flush()
        return SignIn(None, locked=locked)
    reviewer.failed_logins = 0
    reviewer.locked_until = None
    if _HASHER.check_needs_rehash(reviewer.password_hash):
        reviewer.password_hash = _HASHER.hash(password)
    session.add(reviewer)
    session.flush()
    return SignIn(reviewer)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _token_id(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(
    *, session: Session, reviewer: Reviewer, ttl_s: float
) -> tuple[str, ReviewSession]:
    """A new browser session; returns the cookie's token (shown once) and the row.
    Expired sessions are cleared on the way."""
    session.execute(delete(ReviewSession).where(col(ReviewSession.expires_at) <= utcnow()))
    token = secrets.token_urlsafe(32)
    row = ReviewSession(
        id=_token_id(token),
        reviewer_id=reviewer.id,
        csrf_token=secrets.token_urlsafe(32),
        expires_at=utcnow() + timedelta(seconds=ttl_s),
    )
    session.add(row)
    session.flush()
    return token, row


def session_for(*, session: Session, token: str) -> tuple[ReviewSession, Reviewer] | None:
    """The live session of a cookie's token and its reviewer, or None."""
    row = session.get(ReviewSession, _token_id(token))
    if row is None or row.expires_at <= utcnow():
        return None
    reviewer = session.get(Reviewer, row.reviewer_id)
    if reviewer is None or reviewer.disabled_at is not None:
        return None
    return row, reviewer


def end_session(*, session: Session, token: str) -> None:
    session.execute(delete(ReviewSession).where(col(ReviewSession.id) == _token_id(token)))


def end_sessions(*, session: Session, reviewer_id: str) -> None:
    """Sign a reviewer out everywhere (a new password, a disabled account)."""
    session.execute(delete(ReviewSession).where(col(ReviewSession.reviewer_id) == reviewer_id))


def disable(*, session: Session, reviewer: Reviewer) -> None:
    reviewer.disabled_at = utcnow()
    session.add(reviewer)
    end_sessions(session=session, reviewer_id=reviewer.id)
    session.flush()


def list_reviewers(*, session: Session) -> list[Reviewer]:
    return list(session.exec(select(Reviewer).order_by(col(Reviewer.email))).all())
