"""Errors and their stable codes: one :class:`ErrorCode` for the whole product.

Every failure a client can see carries an :class:`ErrorCode` (machine-readable,
stable across releases) and a human message. The hierarchy says what to do::

    CaptionError
    ├── TransientError       network, broker, database blips, CUDA out of memory:
    │   │                    retried with backoff, the job stays alive until it
    │   │                    has had its attempts, then fails attempts_exhausted
    │   ├── UnavailableError         the database, the broker or a model server is
    │   │                            away (API: 503); a model server's Retry-After
    │   │                            is its retry_after_s
    │   ├── OutOfMemoryError         (worker) the batch is halved and retried
    │   ├── ClaimError               (worker) the database refused a claim
    │   └── WorkerLostError          (worker) a running job's worker is gone
    └── PermanentError       bad image, bad request, policy: the job fails now,
        │                    with its code
        ├── RequestError     refused before anything is stored (API, client, CLI)
        │   └── RateLimitedError     (producers) over the rate or in-flight cap
        ├── ImageError       an image that cannot be fetched or decoded safely
        ├── ModelContractError       (worker) a model broke one output per input
        └── EvaluationError  (evaluation) the evaluation toolkit refuses:
            ├── DatasetError         a data set or predictions that cannot be used
            ├── ToolMissingError     a required external tool (Java, a jar) is absent
            └── ScorerError          an external scorer failed or broke its contract

Only the transient branch is retried, and of the errors outside the tree only a
database outage (told by its SQLSTATE); anything else is given up at once. One
function decides, ``worker.retry.decide``: for each job of a caption batch (backing
off by the job's own attempts, with jitter), a claim the database refused, the jobs
of a lost worker, a short transaction while the database is away, and the deliver
task. No task uses Celery's ``autoretry_for``: celery-batches acknowledges a
caption batch as a whole, so each job is published again on its own. No error here
knows HTTP: the API maps each code to its status (``producers.api.statuses``).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # Requests: refused before anything is stored, or a failed job.
    invalid_request = "invalid_request"
    invalid_json = "invalid_json"
    api_unavailable = "api_unavailable"  # the SDK got no answer from the API
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
    job_not_cancellable = "job_not_cancellable"
    endpoint_exists = "endpoint_exists"
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
    fetch_failed = "fetch_failed"  # a network error, a 408/429/5xx answer: retried
    fetch_timeout = "fetch_timeout"  # the whole fetch ran past FETCH_TIMEOUT_S: retried
    fetch_refused = "fetch_refused"  # an HTTP status a retry cannot mend (4xx, 501)
    url_not_image = "url_not_image"  # the URL answered something that is not an image
    fetch_attempts_exhausted = "fetch_attempts_exhausted"  # FETCH_MAX_ATTEMPTS spent
    image_not_fetched = "image_not_fetched"  # a GPU worker met a job without stored bytes
    # Processing.
    model_error = "model_error"
    # A served model (an OpenAI-compatible server): unreachable, 429 or 5xx (retried),
    # past the request deadline (retried), a 4xx refusal (permanent), and at worker
    # start, a server that does not serve the configured model (the worker refuses to start).
    model_server_unavailable = "model_server_unavailable"
    model_server_timeout = "model_server_timeout"
    model_request_refused = "model_request_refused"
    model_not_served = "model_not_served"
    out_of_memory = "out_of_memory"
    attempts_exhausted = "attempts_exhausted"
    cancelled = "cancelled"
    internal_error = "internal_error"
    # Review.
    already_decided = "already_decided"
    edit_refused = "edit_refused"
    # Operations (what the command line reports; the API answers 503 for these).
    tenant_exists = "tenant_exists"
    database_unavailable = "database_unavailable"
    broker_unavailable = "broker_unavailable"
    wait_timeout = "wait_timeout"
    settings_invalid = "settings_invalid"  # a process refuses to start
    accelerator_missing = "accelerator_missing"  # bench-batch needs CUDA
    # Evaluation (data sets, predictions, judgements, runs, external scorers; the
    # image and model codes above serve evaluation too).
    file_not_found = "file_not_found"
    unknown_format = "unknown_format"
    malformed = "malformed"
    duplicate_id = "duplicate_id"
    empty_references = "empty_references"
    missing_prediction = "missing_prediction"
    unknown_image = "unknown_image"
    mismatched_images = "mismatched_images"
    run_mismatch = "run_mismatch"
    java_missing = "java_missing"
    jar_missing = "jar_missing"
    scorer_failed = "scorer_failed"
    tenant_not_found = "tenant_not_found"
    no_decisions = "no_decisions"
    invalid_argument = "invalid_argument"


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


class UnavailableError(TransientError):
    """A service captionq depends on (the database, the broker, a model server) cannot be
    reached now; ``retry_after_s`` says when to try again (a job's retry waits at least
    that long)."""

    def __init__(self, message: str, *, code: ErrorCode, retry_after_s: float = 5.0) -> None:
        super().__init__(message, code=code)
        self.retry_after_s = retry_after_s


class PermanentError(CaptionError):
    """Retrying cannot help: fail the job with ``code``."""

    code = ErrorCode.invalid_request


class RequestError(PermanentError):
    """A request that the API, the client or the store refuses before anything is
    stored. Its ``code`` says why; the API chooses the HTTP status from it."""

    def __init__(self, message: str, *, code: ErrorCode) -> None:
        super().__init__(message, code=code)


class ImageError(PermanentError):
    """An image that cannot be fetched or decoded safely."""

    code = ErrorCode.image_unreadable
