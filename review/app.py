"""The review desk's application: pages, decisions, sign-in, and the rules every
answer follows.

- Content-Security-Policy without inline scripts or styles: the page's one script and
  one stylesheet are files served from here (``static/``), nothing from elsewhere.
- Every template autoescapes (model text is untrusted); ``nosniff`` on every answer.
- A request that the browser marks ``Sec-Fetch-Site: cross-site`` is refused, except a
  plain top-level navigation (a link to a job followed from another site opens the
  page; nothing cross-site changes state, embeds an image or reads a page by script).
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader
from sqlalchemy.exc import DBAPIError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from review import actions, auth, metrics, pages
from review.announce import Announcer
from schemas.settings import ReviewSettings, review_settings
from schemas.store.sessions import is_outage

log = logging.getLogger("captionq.review")

HERE = Path(__file__).parent
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=()",
}


def templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"), autoescape=True, trim_blocks=True,
        lstrip_blocks=True,
    )  # fmt: skip
    env.filters["pct"] = lambda v: "–" if v is None else f"{v:.0%}"
    env.filters["short"] = lambda s: s.split("_", 1)[-1][:8] if s else ""
    env.filters["when"] = lambda d: d.strftime("%Y-%m-%d %H:%M") if d else ""
    return Jinja2Templates(env=env)


def create_app(settings: ReviewSettings | None = None) -> FastAPI:
    settings = settings or review_settings()
    if settings.sentry_dsn:  # FastAPI's integration turns itself on, through our scrubbers
        from schemas.sentry import init_sentry

        init_sentry(settings.sentry_dsn, environment=settings.captionq_env)
    app = FastAPI(title="captionq review desk", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.templates = templates()
    app.state.announcer = Announcer(settings.redis_url)
    app.state.login_failures = auth.FailureWindow()  # per client address
    app.state.unknown_emails = auth.FailureWindow()  # e-mails with no account
    app.include_router(auth.router)
    app.include_router(pages.router)
    app.include_router(actions.router)
    app.include_router(metrics.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_exception_handler(auth.Refused, _refused)  # type: ignore[arg-type]
    app.add_exception_handler(auth.SignInRequired, _sign_in)  # type: ignore[arg-type]
    app.add_exception_handler(DBAPIError, _database_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(Guard)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def _refused(request: Request, exc: auth.Refused) -> Response:
    if request.headers.get("accept", "").startswith("application/json"):
        error = {"code": exc.code, "message": exc.message, "detail": exc.detail}
        return JSONResponse({"error": error}, status_code=exc.status)
    return request.app.state.templates.TemplateResponse(  # type: ignore[no-any-return]
        request, "error.html", {"error": exc, "desk": None}, status_code=exc.status
    )


async def _database_error(request: Request, exc: DBAPIError) -> Response:
    """The database away: 503, try again; any other database error is a bug."""
    if not is_outage(exc):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return await _internal_error(request, exc)
    away = auth.Refused(
        503, "database_unavailable", "the database cannot be reached; retry shortly"
    )
    answer = await _refused(request, away)
    answer.headers["retry-after"] = "5"
    return answer


async def _internal_error(request: Request, exc: Exception) -> Response:
    """A bug: the reviewer still gets the desk's error page, with the security headers
    (this answer is made outside :class:`Guard`); the traceback goes to the log."""
    answer = await _refused(
        request, auth.Refused(500, "internal_error", "something broke; it has been logged")
    )
    answer.headers.update({k: v for k, v in HEADERS.items() if k not in answer.headers})
    answer.headers["cache-control"] = "no-store"
    return answer


async def _sign_in(request: Request, exc: auth.SignInRequired) -> Response:
    if request.method != "GET" or request.headers.get("accept", "").startswith("application/json"):
        error = {"code": "unauthorized", "message": "sign in first"}
        return JSONResponse({"error": error}, status_code=401)
    return RedirectResponse(f"/login?next={request.url.path}", status_code=303)


class Guard:
    """Refuse cross-site requests (but plain navigations), and put the security headers
    on every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers") or []}
        if headers.get("sec-fetch-site") == "cross-site" and not (
            scope["method"] == "GET"
            and headers.get("sec-fetch-mode") == "navigate"
            and headers.get("sec-fetch-dest", "document") == "document"
        ):
            answer = PlainTextResponse("cross-site requests are refused", status_code=403)
            await answer(scope, receive, self._headed(send))
            return
        await self.app(scope, receive, self._headed(send, scope["path"].startswith("/static/")))

    @staticmethod
    def _headed(send: Send, static: bool = False) -> Send:
        """Add the security headers; pages are never cached (they show private data),
        the script and stylesheet for an hour."""
        cache = b"private, max-age=3600" if static else b"no-store"

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {k.decode().lower() for k, _ in message.get("headers", [])}
                extra = [(k.encode(), v.encode()) for k, v in HEADERS.items() if k not in present]
                if "cache-control" not in present:
                    extra.append((b"cache-control", cache))
                message["headers"] = [*message.get("headers", []), *extra]
            await send(message)

        return sending
