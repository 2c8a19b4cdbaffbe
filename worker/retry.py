"""Retry or give up: decided here, for every error the worker meets.

The error tree (``schemas.errors``) says what an error is; :func:`decide` says what
to do about it: a :class:`Retry` after a countdown, or a :class:`GiveUp` with the
code the client sees. The caller acts on the value (arq's ``Retry``); the
countdown doubles with each attempt, with jitter, up to a cap (dramatiq's
``Retries`` middleware)::

    TransientError            Retry (not before its retry_after_s, if it has one),
                              until the attempts are spent;
    a database outage         then GiveUp(exhausted: attempts_exhausted, or the
                              fetch stage's fetch_attempts_exhausted)
    PermanentError            GiveUp(its code)
    anything else: a bug, or  GiveUp(internal_error)
      a database error that
      is not an outage

A database outage is told by the driver's error class and SQLSTATE, never by the
words of a message (``schemas.store.sessions.is_outage``, which the API and the
command line use too). Where each decision is acted on:

    a job's outcome in a batch   worker.batch: Retry requeues the job and publishes
                                 it after the countdown of its own attempts
                                 (``Job.attempts``, up to ``job_max_attempts``);
                                 GiveUp fails it with the code
    a batch's claim refused      worker.tasks.caption: published again, each job at
                                 its own priority (a claim costs no attempt)
    a lost worker's jobs         worker.reaper.hand_back: published again, or failed
                                 past their attempts
    a short transaction          with_db_retry: run again in place while the
                                 database is away; anything else is raised
    a URL job's fetch            worker.fetching: Retry gives the fetch back and
                                 publishes it after the countdown of its own fetch
                                 attempts (``Job.fetch_attempts``, up to
                                 ``fetch_max_attempts``; a ``Retry-After`` honoured);
                                 GiveUp fails the job (``fetch_attempts_exhausted``
                                 once they are spent). A fetch over its cap of
                                 fetches in flight costs no attempt (SLOT_BACKOFF)
    a deliver task               worker.tasks.deliver: the database away, one line;
                                 its rows wait in the outbox for beat's dispatch

A callback's own POST attempts are not errors of the worker: the outbox records
each and follows its schedule to delivered or dead (``schemas.store.outbox``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.exc import DBAPIError

from schemas.errors import CaptionError, ErrorCode, TransientError
from schemas.store.sessions import is_outage

log = logging.getLogger("captionq.worker")
T = TypeVar("T")

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
# A short transaction while the database is away: 0.5, 1, 2, 4 s, then it is raised.
DATABASE_BACKOFF = Backoff(first_s=0.5, max_s=4.0, jitter=False)
DATABASE_ATTEMPTS = 5
# A batch whose claim the database refused: published again in 2.5-5 s, for as long as
# it refuses (a claim costs a job no attempt).
CLAIM_BACKOFF = Backoff(first_s=5.0, max_s=60.0)
# An image URL whose fetch failed transiently (a timeout, 5xx, a network error): 2.5-5 s,
# 5-10 s, ... up to 2 minutes, by the job's own fetch attempts (``fetch_max_attempts``).
FETCH_BACKOFF = Backoff(first_s=5.0, max_s=120.0)
# The longest ``Retry-After`` (429, 503) that is honoured as asked; a longer one waits this.
RETRY_AFTER_MAX_S = 300.0
# A fetch over its tenant's or host's cap of fetches in flight: published again in
# 0.5-1 s, costing no attempt, for as long as the cap is full.
SLOT_BACKOFF = Backoff(first_s=1.0, max_s=1.0)


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
    exhausted: ErrorCode = ErrorCode.attempts_exhausted,
    rng: random.Random | None = None,
) -> Retry | GiveUp:
    """Retry ``error`` after ``attempt`` tries, or give up (``max_attempts`` None: no
    bound, for work that costs no attempt, such as a claim that never happened), with
    ``exhausted`` once the attempts are spent. A server's ``Retry-After`` is honoured,
    up to ``RETRY_AFTER_MAX_S``."""
    if _transient(error):
        if max_attempts is None or attempt < max_attempts:
            # A server that said when to come back (an image or model server's
            # Retry-After) is not asked sooner, up to RETRY_AFTER_MAX_S.
            asked = min(getattr(error, "retry_after_s", None) or 0.0, RETRY_AFTER_MAX_S)
            return Retry(max(backoff.delay_s(attempt, rng), asked))
        return GiveUp(exhausted, f"gave up after {attempt} attempts: {_message(error)}")
    if isinstance(error, CaptionError):
        return GiveUp(error.code, error.message)
    return GiveUp(ErrorCode.internal_error, f"{type(error).__name__}: {error}")


def _transient(error: BaseException) -> bool:
    return isinstance(error, TransientError) or is_outage(error)


def with_db_retry(operation: Callable[[], T]) -> T:
    """Run a short transaction again, in place, while the database is briefly away; any
    other error is raised at once. Safe because every write in such a transaction is
    conditional (a second run changes nothing the first did)."""
    attempt = 1
    while True:
        try:
            return operation()
        except DBAPIError as exc:
            decision = decide(exc, attempt=attempt, max_attempts=DATABASE_ATTEMPTS,
                              backoff=DATABASE_BACKOFF)
            if isinstance(decision, GiveUp):
                raise
            log.warning("database unavailable (%s); retrying in %.1fs",
                        type(exc).__name__, decision.countdown_s)
            time.sleep(decision.countdown_s)
            attempt += 1


def _message(error: BaseException) -> str:
    return error.message if isinstance(error, CaptionError) else f"{type(error).__name__}: {error}"
