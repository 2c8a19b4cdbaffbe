"""One place decides retry or give up: the table of worker.retry.decide; and what the
deliver task does when the database is away."""

from __future__ import annotations

import random

import psycopg.errors
import pytest
from sqlalchemy.exc import IntegrityError, OperationalError

from schemas.errors import ErrorCode, ImageError, PermanentError, TransientError
from schemas.messages import DeliverMessage
from schemas.store.outbox import Sent
from worker import retry, sender
from worker.errors import (
    ClaimError,
    ModelContractError,
    OutOfMemoryError,
    RetryLaterError,
    WorkerLostError,
)

pytestmark = pytest.mark.unit

OUTAGE = OperationalError("SELECT 1", {}, psycopg.errors.AdminShutdown("terminating"))
NOT_AN_OUTAGE = IntegrityError("INSERT", {}, psycopg.errors.UniqueViolation("duplicate key"))


@pytest.mark.parametrize(
    "error",
    [TransientError("blip"), OutOfMemoryError("oom"), ClaimError("refused"),
     WorkerLostError("gone"), OUTAGE],
    ids=["transient", "oom", "claim", "worker-lost", "db-outage"],
)
def test_the_transient_branch_and_a_database_outage_are_retried(error: Exception) -> None:
    decision = retry.decide(error, attempt=1, max_attempts=5)
    assert isinstance(decision, retry.Retry)
    assert 0 < decision.countdown_s <= retry.JOB_BACKOFF.max_s


def test_past_its_attempts_a_transient_error_is_given_up_with_attempts_exhausted() -> None:
    decision = retry.decide(TransientError("fetch timed out"), attempt=5, max_attempts=5)
    assert decision == retry.GiveUp(ErrorCode.attempts_exhausted,
                                    "gave up after 5 attempts: fetch timed out")
    assert isinstance(retry.decide(ClaimError("x"), attempt=99, max_attempts=None), retry.Retry)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ImageError("not an image"), ErrorCode.image_unreadable),
        (PermanentError("bad voice", code=ErrorCode.invalid_request), ErrorCode.invalid_request),
        (ModelContractError("model returned 7 outputs for 8 inputs"), ErrorCode.model_error),
        (NOT_AN_OUTAGE, ErrorCode.internal_error),
        (KeyError("a bug"), ErrorCode.internal_error),
    ],
    ids=["image", "permanent", "model-contract", "db-not-outage", "bug"],
)
def test_everything_else_is_given_up_at_once_with_its_code(
    error: Exception, code: ErrorCode
) -> None:
    decision = retry.decide(error, attempt=1, max_attempts=5)
    assert isinstance(decision, retry.GiveUp)
    assert decision.code == code


