"""Errors and their stable codes.

Every failure a client can see carries an :class:`ErrorCode` (machine-readable,
stable across releases) and a human message. The hierarchy says what to do::

    CaptionError
    ├── TransientError   network, broker, database blips, CUDA out of memory:
    │                    retried with backoff, the job stays alive
    └── PermanentError   bad image, bad request, policy: the job fails now,
                         with its code

Celery's ``autoretry_for`` lists only the transient branch.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # Request validation (HTTP 4xx or a failed job).
    invalid_request = "invalid_request"
    unknown_style = "unknown_style"
    unknown_platform = "unknown_platform"
    variants_out_of_range = "variants_out_of_range"
    idempotency_conflict = "idempotency_conflict"
    idempotency_in_progress = "idempotency_in_progress"
    unauthorized = "unauthorized"
    forbidden = "forbidden"
    not_found = "not_found"
    method_not_allowed = "method_not_allowed"
    payload_too_large = "payload_too_large"
    rate_limited = "rate_limited"
    # Image intake.
    image_missing = "image_missing"
    image_empty = "image_empty"
    image_too_large = "image_too_large"
    image_unreadable = "image_unreadable"
    image_format_unsupported = "image_format_unsupported"
    image_truncated = "image_truncated"
    image_dimensions = "image_dimensions"
    url_invalid = "url_invalid"
    url_blocked = "url_blocked"
    fetch_failed = "fetch_failed"
    fetch_timeout = "fetch_timeout"
    # Processing.
    model_error = "model_error"
    out_of_memory = "out_of_memory"
    attempts_exhausted = "attempts_exhausted"
    cancelled = "cancelled"
    internal_error = "internal_error"
    # Review.
    already_decided = "already_decided"
    edit_refused = "edit_refused"


class CaptionError(Exception):
    """Root of captionq's own errors. ``code`` is what the client sees."""

    code: ErrorCode = ErrorCode.internal_error

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code.value


class TransientError(CaptionError):
    """Worth retrying: the same input may succeed later."""


class PermanentError(CaptionError):
    """Retrying cannot help: fail the job with ``code``."""

    code = ErrorCode.invalid_request


class RequestError(PermanentError):
    """A request that the API or the client refuses before anything is stored.

    ``status`` is the HTTP status the API answers with.
    """

    def __init__(self, message: str, *, code: ErrorCode, status: int = 422) -> None:
        super().__init__(message, code=code)
        self.status = status


class ImageError(PermanentError):
    """An image that cannot be fetched or decoded safely."""

    code = ErrorCode.image_unreadable
