"""The HTTP status of every error code: chosen here, at the API edge, and nowhere else.

The store and the checks raise errors with a stable :class:`ErrorCode`; what
a code means over HTTP is this table. A code not listed is a refused request
(422). The same table documents the error responses in the OpenAPI.
"""

from __future__ import annotations

from schemas.errors import ErrorCode

STATUSES: dict[ErrorCode, int] = {
    ErrorCode.invalid_json: 400,
    ErrorCode.unauthorized: 401,
    ErrorCode.forbidden: 403,
    ErrorCode.not_found: 404,
    ErrorCode.method_not_allowed: 405,
    ErrorCode.idempotency_conflict: 409,
    ErrorCode.idempotency_in_progress: 409,
    ErrorCode.job_not_cancellable: 409,
    ErrorCode.endpoint_exists: 409,
    ErrorCode.already_decided: 409,
    ErrorCode.payload_too_large: 413,
    ErrorCode.image_too_large: 413,
    ErrorCode.rate_limited: 429,
    ErrorCode.database_unavailable: 503,
    ErrorCode.broker_unavailable: 503,
    ErrorCode.settings_invalid: 500,  # never answered: the process does not start
}
REFUSED = 422

DOCUMENTED: dict[int, str] = {
    400: "The body is not JSON (invalid_json)",
    401: "Missing, invalid, revoked or expired API key",
    403: "The key lacks the scope",
    404: "No such resource for this tenant",
    409: "Conflict: this idempotency key was used with another body, or its request is"
    " still being created; the job"
    " has already started, the endpoint already exists, or the variant is already decided",
    413: "Body or image too large",
    422: "Refused request, with a stable error code",
    429: "Rate limited; see Retry-After",
    503: "A service captionq needs is unreachable; nothing was written. See Retry-After",
}


def status_for(code: ErrorCode) -> int:
    """The HTTP status that answers an error with ``code``."""
    return STATUSES.get(code, REFUSED)
