"""Worker-side errors, on the hierarchy of ``schemas.errors``."""

from __future__ import annotations

from schemas.errors import ErrorCode, TransientError


class OutOfMemoryError(TransientError):
    """The accelerator ran out of memory for this batch: split it and try the halves."""

    code = ErrorCode.out_of_memory
