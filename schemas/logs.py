"""Log lines: human-readable on a terminal, one JSON object per line elsewhere.

``LOG_FORMAT`` chooses: ``auto`` (JSON unless standard error is a terminal), ``json``
or ``text``. Every JSON line has the same schema (README, "Operations"):

    ts        ISO 8601 time, UTC, milliseconds
    level     debug, info, warning, error, critical
    logger    the logger's name (captionq.worker, captionq.api, celery.worker ...)
    message   the formatted message
    process   the process id
    and, where known: task, task_id, batch_id, job_id, tenant, attempt, exc (traceback),
    stages (a GPU batch's summary line: when each of its stages began, epoch seconds)

Context fields come from :func:`begin` (a context variable: each task begins with its
name, id or batch, for every line it logs), :func:`bind` (for a block), or a call's
``extra={"job_id": ...}``.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, Literal

CONTEXT_FIELDS = ("task", "task_id", "batch_id", "job_id", "tenant", "attempt", "stages")
TEXT_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s] %(name)s: %(message)s"
_context: ContextVar[dict[str, object]] = ContextVar("captionq_log_context", default={})  # noqa: B039

LogFormat = Literal["auto", "json", "text"]


def begin(**fields: object) -> None:
    """This thread's (or task's) lines carry ``fields`` from now on, and no others."""
    _context.set(dict(fields))


@contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Add ``fields`` to every line logged inside the block (this thread or task)."""
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        context = _context.get()
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is None:
                value = context.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def wants_json(log_format: LogFormat, stream: Any = None) -> bool:
    if log_format != "auto":
        return log_format == "json"
    stream = stream if stream is not None else sys.stderr
    return not (hasattr(stream, "isatty") and stream.isatty())


def use_format(logger: logging.Logger, log_format: LogFormat) -> None:
    """Give each of ``logger``'s handlers the format ``log_format`` asks for."""
    if not wants_json(log_format):
        return
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())


def error_line(error: BaseException) -> str:
    """An error in a line: its type and the first line of what it says."""
    return f"{type(error).__name__}: {error}".splitlines()[0]


class OneLine(logging.Filter):
    """Writes a record whose exception ``expected`` says is an outage to wait out (a
    broker away, say) as one line: the message's first line and the error, with no
    traceback. Other records pass as they are."""

    def __init__(self, expected: Callable[[BaseException], bool]) -> None:
        super().__init__()
        self._expected = expected

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if error is None or not self._expected(error):
            return True
        full = record.getMessage()
        message = full.splitlines()[0] if full else ""
        said = str(error)
        record.msg = message if said and said in message else f"{message} ({error_line(error)})"
        record.args = ()
        record.exc_info = record.exc_text = None
        return True


def one_line(logger: logging.Logger, expected: Callable[[BaseException], bool]) -> None:
    """Each of ``logger``'s handlers writes the outages ``expected`` names in one line
    (:class:`OneLine`)."""
    for handler in logger.handlers:
        if not any(isinstance(f, OneLine) for f in handler.filters):
            handler.addFilter(OneLine(expected))


def uvicorn_config(log_format: LogFormat) -> dict[str, Any] | None:
    """uvicorn's ``log_config`` for ``log_format`` (None: uvicorn's own, for a terminal)."""
    if not wants_json(log_format):
        return None
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {"default": handler},
        "root": {"handlers": ["default"], "level": "INFO"},
        "loggers": {
            "uvicorn": {"level": "INFO"},
            "uvicorn.error": {"level": "INFO"},
            "uvicorn.access": {"level": "INFO"},
        },
    }
