"""The FastAPI application: routes, error mapping, body size limit."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from producers.api import jobs, review, webhooks
from schemas.api import ErrorResponse
from schemas.errors import ErrorCode, RequestError
from schemas.settings import ApiSettings, api_settings


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or api_settings()
    if settings.sentry_dsn:
        from schemas.sentry import init_sentry

        init_sentry(settings.sentry_dsn)
    app = FastAPI(
        responses={
            status: {"model": ErrorResponse, "description": description}
            for status, description in _DOCUMENTED_ERRORS.items()
        },
        title="captionq ingestion API",
        version="1",
        description="Submit image-caption jobs, read their captions and ad-copy variants.",
    )
    app.state.settings = settings
    app.include_router(jobs.router)
    app.include_router(webhooks.router)
    app.include_router(review.router)
    app.add_exception_handler(RequestError, _request_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]
    app.add_middleware(BodyLimit, max_bytes=settings.request_max_bytes)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


_DOCUMENTED_ERRORS = {
    400: "Malformed body",
    401: "Missing, invalid, revoked or expired API key",
    403: "The key lacks the scope",
    404: "No such resource for this tenant",
    409: "A request with this idempotency key is still being created",
    413: "Body or image too large",
    422: "Refused request, with a stable error code",
    429: "Rate limited; see Retry-After",
}


def _error(status: int, code: str, message: str, detail: object = None) -> JSONResponse:
    body: dict[str, object] = {"error": {"code": code, "message": message}}
    if detail is not None:
        body["error"]["detail"] = detail  # type: ignore[index]
    return JSONResponse(status_code=status, content=body)


async def _request_error(_: Request, exc: RequestError) -> JSONResponse:
    response = _error(exc.status, exc.code.value, exc.message)
    retry_after = getattr(exc, "retry_after_s", None)
    if retry_after is not None:
        response.headers["retry-after"] = str(int(retry_after))
    return response


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    return _error(422, ErrorCode.invalid_request.value, "request does not match the schema", errors)


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
    """Refuse request bodies over ``max_bytes`` with 413, before reading them whole."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0

        async def limited() -> dict[str, object]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b"") or b"")
            if seen > self.max_bytes:
                raise RequestError(
                    "request body too large", code=ErrorCode.payload_too_large, status=413
                )
            return message  # type: ignore[return-value]

        await self.app(scope, limited, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = _error(
            413, ErrorCode.payload_too_large.value, f"request body over {self.max_bytes} bytes"
        )
        await response(scope, receive, send)
