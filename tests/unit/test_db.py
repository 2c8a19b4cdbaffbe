"""Sessions on SQLite: writers take the lock at BEGIN (waiting for it in short steps),
readers never wait for it."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import select

from schemas.store import sessions
from schemas.store.sessions import (
    dispose_engine,
    is_outage,
    migrate,
    read_scope,
    session_scope,
)
from schemas.store.tenants import ensure_tenant
from schemas.tables import Tenant


@pytest.fixture
def url(tmp_path: Path) -> Iterator[str]:
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(database)
    yield database
    dispose_engine(database)


def test_a_read_scope_reads_while_a_writer_holds_the_lock(url: str) -> None:
    with session_scope(url) as writer:
        ensure_tenant(session=writer, name="first")
    with session_scope(url) as writer:
        ensure_tenant(session=writer, name="second")  # holds the write lock from here
        started = time.monotonic()
        with read_scope(url) as reader:
            names = reader.exec(select(Tenant.name)).all()
        assert time.monotonic() - started < 1.0  # did not wait for the writer
        assert names == ["first"]  # the last committed snapshot


def test_a_read_scope_writes_nothing(url: str) -> None:
    with read_scope(url) as session:
        ensure_tenant(session=session, name="ghost")
    with read_scope(url) as session:
        assert session.exec(select(Tenant)).all() == []


def _holding_the_write_lock(url: str) -> sqlite3.Connection:
    """Another process's writer, as SQLite sees it: a connection of its own in a write
    transaction."""
    holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_writer_waits_for_the_lock_in_short_steps_then_writes(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer that finds the lock taken tries again every ``BEGIN_POLL_S``, not after
    SQLite's ever longer sleeps (up to 100 ms), and writes once the holder commits;
    every other statement keeps SQLite's own timeout."""
    holder = _holding_the_write_lock(url)
    pauses: list[float] = []
    sleep = time.sleep

    def pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 5:
            holder.commit()
        sleep(seconds)

    monkeypatch.setattr(sessions.time, "sleep", pause)
    with session_scope(url) as writer:
        ensure_tenant(session=writer, name="waited")
        timeout_ms = writer.connection().exec_driver_sql("PRAGMA busy_timeout").scalar()
    holder.close()
    assert pauses == [sessions.BEGIN_POLL_S] * 5
    assert timeout_ms == sessions.SQLITE_BUSY_TIMEOUT_S * 1000
    with read_scope(url) as reader:
        assert reader.exec(select(Tenant.name)).all() == ["waited"]


def test_a_writer_that_never_gets_the_lock_fails_as_an_outage(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sessions, "SQLITE_BUSY_TIMEOUT_S", 0.2)
    holder = _holding_the_write_lock(url)
    try:
        with (
            pytest.raises(OperationalError, match="database is locked") as raised,
            session_scope(url) as writer,
        ):
            ensure_tenant(session=writer, name="never")
    finally:
        holder.close()
    assert is_outage(raised.value)
    with session_scope(url) as writer:  # the connection is usable again, with its timeout
        ensure_tenant(session=writer, name="later")
        timeout_ms = writer.connection().exec_driver_sql("PRAGMA busy_timeout").scalar()
    assert timeout_ms == 200
