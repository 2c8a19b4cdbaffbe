"""Errors of the evaluation toolkit, each with a stable code.

Everything the toolkit refuses is an :class:`EvaluationError`: the ``code`` is
machine-readable and stable (scripts and CI match on it), the message says
what to fix. The command line prints ``error[code]: message`` and exits 2::

    EvaluationError
    ├── DatasetError      the data set or predictions cannot be used as given
    ├── ToolMissingError  a required external tool (Java, a jar) is absent
    └── ScorerError       an external scorer failed or broke its contract
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # Data sets, predictions, judgements.
    file_not_found = "file_not_found"
    unknown_format = "unknown_format"
    malformed = "malformed"
    duplicate_id = "duplicate_id"
    empty_references = "empty_references"
    image_missing = "image_missing"
    image_unreadable = "image_unreadable"
    missing_prediction = "missing_prediction"
    unknown_image = "unknown_image"
    mismatched_images = "mismatched_images"
    # Runs.
    run_mismatch = "run_mismatch"
    model_error = "model_error"
    # Tools and scorers.
    java_missing = "java_missing"
    jar_missing = "jar_missing"
    scorer_failed = "scorer_failed"
    # Calibration.
    tenant_not_found = "tenant_not_found"
    no_decisions = "no_decisions"
    invalid_argument = "invalid_argument"


class EvaluationError(Exception):
    """Root of the toolkit's errors: ``code`` for machines, ``message`` for people."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code.value}: {message}")
        self.code = code
        self.message = message


class DatasetError(EvaluationError):
    """A data set, a prediction file or a judgement file that cannot be used."""


class ToolMissingError(EvaluationError):
    """An external tool that a metric needs is not installed."""


class ScorerError(EvaluationError):
    """An external scorer (a Java process) failed or answered out of contract."""