def test_the_backoff_doubles_is_capped_and_jittered_within_its_step() -> None:
    rng = random.Random(7)
    backoff = retry.Backoff(first_s=2.0, max_s=60.0)
    for attempt, (low, high) in enumerate([(1, 2), (2, 4), (4, 8), (8, 16), (16, 32)], 1):
        assert all(low <= backoff.delay_s(attempt, rng) <= high for _ in range(50))
    assert 30 <= backoff.delay_s(10_000, rng) <= 60
    exact = retry.Backoff(first_s=0.5, max_s=4.0, jitter=False)
    assert [exact.delay_s(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]


def _deliver_once(
    monkeypatch: pytest.MonkeyPatch, error: Exception | None, messages: list[DeliverMessage]
) -> list[list[str]]:
    """Run the deliver task once on these messages gathered together, with
    ``send_batch`` raising ``error``: the rows it was asked to send."""
    from celery_batches import SimpleRequest

    from worker import tasks

    sent: list[list[str]] = []

    def send_batch(ids: list[str], **_: object) -> Sent:
        sent.append(ids)
        if error is not None:
            raise error
        return Sent()  # sent nothing (what the real one returns)

    monkeypatch.setattr(sender, "send_batch", send_batch)
    requests = [
        SimpleRequest(id=f"r{n}", name="captionq.deliver", args=(message.model_dump(),),
                      kwargs={}, delivery_info={}, hostname="test", ignore_result=False,
                      reply_to=None, correlation_id=None, request_dict={})  # fmt: skip
        for n, message in enumerate(messages)
    ]
    tasks.deliver.run(requests)  # as celery-batches calls it with a flush
    return sent


def test_gathered_deliver_messages_are_sent_as_one_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    first = DeliverMessage(delivery_ids=["msg_1", "msg_2"], endpoint="e1")
    second = DeliverMessage(delivery_ids=["msg_3"], endpoint="e1")
    assert _deliver_once(monkeypatch, None, [first, second]) == [["msg_1", "msg_2", "msg_3"]]


def test_a_deliver_task_that_meets_the_database_away_leaves_its_rows_to_beat_in_one_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    messages = [DeliverMessage(delivery_ids=["msg_1", "msg_2"], endpoint="e1"),
                DeliverMessage(delivery_ids=["msg_3"], endpoint="e1")]  # fmt: skip
    with caplog.at_level("WARNING", logger="captionq.worker"):
        sent = _deliver_once(monkeypatch, OUTAGE, messages)  # raises nothing
    assert sent == [["msg_1", "msg_2", "msg_3"]]  # tried once, not again in the task
    (line,) = [r for r in caplog.records if r.levelname in ("WARNING", "ERROR")]
    assert "the database is away" in line.getMessage()
    assert "beat's dispatch sends these 3 callbacks again" in line.getMessage()
    assert line.exc_info is None  # an expected error: no traceback


def test_a_deliver_task_meeting_a_fault_raises_it(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(IntegrityError):  # not the database away: a fault, with its traceback
        _deliver_once(monkeypatch, NOT_AN_OUTAGE, [DeliverMessage(delivery_ids=["m"])])


# The fetch stage: its own budget, its own exhausted code, a server's Retry-After.


def test_a_fetch_past_its_own_attempts_fails_fetch_attempts_exhausted() -> None:
    error = TransientError("fetching images.example timed out", code=ErrorCode.fetch_timeout)
    kept = retry.decide(error, attempt=2, max_attempts=3, backoff=retry.FETCH_BACKOFF,
                        exhausted=ErrorCode.fetch_attempts_exhausted)  # fmt: skip
    assert isinstance(kept, retry.Retry)
    assert retry.FETCH_BACKOFF.max_s / 2 >= kept.countdown_s >= 5.0  # 2nd: 5-10 s
    spent = retry.decide(error, attempt=3, max_attempts=3, backoff=retry.FETCH_BACKOFF,
                         exhausted=ErrorCode.fetch_attempts_exhausted)  # fmt: skip
    assert isinstance(spent, retry.GiveUp)
    assert spent.code is ErrorCode.fetch_attempts_exhausted
    assert "timed out" in spent.message


@pytest.mark.parametrize(
    ("asked_s", "at_least_s", "at_most_s"),
    [(30.0, 30.0, 30.0), (0.0, 2.5, 5.0), (86400.0, retry.RETRY_AFTER_MAX_S,
                                           retry.RETRY_AFTER_MAX_S)],
    ids=["honoured", "shorter-than-backoff", "bounded"],
)
def test_retry_after_is_honoured_and_bounded(
    asked_s: float, at_least_s: float, at_most_s: float
) -> None:
    error = RetryLaterError("images.example answered HTTP 503", retry_after_s=asked_s)
    decision = retry.decide(error, attempt=1, max_attempts=3, backoff=retry.FETCH_BACKOFF,
                            rng=random.Random(1))  # fmt: skip
    assert isinstance(decision, retry.Retry)
    assert at_least_s <= decision.countdown_s <= at_most_s


@pytest.mark.parametrize(
    "code",
    [ErrorCode.fetch_refused, ErrorCode.url_blocked, ErrorCode.url_not_image,
     ErrorCode.image_unreadable],
)
def test_a_permanent_fetch_error_fails_at_once_with_its_code(code: ErrorCode) -> None:
    decision = retry.decide(PermanentError("no", code=code), attempt=1, max_attempts=3,
                            exhausted=ErrorCode.fetch_attempts_exhausted)  # fmt: skip
    assert decision == retry.GiveUp(code, "no")
