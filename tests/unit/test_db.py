"""Sessions on SQLite: writers wait their turn in a queue (asleep), then take the lock at
BEGIN; readers never wait for it."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from schemas.store import sqlite_writers
from schemas.store.sessions import (
    dispose_engine,
    engine_for,
    is_outage,
    migrate,
    read_scope,
    session_scope,
)
from schemas.store.sqlite_writers import QueuedConnection
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


def _outside_the_queue(url: str) -> sqlite3.Connection:
    """Another program's writer (a ``sqlite3`` shell): a plain connection in a write
    transaction, not in the queue of captionq's writers."""
    holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def _in_the_queue(url: str) -> QueuedConnection:
    """Another captionq writer, as the queue sees it (a connection of its own: another
    thread's or process's), holding its turn and SQLite's write lock."""
    holder = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None,
                             factory=QueuedConnection)  # fmt: skip
    holder.take_turn()
    holder.execute("BEGIN IMMEDIATE")
    return holder


def _write_in_a_thread(url: str, name: str) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def write() -> None:
        try:
            with session_scope(url) as writer:
                ensure_tenant(session=writer, name=name)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread, errors


def _names(url: str) -> list[str]:
    with read_scope(url) as reader:
        return sorted(reader.exec(select(Tenant.name)).all())


def test_a_writer_waits_its_turn_asleep_and_begins_once_the_holder_commits(url: str) -> None:
    """A writer behind another waits in the kernel, not trying the lock again and again:
    it spends no CPU while it waits, and begins with one ``BEGIN IMMEDIATE``, as soon as
    the holder commits."""
    statements: list[str] = []
    event.listen(engine_for(url), "connect", lambda raw, _: raw.set_trace_callback(statements.append))  # noqa: E501
    holder = _in_the_queue(url)
    cpu0 = time.process_time()
    thread, errors = _write_in_a_thread(url, "waited")
    thread.join(0.5)
    assert thread.is_alive()  # still waiting its turn
    assert time.process_time() - cpu0 < 0.1  # asleep (trying every 0.5 ms spends ~0.2 s)
    assert _names(url) == []
    holder.commit()
    thread.join(10)
    assert not thread.is_alive()
    assert errors == []
    assert statements.count("BEGIN IMMEDIATE") == 1
    assert _names(url) == ["waited"]
    holder.close()


@pytest.mark.parametrize("forked", [False, True], ids=["alone", "after-a-fork"])
def test_a_writer_killed_holding_its_turn_lets_the_next_one_write(url: str, forked: bool) -> None:
    """The kernel gives back a dead process's turn (a worker SIGKILLed mid-transaction),
    also when the process had forked a child that lives on (a pool's): the child's
    inherited descriptor does not keep the turn alive."""
    path = url.removeprefix("sqlite:///")
    holder = subprocess.Popen(
        [sys.executable, "-c", (
            "import os, sqlite3, time\n"
            "from schemas.store.sqlite_writers import QueuedConnection\n"
            f"c = sqlite3.connect({path!r}, isolation_level=None, factory=QueuedConnection)\n"
            f"child = os.fork() if {forked} else -1\n"
            "if child == 0:\n"
            "    time.sleep(60); os._exit(0)\n"
            "c.take_turn(); c.execute('BEGIN IMMEDIATE')\n"
            "print(child, flush=True); time.sleep(60)\n"
        )],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None
    child = int(holder.stdout.readline())
    try:
        thread, errors = _write_in_a_thread(url, "after")
        thread.join(0.3)
        assert thread.is_alive()
        holder.kill()
        holder.wait()
        thread.join(10)
        assert not thread.is_alive()
        assert errors == []
    finally:
        if child > 0:
            os.kill(child, signal.SIGKILL)
        holder.communicate()  # a child holds the pipe too
    assert _names(url) == ["after"]


def test_a_turn_is_the_connections_not_its_threads(url: str) -> None:
    """A session's commit may run on another thread than its statements (FastAPI's
    dependency teardown): the thread that wrote may meanwhile begin another writer,
    which waits for that commit, and both rows are written."""
    first = _session_holding_a_turn(url, "first")
    threading.Timer(0.3, first.commit).start()  # the teardown, on another thread
    with session_scope(url) as second:
        ensure_tenant(session=second, name="second")
    first.close()
    assert _names(url) == ["first", "second"]


def _session_holding_a_turn(url: str, name: str) -> Session:
    session = Session(engine_for(url), expire_on_commit=False)
    ensure_tenant(session=session, name=name)
    session.flush()  # written: the session holds its turn until it commits
    return session


def test_the_lock_file_has_the_databases_permissions_whatever_the_umask(tmp_path: Path) -> None:
    database = tmp_path / "shared.sqlite"
    sqlite3.connect(database).close()
    database.chmod(0o660)
    umask = os.umask(0o077)
    try:
        sqlite3.connect(database, factory=QueuedConnection).close()
    finally:
        os.umask(umask)
    assert (tmp_path / "shared.sqlite-writers").stat().st_mode & 0o777 == 0o660


def test_a_writer_outside_the_queue_is_waited_for_then_fails_as_an_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer of another program holds SQLite's lock outside the queue: a writer waits
    for it as SQLite's busy timeout says, then fails as an outage; its turn is given
    back, and the connection writes again once the lock is free."""
    monkeypatch.setattr(sqlite_writers, "SQLITE_BUSY_TIMEOUT_S", 0.2)
    database = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(database)
    holder = _outside_the_queue(database)
    try:
        with (
            pytest.raises(OperationalError, match="database is locked") as raised,
            session_scope(database) as writer,
        ):
            ensure_tenant(session=writer, name="never")
    finally:
        holder.close()
    assert is_outage(raised.value)
    thread, errors = _write_in_a_thread(database, "later")
    thread.join(10)
    assert not thread.is_alive()
    assert errors == []
    assert _names(database) == ["later"]
    dispose_engine(database)
