"""The worker's own errors, on the tree of ``schemas.errors``::

    CaptionError
    ├── TransientError
    │   ├── OutOfMemoryError     the accelerator ran out of memory for a batch
    │   ├── ClaimError           the database refused a batch's claim
    │   ├── RetryLaterError      an image server said when to ask again (Retry-After)
    │   └── WorkerLostError      a running job's worker is gone (the reaper's finding)
    └── PermanentError
        ├── ModelContractError   a model broke one-output-per-input (model_error)
        └── NoAcceleratorError   bench-batch without CUDA (accelerator_missing)
"""

from __future__ import annotations

from schemas.errors import ErrorCode, PermanentError, TransientError


class OutOfMemoryError(TransientError):
    """The accelerator ran out of memory for this batch: split it and try the halves."""

    code = ErrorCode.out_of_memory


class ClaimError(TransientError):
    """The database refused the claim: nothing of the batch was started."""


class RetryLaterError(TransientError):
    """An image server answered 429 or 503 with ``Retry-After``: ask again no sooner
    than ``retry_after_s`` (``worker.retry`` bounds it)."""

    code = ErrorCode.fetch_failed

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class WorkerLostError(TransientError):
    """The worker that ran a job is gone: killed, or past its lease or time limit."""


class ModelContractError(PermanentError, RuntimeError):
    """A model returned a different number of outputs than it was given inputs.

    Permanent: the same inputs given to the same model weights break it the same way
    (a bug in a backend or a model that drops or adds outputs), so a retry would spend
    an attempt and a GPU pass for nothing. It fails the batch's jobs with
    ``model_error``, whose message names the model and the counts. It is also a
    ``RuntimeError``, as it was before it joined the tree, so that code catching that
    around a model call (the evaluator's runs) still does.
    """

    code = ErrorCode.model_error


class NoAcceleratorError(PermanentError):
    """No accelerator to measure on: a batch size found on a CPU says nothing of a GPU."""

    code = ErrorCode.accelerator_missing
