"""How the command line fails: one line with a stable code, and an exit status to rely on.

An expected failure never prints a traceback. It prints ``error[CODE]: what happened``
on standard error (and, where it helps, what to do) and exits with one of:

    0  done
    1  refused: what was named does not exist, or is in a state that forbids it
    2  bad input: a usage error, or a request refused as given (fix it and retry)
    3  unavailable: the API, the database or the broker cannot be reached (retry later)
    4  timed out: ``--wait`` ran out before the job finished (the job goes on)

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Final, NoReturn

from rich.console import Console
from rich.markup import escape

from schemas.errors import CaptionError, ErrorCode

EXIT_OK: Final = 0
EXIT_REFUSED: Final = 1
EXIT_BAD_INPUT: Final = 2
EXIT_UNAVAILABLE: Final = 3
EXIT_TIMED_OUT: Final = 4

# Codes that mean "this thing cannot be done now", not "the input is wrong".
_REFUSED: Final = frozenset(
    {
        ErrorCode.not_found,
        ErrorCode.tenant_exists,
        ErrorCode.job_not_cancellable,
        ErrorCode.endpoint_exists,
        ErrorCode.idempotency_conflict,
        ErrorCode.idempotency_in_progress,
        ErrorCode.unauthorized,
        ErrorCode.forbidden,
        ErrorCode.cancelled,
        ErrorCode.attempts_exhausted,
        ErrorCode.accelerator_missing,
    }
)
_UNAVAILABLE: Final = frozenset(
    {
        ErrorCode.rate_limited,
        ErrorCode.database_unavailable,
        ErrorCode.broker_unavailable,
        ErrorCode.api_unavailable,
    }
)

stderr = Console(stderr=True, highlight=False, soft_wrap=True)


class CliError(CaptionError):
    """A failure found by the command line itself, with what to do about it."""

    def __init__(self, message: str, *, code: ErrorCode, hint: str | None = None) -> None:
        super().__init__(message, code=code)
        self.hint = hint


def exit_status(code: ErrorCode) -> int:
    if code in _UNAVAILABLE:
        return EXIT_UNAVAILABLE
    if code == ErrorCode.wait_timeout:
        return EXIT_TIMED_OUT
    if code in _REFUSED:
        return EXIT_REFUSED
    return EXIT_BAD_INPUT


def fail(message: str, *, code: ErrorCode, hint: str | None = None) -> NoReturn:
    raise CliError(message, code=code, hint=hint)


def expected(exc: BaseException) -> CliError | None:
    """``exc`` as the command line reports it, or None if it is a bug."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, CaptionError):
        return CliError(exc.message, code=exc.code)
    if isinstance(exc, TimeoutError):
        return CliError(
            str(exc),
            code=ErrorCode.wait_timeout,
            hint="the job goes on; read it with `captionq job`",
        )
    if isinstance(exc, FileNotFoundError):
        return CliError(f"no such file: {exc.filename}", code=ErrorCode.image_missing)
    return _settings(exc) or _unavailable(exc)


def _settings(exc: BaseException) -> CliError | None:
    """Settings the process cannot start with (``schemas.settings``): each problem named."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError) or not exc.title.endswith("Settings"):
        return None
    problems = "; ".join(
        (f"{'.'.join(map(str, e['loc'])).upper()}: " if e["loc"] else "")
        + str(e["msg"]).removeprefix("Value error, ")
        for e in exc.errors()
    )
    return CliError(f"cannot start: {problems}", code=ErrorCode.settings_invalid)


def _unavailable(exc: BaseException) -> CliError | None:
    """A database or broker that cannot be reached (imported here only when failing)."""
    from schemas import broker
    from schemas.settings import core_settings
    from schemas.store.sessions import is_outage

    settings = core_settings()
    if is_outage(exc):
        return CliError(
            f"cannot reach the database {_safe_url(settings.database_url)}: {_first_line(exc)}",
            code=ErrorCode.database_unavailable,
            hint="check DATABASE_URL and that the server runs, then retry",
        )
    if broker.refused(exc):
        return CliError(
            f"Redis at {_safe_url(settings.redis_url)} refused its credentials: "
            f"{_first_line(exc)}",
            code=ErrorCode.broker_unavailable,
            hint="check the user and password in REDIS_URL (and the user's ACL)",
        )
    if broker.is_outage(exc):
        return CliError(
            f"cannot reach Redis at {_safe_url(settings.redis_url)}: {_first_line(exc)}",
            code=ErrorCode.broker_unavailable,
            hint="check REDIS_URL and that Redis runs, then retry",
        )
    return None


def _safe_url(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy reads (a redis:// one with odd parts)
        return url.split("@")[-1]


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def report(error: CliError) -> int:
    stderr.print(f"[red]{escape(f'error[{error.code.value}]')}[/red]: {escape(error.message)}")
    if error.hint:
        stderr.print(f"  {escape(error.hint)}")
    return exit_status(error.code)


def run(command: Callable[[], object]) -> None:
    """Run the command line; expected failures become one line and an exit status."""
    try:
        command()
    except Exception as exc:
        error = expected(exc)
        if error is None:
            raise
        sys.exit(report(error))
