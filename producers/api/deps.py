"""Typed FastAPI dependencies: settings, a database session, the calling tenant."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from schemas.errors import ErrorCode, RequestError
from schemas.settings import ApiSettings
from schemas.store.sessions import is_outage, read_scope, session_scope
from schemas.store.tenants import authenticate, has_scope, record_use, use_unrecorded
from schemas.tables import Tenant

log = logging.getLogger("captionq.api")


def get_settings(request: Request) -> ApiSettings:
    return request.app.state.settings  # type: ignore[no-any-return]


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    with session_scope(settings.database_url) as session:
        yield session


# Committed when the route returns, before its answer is sent: a client that acts on an
# answer at once (reads the job it created, the decision it made) finds it written.
SessionDep = Annotated[Session, Depends(get_session, scope="function")]


def get_read_session(settings: SettingsDep) -> Iterator[Session]:
    """For routes that only read: on SQLite a read takes no write lock, so a client that
    polls its job never queues behind a worker's write, nor holds one up."""
    with read_scope(settings.database_url) as session:
        yield session


# Closed when the route returns: its answer is built from the rows inside the route.
ReadSessionDep = Annotated[Session, Depends(get_read_session, scope="function")]


# Declared in the OpenAPI as the ``bearer`` security scheme (the docs' Authorize button).
bearer = HTTPBearer(
    scheme_name="bearer",
    bearerFormat="cq_<prefix>_<secret>",
    description="An API key: `captionq tenant key NAME` or POST /v1/keys",
    auto_error=False,
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]


def _token(credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is None or not credentials.credentials.strip():
        raise RequestError(
            "missing API key: send 'Authorization: Bearer cq_...'", code=ErrorCode.unauthorized
        )
    return credentials.credentials.strip()


def require(scope: str) -> Callable[..., Tenant]:
    """The calling tenant, if its key holds ``scope``. The key is read in a read-only
    session: on SQLite, authenticating takes no write lock, and waits for no writer. A
    key's use is written once a minute at most, in a transaction of its own."""

    def dependency(request: Request, settings: SettingsDep, credentials: Credentials) -> Tenant:
        presented = _token(credentials)
        with read_scope(settings.database_url) as reader:
            found = authenticate(session=reader, presented=presented)
        if found is None:
            raise RequestError("invalid, revoked or expired API key", code=ErrorCode.unauthorized)
        tenant, key = found
        if not has_scope(key, scope):
            raise RequestError(f"this key lacks the '{scope}' scope", code=ErrorCode.forbidden)
        if use_unrecorded(key):
            _record_use(settings.database_url, key.id)
        request.state.api_key = key  # who decides, for the review routes
        return tenant

    return dependency


def _record_use(url: str, key_id: str) -> None:
    """A key's last use, best effort: with the database away or its write lock held
    past the busy timeout, the request is answered all the same, and the use is
    written by the key's next request."""
    try:
        with session_scope(url) as session:
            record_use(session=session, key_id=key_id)
    except DBAPIError as exc:
        if not is_outage(exc):
            raise
        reason = type(exc.orig).__name__
        log.warning("key %s: its last use is not recorded now (%s)", key_id, reason)


SubmitTenant = Annotated[Tenant, Depends(require("submit"))]
ReadTenant = Annotated[Tenant, Depends(require("read"))]
