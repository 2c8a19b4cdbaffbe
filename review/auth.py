"""Who is at the desk: sign-in and out, the session cookie, CSRF tokens, refusals.

- The session cookie (``captionq_review``) is HttpOnly, SameSite=Lax, and Secure over
  https (or always, with ``REVIEW_COOKIE_SECURE=true``); it holds a random token whose
  SHA-256 names the session row (``schemas.store.reviewers``).
- Every state-changing request carries the session's CSRF token (a hidden form field,
  or an ``X-CSRF-Token`` header); the sign-in form carries one of its own (a cookie and
  the same value in the form).
- Failed sign-ins are limited per account (in the database, so on every host) and per
  client address (in this process).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlmodel import Session

from schemas.settings import ReviewSettings
from schemas.store import reviewers
from schemas.store.decisions import Decider
from schemas.store.sessions import read_scope, session_scope
from schemas.tables import Reviewer, ReviewerRole, Tenant

COOKIE = "captionq_review"
LOGIN_COOKIE = "captionq_review_login"

router = APIRouter()
PROBLEMS = {
    "mismatch": "That e-mail and password do not match an account.",
    "locked": "Too many failed sign-ins: this account waits a few minutes.",
    "expired": "Your session ended. Sign in again.",
}


class Refused(Exception):  # noqa: N818 - an answer, not a failure
    """A request the desk refuses: answered as a page, or as JSON to the page's script."""

    def __init__(self, status: int, code: str, message: str, detail: object = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.detail = status, code, message, detail


class SignInRequired(Exception):  # noqa: N818
    """No live session: a page sends the browser to the sign-in form."""


def get_settings(request: Request) -> ReviewSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


SettingsDep = Annotated[ReviewSettings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with session_scope(settings.database_url) as session:
        yield session


# Committed when the route returns, before its answer is sent: a redirect after a
# sign-in or a decision is followed at once, and the next page reads what was written.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_read_session(settings: SettingsDep) -> Iterator[Session]:
    """For what only reads (the pages, the desk itself): on SQLite it takes no write lock,
    so a page never queues behind a worker's result transaction."""
    with read_scope(settings.database_url) as session:
        yield session


ReadSessionDep = Annotated[Session, Depends(get_read_session)]


@dataclass(frozen=True)
class Desk:
    """The signed-in reviewer, the tenants granted to them, and the session's CSRF token."""

    reviewer: Reviewer
    csrf: str
    tenants: dict[str, Tenant]

    @property
    def admin(self) -> bool:
        return self.reviewer.role == ReviewerRole.admin

    @property
    def decider(self) -> Decider:
        return Decider(label=self.reviewer.email, reviewer_id=self.reviewer.id, admin=self.admin)


def current_desk(request: Request, session: ReadSessionDep) -> Desk:
    found = reviewers.session_for(session=session, token=request.cookies.get(COOKIE, ""))
    if found is None:
        raise SignInRequired()
    row, reviewer = found
    tenants = reviewers.granted_tenants(session=session, reviewer_id=reviewer.id)
    return Desk(reviewer=reviewer, csrf=row.csrf_token, tenants={t.id: t for t in tenants})


DeskDep = Annotated[Desk, Depends(current_desk)]


async def checked_desk(request: Request, desk: DeskDep) -> Desk:
    """The desk of a state-changing request whose CSRF token matches its session's."""
    form = await request.form()
    token = str(form.get("csrf_token") or request.headers.get("x-csrf-token") or "")
    if not hmac.compare_digest(token.encode(), desk.csrf.encode()):
        raise Refused(403, "forbidden", "this form has expired or did not come from the desk")
    return desk


CheckedDesk = Annotated[Desk, Depends(checked_desk)]


def local_path(target: str | None, default: str = "/") -> str:
    """``target`` if it is a path on this site (never another origin), else ``default``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    return target


class FailureWindow:
    """Failed sign-ins per key (a client address, or an e-mail with no account) within a
    sliding window, in this process; at most ``MAX_KEYS`` keys, the oldest dropped."""

    MAX_KEYS = 10_000

    def __init__(self) -> None:
        self.failures: dict[str, deque[float]] = {}

    def blocked(self, key: str, *, limit: int, window_s: float) -> bool:
        recent = self.failures.get(key)
        if not recent:
            return False
        while recent and recent[0] < time.monotonic() - window_s:
            recent.popleft()
        if not recent:
            del self.failures[key]
        return len(recent) >= limit

    def failed(self, key: str) -> None:
        if key not in self.failures and len(self.failures) >= self.MAX_KEYS:
            del self.failures[next(iter(self.failures))]
        self.failures.setdefault(key, deque(maxlen=1000)).append(time.monotonic())


def _phantom_locked(request: Request, email: str, settings: ReviewSettings) -> bool:
    """An e-mail with no account locks after as many failures as a real one would."""
    unknown: FailureWindow = request.app.state.unknown_emails
    unknown.failed(email.strip().lower())
    return unknown.blocked(
        email.strip().lower(),
        limit=settings.review_login_max_failures,
        window_s=settings.review_login_lockout_s,
    )


def _secure(request: Request, settings: ReviewSettings) -> bool:
    if settings.review_cookie_secure is not None:
        return settings.review_cookie_secure
    return request.url.scheme == "https"


@router.get("/login", include_in_schema=False)
def login_page(request: Request, next: str | None = None, problem: str | None = None) -> Response:
    token = secrets.token_urlsafe(24)
    page = request.app.state.templates.TemplateResponse(
        request,
        "login.html",
        {"login_csrf": token, "next": local_path(next), "problem": PROBLEMS.get(problem or "")},
        status_code=401 if problem in PROBLEMS else 200,
    )
    page.set_cookie(
        LOGIN_COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=_secure(request, get_settings(request)),
        path="/login",
        max_age=3600,
    )
    return page


@router.post("/login", include_in_schema=False)
def login(
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
    csrf_token: Annotated[str, Form(max_length=200)] = "",
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(csrf_token.encode(), expected.encode()):
        raise Refused(403, "forbidden", "the sign-in form expired; reload the page")
    limiter: FailureWindow = request.app.state.login_failures
    address = request.client.host if request.client else "unknown"
    window = settings.review_login_lockout_s
    if limiter.blocked(address, limit=settings.review_login_ip_failures, window_s=window):
        raise Refused(429, "rate_limited", "too many failed sign-ins; wait a few minutes")
    outcome = reviewers.sign_in(
        session=session,
        email=email,
        password=password,
        max_failures=settings.review_login_max_failures,
        lockout_s=settings.review_login_lockout_s,
    )
    if outcome.reviewer is None:
        limiter.failed(address)
        session.commit()  # the failure counts, whatever is answered
        locked = outcome.locked or (not outcome.known and _phantom_locked(request, email, settings))
        problem = "locked" if locked else "mismatch"
        return RedirectResponse(
            f"/login?problem={problem}&next={quote(local_path(next))}", status_code=303
        )
    token, _ = reviewers.start_session(
        session=session, reviewer=outcome.reviewer, ttl_s=settings.review_session_ttl_s
    )
    answer = RedirectResponse(local_path(next), status_code=303)
    answer.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=_secure(request, settings),
        max_age=int(settings.review_session_ttl_s),
    )
    answer.delete_cookie(LOGIN_COOKIE, path="/login")
    return answer


@router.post("/logout", include_in_schema=False)
def logout(request: Request, desk: CheckedDesk, session: SessionDep) -> Response:
    reviewers.end_session(session=session, token=request.cookies.get(COOKIE, ""))
    answer = RedirectResponse("/login", status_code=303)
    answer.delete_cookie(COOKIE)
    return answer
