"""What the SDK raises, and when it retries.

``ApiError`` is a :class:`schemas.errors.RequestError`: the answer's stable ``code``
(an :class:`ErrorCode` when the SDK knows it, else the string), its ``message``,
the HTTP ``status``, ``detail`` (schema errors, rules an edit broke) and, on 429 and
503, ``retry_after_s``. A request that never got an answer raises ``ApiUnreachableError``
(an ``ApiError`` with status 0).

Retried: 429 and 503 (after ``Retry-After``, capped), and a request that got no answer
when it is safe to send again (a read, or a submission with its idempotency key: the
SDK gives every submission one, so a retry finds the same job).
"""

from __future__ import annotations

from typing import Any

import httpx

from schemas.checks.headers import retry_after_s
from schemas.errors import ErrorCode, RequestError

RETRIED_STATUSES = frozenset({429, 503})


class ApiError(RequestError):
    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | str,
        status: int,
        detail: Any = None,
        retry_after_s: float | None = None,
    ) -> None:
        known = code if isinstance(code, ErrorCode) else _known(code)
        super().__init__(message, code=known or ErrorCode.invalid_request)
        self.code_text = str(code)
        self.status = status
        self.detail = detail
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        return f"{self.code_text} ({self.status}): {self.message}"


class ApiUnreachableError(ApiError):
    """No answer: connection refused, reset or timed out."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=ErrorCode.api_unavailable, status=0)


def _known(code: str) -> ErrorCode | None:
    try:
        return ErrorCode(code)
    except ValueError:
        return None


def retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds, None when the answer has none."""
    return retry_after_s(response.headers.get("retry-after"))


def from_response(response: httpx.Response) -> ApiError:
    """The error an answer of 4xx or 5xx stands for (the API's envelope, or its status)."""
    try:
        error = response.json()["error"]
        code, message, detail = error["code"], error["message"], error.get("detail")
    except (ValueError, KeyError, TypeError):
        code, message, detail = "http_error", response.text[:200] or response.reason_phrase, None
    return ApiError(
        message,
        code=code,
        status=response.status_code,
        detail=detail,
        retry_after_s=retry_after(response),
    )


def backoff_s(attempt: int, *, hinted: float | None, cap_s: float) -> float:
    """How long to wait before retry ``attempt`` (1, 2, ...): the server's hint when it
    gave one, else 0.5 s doubling; never more than ``cap_s``."""
    base = hinted if hinted is not None else 0.5 * 2 ** (attempt - 1)
    return min(cap_s, base)
