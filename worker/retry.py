"""Retry or give up: decided here, for every error the worker meets.

The error tree (``schemas.errors``) says what an error is; :func:`decide` says what
to do about it: a :class:`Retry` after a countdown, or a :class:`GiveUp` with the
code the client sees. The caller acts on the value (arq's ``Retry``); the
countdown doubles with each attempt, with jitter, up to a cap (dramatiq's
``Retries`` middleware)::

    TransientError            Retry, until the attempts are spent;
                              then GiveUp(attempts_exhausted)
    PermanentError            GiveUp(its code)
    anything else (a bug)     GiveUp(internal_error)
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from schemas.errors import CaptionError, ErrorCode, TransientError

MAX_EXPONENT = 16  # 2**16 first delays: far past any cap


@dataclass(frozen=True)
class Backoff:
    """Delays that double with each attempt, from ``first_s`` up to ``max_s``.

    With ``jitter`` a delay is drawn from its upper half ("equal jitter"), so that jobs
    which failed together do not all come back together."""

    first_s: float
    max_s: float
    jitter: bool = True

    def delay_s(self, attempt: int, rng: random.Random | None = None) -> float:
        """The wait before trying again, after ``attempt`` tries (1: the first failed)."""
        delay = min(self.max_s, self.first_s * 2.0 ** min(max(attempt - 1, 0), MAX_EXPONENT))
        if not self.jitter:
            return delay
        return delay / 2 + (rng or random).uniform(0.0, delay / 2)


# A job whose batch failed transiently: 1-2 s after its first attempt, 2-4 s after its
# second, ... never more than a minute (far inside the broker's visibility timeout).
JOB_BACKOFF = Backoff(first_s=2.0, max_s=60.0)


@dataclass(frozen=True)
class Retry:
    countdown_s: float


@dataclass(frozen=True)
class GiveUp:
    code: ErrorCode
    message: str


def decide(
    error: BaseException,
    *,
    attempt: int,
    max_attempts: int | None,
    backoff: Backoff = JOB_BACKOFF,
    rng: random.Random | None = None,
) -> Retry | GiveUp:
    """Retry ``error`` after ``attempt`` tries, or give up (``max_attempts`` None: no
    bound, for work that costs no attempt, such as a claim that never happened)."""
    if _transient(error):
        if max_attempts is None or attempt < max_attempts:
            return Retry(backoff.delay_s(attempt, rng))
        return GiveUp(ErrorCode.attempts_exhausted,
                      f"gave up after {attempt} attempts: {_message(error)}")
    if isinstance(error, CaptionError):
        return GiveUp(error.code, error.message)
    return GiveUp(ErrorCode.internal_error, f"{type(error).__name__}: {error}")


def _transient(error: BaseException) -> bool:
    return isinstance(error, TransientError)


def _message(error: BaseException) -> str:
    return error.message if isinstance(error, CaptionError) else f"{type(error).__name__}: {error}"
