"""A short transaction on a real PostgreSQL: an outage is run again in place, a database
error that is not one is raised at once, whatever its message says."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError

from schemas.store.sessions import session_scope
from schemas.tables import Marker
from worker.batch import with_db_retry


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    delays: list[float] = []
    monkeypatch.setattr(time, "sleep", delays.append)
    return delays


def test_a_unique_violation_that_names_a_connection_is_not_an_outage(
    postgres_url: str, slept: list[float]
) -> None:
    calls: list[int] = []

    def insert() -> None:
        calls.append(1)
        with session_scope(postgres_url) as session:
            session.add(Marker(name="connection-pool", value="x"))

    insert()
    with pytest.raises(IntegrityError, match="connection-pool"):
        with_db_retry(insert)
    assert len(calls) == 2  # the first insert, then one try of the duplicate
    assert slept == []


def test_a_statement_timeout_is_operational_but_not_an_outage(
    postgres_url: str, slept: list[float]
) -> None:
    calls: list[int] = []

    def slow() -> None:
        calls.append(1)
        with session_scope(postgres_url) as session:
            connection = session.connection()
            connection.execute(text("SET LOCAL statement_timeout = 50"))
            connection.execute(text("SELECT pg_sleep(2)"))

    with pytest.raises(OperationalError, match="statement timeout"):
        with_db_retry(slow)
    assert len(calls) == 1


def test_a_terminated_session_is_run_again(postgres_url: str, slept: list[float]) -> None:
    calls: list[int] = []

    def read() -> int:
        calls.append(1)
        with session_scope(postgres_url) as session:
            connection = session.connection()
            if len(calls) == 1:  # an administrator (or a failover) ends this session
                connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
            return int(connection.execute(text("SELECT 1")).scalar_one())

    assert with_db_retry(read) == 1
    assert len(calls) == 2
    assert len(slept) == 1
