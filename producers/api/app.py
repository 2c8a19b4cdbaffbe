"""The FastAPI application: routes, error responses, body size limit."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producers.api import (
    callbacks,
    catalogue,
    health,
    jobs,
    keys,
    metrics,
    review,
    tenant,
    usage,
    webhooks,
)
from producers.api.statuses import DOCUMENTED, status_for
from schemas.api import ErrorResponse
from schemas.errors import ErrorCode, RequestError, UnavailableError
from schemas.settings import ApiSettings, api_settings
from schemas.store.sessions import is_outage

log = logging.getLogger("captionq.api")


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or api_settings()
    if settings.sentry_dsn:  # FastAPI's integration turns itself on, through our scrubbers
        from schemas.sentry import init_sentry

        init_sentry(settings.sentry_dsn, environment=settings.captionq_env)
    # Swagger UI (/docs) and ReDoc (/redoc) from assets in the package: no CDN.
    app = FastAPIOffline(
        redoc_url=None,  # ours, below
        responses={
            status: {"model": ErrorResponse, "description": description}
            for status, description in DOCUMENTED.items()
        },
        title="captionq ingestion API",
        version="1",
        description="Submit image-caption jobs, read their captions and ad-copy variants.",
    )
    app.state.settings = settings
    app.include_router(jobs.router)
    app.include_router(webhooks.router)
    app.include_router(review.router)
    app.include_router(tenant.router)
    app.include_router(health.router)
    app.include_router(metrics.router)
    app.include_router(usage.router)
    app.include_router(keys.router)
    app.include_router(catalogue.router)
    app.webhooks.include_router(callbacks.router)
    schema = app.openapi
    app.openapi = lambda: jobs.documented_limits(schema(), settings)  # type: ignore[method-assign]
    app.add_exception_handler(RequestError, _request_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(UnavailableError, _unavailable)  # type: ignore[arg-type]
    app.add_exception_handler(DBAPIError, _database_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error)
    app.add_middleware(BodyLimit, max_bytes=settings.request_max_bytes)
    app.add_middleware(metrics.RequestTimer)  # outermost: times the refusals above too

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        """ReDoc from the package's assets. Its bundle links its "API docs by Redocly"
        badge from a CDN: the page's policy keeps images on this host, so the page asks
        nothing of any other."""
        root = request.scope.get("root_path", "")
        assets = f"{root}/static-offline-docs"
        page = get_redoc_html(
            openapi_url=f"{root}{app.openapi_url}", title=f"{app.title} - ReDoc",
            redoc_js_url=f"{assets}/redoc.standalone.js", with_google_fonts=False,
            redoc_favicon_url=f"{assets}/favicon.png",
        )  # fmt: skip
        page.headers["content-security-policy"] = "img-src 'self' data:"
        return page

    return app


def _error(status: int, code: str, message: str, detail: object = None) -> JSONResponse:
    body: dict[str, object] = {"error": {"code": code, "message": message}}
    if detail is not None:
        body["error"]["detail"] = detail  # type: ignore[index]
    return JSONResponse(status_code=status, content=body)


async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
    response = _error(status_for(exc.code), exc.code.value, exc.message)
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        response.headers["retry-after"] = str(int(retry_after))
    return response


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    if any(e["type"] == "json_invalid" for e in errors):
        code, message = ErrorCode.invalid_json, "the body is not JSON"
    else:
        code, message = ErrorCode.invalid_request, "request does not match the schema"
    return _error(status_for(code), code.value, message, errors)


async def _unavailable(_: Request, exc: UnavailableError) -> JSONResponse:
    """A dependency is away (admission needs Redis): 503, nothing was written."""
    response = _error(status_for(exc.code), exc.code.value, exc.message)
    response.headers["retry-after"] = str(max(1, int(exc.retry_after_s)))
    return response


async def _database_error(request: Request, exc: DBAPIError) -> JSONResponse:
    """The database away (by driver error class and SQLSTATE): 503, retry; any other
    database error is a bug, answered as one."""
    if not is_outage(exc):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return await _internal_error(request, exc)
    log.warning("database unavailable for %s %s: %s", request.method, request.url.path, exc.orig)
    unavailable = UnavailableError(
        "the database cannot be reached; retry shortly", code=ErrorCode.database_unavailable
    )
    return await _unavailable(request, unavailable)


async def _internal_error(_: Request, exc: Exception) -> JSONResponse:
    """A bug: the client still gets the error envelope (the traceback goes to the log)."""
    return _error(500, ErrorCode.internal_error.value, "internal error; it has been logged")


_HTTP_CODES = {404: ErrorCode.not_found, 405: ErrorCode.method_not_allowed}


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, ErrorCode.invalid_request)
    response = _error(exc.status_code, code.value, str(exc.detail))
    if exc.status_code == 405:
        # Starlette names only the first route that matched the path; list them all.
        methods: set[str] = set()
        for route in request.app.router.routes:
            match, _ = route.matches({**request.scope, "method": ""})
            if match != Match.NONE:
                methods |= getattr(route, "methods", None) or set()
        response.headers["allow"] = ", ".join(sorted(methods))
    elif exc.headers:
        response.headers.update(exc.headers)
    return response


class BodyLimit:
    """Refuse request bodies over ``max_bytes`` with 413, before the app reads them.

    A declared ``Content-Length`` over the cap is refused at once. A body without one
    (chunked) is read here, up to the cap, and handed on whole: past the cap the
    request is refused with 413, not half-parsed into a 400."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)  # the server holds the body to its length
            return
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"") or b""
            seen += len(chunk)
            if seen > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # after the body: wait for a disconnect
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        code = ErrorCode.payload_too_large
        response = _error(status_for(code), code.value, f"request body over {self.max_bytes} bytes")
        await response(scope, receive, send)
