"""Which database errors are a database that is briefly away (run the transaction again
in place) and which are not (raise at once), by driver error class and SQLSTATE, never
by the words of a message."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import psycopg.errors
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from sqlalchemy.exc import ProgrammingError as SQLProgrammingError

from worker import batch

pytestmark = pytest.mark.unit


def wrapped(error: Exception, kind: type[DBAPIError] = DBAPIError) -> DBAPIError:
    return kind("UPDATE job SET status = 'running'", {}, error)


def counting(error: DBAPIError, fail_times: int) -> tuple[Callable[[], str], list[int]]:
    calls: list[int] = []

    def operation() -> str:
        calls.append(1)
        if len(calls) <= fail_times:
            raise error
        return "done"

    return operation, calls


@pytest.fixture
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    return slept


@pytest.mark.parametrize(
    "error",
    [
        wrapped(psycopg.errors.UniqueViolation(
            'duplicate key value violates unique constraint "uq_connection_name"'), IntegrityError),
        wrapped(psycopg.errors.InvalidTextRepresentation(
            'invalid input syntax for type integer: "connection"'), DataError),
        wrapped(psycopg.errors.SyntaxError('syntax error at or near "connection"'),
                SQLProgrammingError),
    ],
    ids=["integrity", "data", "syntax"],
)
def test_a_database_error_that_is_not_an_outage_is_raised_at_once(
    error: DBAPIError, no_sleep: list[float]
) -> None:
    operation, calls = counting(error, fail_times=1)
    with pytest.raises(type(error)):
        batch.with_db_retry(operation)
    assert len(calls) == 1
    assert no_sleep == []


def sqlite_locked(tmp_path: Path) -> DBAPIError:
    """A real ``database is locked`` from SQLite, as SQLAlchemy raises it."""
    path = tmp_path / "locked.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER)")
    holder.execute("BEGIN IMMEDIATE")
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    try:
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO t VALUES (1)"))
    except OperationalError as exc:
        return exc
    finally:
        holder.close()
        engine.dispose()
    raise AssertionError("the database was not locked")


@pytest.mark.parametrize(
    "error",
    [
        wrapped(psycopg.errors.AdminShutdown(
            "terminating connection due to administrator command"), OperationalError),
        wrapped(psycopg.errors.CannotConnectNow("the database system is starting up"),
                OperationalError),
        wrapped(psycopg.errors.ConnectionFailure("server closed the link unexpectedly"),
                OperationalError),
        wrapped(psycopg.OperationalError("[Errno 111] refused"), OperationalError),
        "sqlite-locked",
    ],
    ids=["admin-shutdown", "starting-up", "08006", "refused", "sqlite-locked"],
)
def test_a_database_outage_is_run_again_in_place(
    error: DBAPIError | str, no_sleep: list[float], tmp_path: Path
) -> None:
    if error == "sqlite-locked":
        error = sqlite_locked(tmp_path)
    assert isinstance(error, DBAPIError)
    operation, calls = counting(error, fail_times=2)
    assert batch.with_db_retry(operation) == "done"
    assert len(calls) == 3
    assert len(no_sleep) == 2
    assert no_sleep[0] < no_sleep[1]


def test_a_sqlite_error_that_is_not_a_lock_is_not_an_outage(
    no_sleep: list[float], tmp_path: Path
) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT * FROM no_such_table"))
    except OperationalError as exc:  # SQLite calls a missing table "operational" too
        error = exc
    finally:
        engine.dispose()
    operation, calls = counting(error, fail_times=1)
    with pytest.raises(OperationalError):
        batch.with_db_retry(operation)
    assert len(calls) == 1
