"""A broker that cannot be reached is an outage every process waits out: written in one
line (the message's first line and the error), never as a traceback, by Celery's own
loggers as by the tasks; any other error keeps its traceback."""

from __future__ import annotations

import io
import json
import logging

import pytest
from celery.beat import SchedulingError
from kombu.exceptions import OperationalError
from redis.exceptions import AuthenticationError, MaxConnectionsError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schemas import broker, logs

pytestmark = pytest.mark.unit


def _written(error: BaseException, message: str, *args: object, json_lines: bool = True) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter() if json_lines else logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"test.outage.{id(stream)}")
    logger.propagate = False
    logger.addHandler(handler)
    logs.one_line(logger, broker.is_outage)
    logs.one_line(logger, broker.is_outage)  # once per handler, however often it is called
    assert len(handler.filters) == 1
    try:
        raise error
    except BaseException:
        logger.error(message, *args, exc_info=True)
    return stream.getvalue()


def _raised_from(cause: BaseException, error: BaseException) -> BaseException:
    try:
        raise error from cause
    except BaseException as exc:
        return exc


REFUSED = "Error 111 connecting to 127.0.0.1:6379. Connection refused."


@pytest.mark.parametrize(
    "error",
    [
        RedisConnectionError(REFUSED),
        RedisTimeoutError("Timeout reading from socket"),
        # what Celery's transport raises once its publish retries are spent
        _raised_from(RedisConnectionError(REFUSED), OperationalError(REFUSED)),
    ],
    ids=["redis", "redis-timeout", "kombu"],
)
def test_a_broker_outage_is_one_line(error: BaseException) -> None:
    line = json.loads(
        _written(error, "consumer: Connection to broker lost.\nTrying to re-establish %s", "it")
    )
    assert "exc" not in line
    assert line["message"] == (
        f"consumer: Connection to broker lost. ({type(error).__name__}: {error})"
    )


def test_an_error_already_in_the_message_is_not_said_twice() -> None:
    error = RedisConnectionError("Error 111 connecting to 127.0.0.1:6379.")
    text = _written(error, "Cannot connect: %s", error, json_lines=False)
    assert text == "Cannot connect: Error 111 connecting to 127.0.0.1:6379.\n"


@pytest.mark.parametrize(
    "error",
    [
        ResponseError("WRONGTYPE"),
        AuthenticationError("invalid username-password pair"),
        _raised_from(MaxConnectionsError("Too many connections"), OperationalError("pool")),
        OperationalError("not raised from an outage"),
        _raised_from(ValueError("a bug"), OperationalError("a bug")),
    ],
    ids=["redis-refused-a-command", "wrong-password", "pool-used-up", "kombu-alone",
         "kombu-from-a-bug"],
)
def test_any_other_error_keeps_its_traceback(error: BaseException) -> None:
    line = json.loads(_written(error, "a command was refused"))
    assert line["message"] == "a command was refused"
    assert "Traceback" in line["exc"]


def test_beats_error_for_a_task_it_could_not_send_is_an_outage() -> None:
    from worker.app import _broker_outage

    def scheduling_error(cause: BaseException) -> SchedulingError:
        try:
            try:
                raise cause
            except BaseException:
                raise SchedulingError(f"Couldn't apply scheduled task reap: {cause}") from None
        except SchedulingError as exc:
            return exc

    assert _broker_outage(
        scheduling_error(_raised_from(RedisConnectionError(REFUSED), OperationalError(REFUSED)))
    )
    assert not _broker_outage(scheduling_error(ValueError("a bug")))
    assert not _broker_outage(ValueError("a bug"))


def test_a_task_that_meets_the_broker_away_ends_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The broker away: one line saying what brings the work back; anything else is
    raised."""
    from worker.tasks import _until_the_broker_is_back

    away = _raised_from(RedisConnectionError(REFUSED), OperationalError(REFUSED))
    with _until_the_broker_is_back("job %s: the reaper publishes it", "job_1"):
        raise away
    lines = [r for r in caplog.records if "the broker is away" in r.getMessage()]
    assert [r.getMessage() for r in lines] == [
        f"the broker is away (OperationalError: {REFUSED}); job job_1: the reaper publishes it"
    ]
    assert all(r.exc_info is None for r in lines)
    with pytest.raises(ValueError, match="a bug"), _until_the_broker_is_back("never said"):
        raise ValueError("a bug")


def test_a_refused_password_is_told_apart_from_an_outage() -> None:
    """Redis refusing REDIS_URL's credentials is no outage to wait out: the command line
    says which setting to check, with the broker's code, and no traceback."""
    from producers.cli.errors import _unavailable

    wrong = _raised_from(AuthenticationError("invalid username-password pair"),
                         OperationalError("invalid username-password pair"))  # fmt: skip
    assert broker.refused(wrong)
    assert not broker.is_outage(wrong)
    told = _unavailable(wrong)
    assert told is not None
    assert told.code == "broker_unavailable"
    assert "refused its credentials" in str(told)
    assert not broker.refused(RedisConnectionError(REFUSED))
