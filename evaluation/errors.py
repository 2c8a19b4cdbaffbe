"""Errors of the evaluation toolkit: the evaluation branch of the product's error tree.

Everything the toolkit refuses is an :class:`EvaluationError`, a
``PermanentError`` with a code from the product's one ``ErrorCode``
(``schemas.errors``): machine-readable and stable (scripts and CI match on
it), with a message that says what to fix. The command line prints
``error[code]: message`` and exits 2::

    EvaluationError
    ├── DatasetError      the data set or predictions cannot be used as given
    ├── ToolMissingError  a required external tool (Java, a jar) is absent
    └── ScorerError       an external scorer failed or broke its contract
"""

from __future__ import annotations

from schemas.errors import ErrorCode, PermanentError


class EvaluationError(PermanentError):
    """Root of the toolkit's errors: ``code`` for machines, ``message`` for people."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message, code=code)

    def __str__(self) -> str:
        return f"{self.code.value}: {self.message}"


class DatasetError(EvaluationError):
    """A data set, a prediction file or a judgement file that cannot be used."""


class ToolMissingError(EvaluationError):
    """An external tool that a metric needs is not installed."""


class ScorerError(EvaluationError):
    """An external scorer (a Java process) failed or answered out of contract."""
