"""A short transaction on a real PostgreSQL: an outage is run again in place, a database
error that is not one is raised at once, whatever its message says."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError, OperationalError

from schemas.store.sessions import session_scope
from schemas.tables import Marker
from worker.batch import with_db_retry


@pytest.fixture
def slept(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    delays: list[float] = []
    monkeypatch.setattr(time, "sleep", delays.append)
    return delays


def transaction(
    url: str, body: Callable[[Connection, int], object]
) -> tuple[Callable[[], object], list[int]]:
    """``body(connection, try number)`` in a transaction of its own, and its tries."""
    tries: list[int] = []

    def run() -> object:
        tries.append(len(tries) + 1)
        with session_scope(url) as session:
            return body(session.connection(), tries[-1])

    return run, tries


def test_a_unique_violation_that_names_a_connection_is_not_an_outage(
    postgres_url: str, slept: list[float]
) -> None:
    with session_scope(postgres_url) as session:
        session.add(Marker(name="connection-pool", value="x"))

    def duplicate(connection: Connection, _: int) -> None:
        connection.execute(
            text("INSERT INTO marker (name, value, updated_at) "
                 "VALUES ('connection-pool', 'y', now())")
        )

    insert, tries = transaction(postgres_url, duplicate)
    with pytest.raises(IntegrityError, match="connection-pool"):
        with_db_retry(insert)
    assert tries == [1]
    assert slept == []


def test_a_statement_timeout_is_operational_but_not_an_outage(
    postgres_url: str, slept: list[float]
) -> None:
    def slow(connection: Connection, _: int) -> None:
        connection.execute(text("SET LOCAL statement_timeout = 50"))
        connection.execute(text("SELECT pg_sleep(2)"))

    run, tries = transaction(postgres_url, slow)
    with pytest.raises(OperationalError, match="statement timeout"):
        with_db_retry(run)
    assert tries == [1]


def test_a_terminated_session_is_run_again(postgres_url: str, slept: list[float]) -> None:
    def read(connection: Connection, attempt: int) -> int:
        if attempt == 1:  # an administrator (or a failover) ends this session
            connection.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        return int(connection.execute(text("SELECT 1")).scalar_one())

    run, tries = transaction(postgres_url, read)
    assert with_db_retry(run) == 1
    assert tries == [1, 2]
    assert len(slept) == 1
