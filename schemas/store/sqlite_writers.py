"""SQLite's writers, queued: every transaction that writes waits its turn on a lock file
beside the database, then takes SQLite's write lock at ``BEGIN IMMEDIATE``.

SQLite has one write lock for the whole database and no queue for it: a writer that
finds it taken is told "busy" and must try again, and SQLite's own busy handler sleeps
ever longer between tries (1, 2, 5 ... 100 ms), so that a waiter slept through the
lock's release again and again while newcomers took it; trying again in short steps
instead spends a core on trying while the holder wants one to finish. Here each pooled
connection opens the lock file beside the database (``<database>-writers``) for itself
and takes an exclusive ``flock`` on it before ``BEGIN IMMEDIATE``: the kernel puts the
waiter to sleep and wakes it the moment the turn is free, across every thread and
process on the host sharing the database, and releases a dead process's turn with the
process. The turn is given back when the transaction ends (commit, rollback, or the
connection closed); a writer in the queue waits for as long as the turns before it
last, each one transaction. (So a transaction must never wait for another writer of its
own thread: none in captionq nests one write transaction in another.)

A writer of another program (a ``sqlite3`` shell) is not in the queue: a writer that
finds the lock held by one waits as SQLite's busy timeout says (``SQLITE_BUSY_TIMEOUT_S``),
then fails with "database is locked", an outage to retry. A read-only transaction
neither queues nor takes the lock: it reads a snapshot.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import weakref
from typing import Any

SQLITE_BUSY_TIMEOUT_S = 30.0  # how long a writer waits for a writer outside the queue


class QueuedConnection(sqlite3.Connection):
    """A ``sqlite3`` connection whose write transactions queue on the database's lock
    file (made with ``sqlite3.connect(..., factory=QueuedConnection)``). A turn belongs
    to the connection, not to a thread: a session's commit may run on another thread
    than its statements (a web framework's dependency teardown)."""

    def __init__(self, database: Any, *args: Any, **kwargs: Any) -> None:
        self._turn_fd: int | None = None
        self._turn_path: str | None = None
        self._has_turn = False
        super().__init__(database, *args, **kwargs)
        path = os.fspath(database)
        if path not in ("", ":memory:") and not path.startswith("file:"):
            self._turn_path = os.path.abspath(f"{path}-writers")
            self._turn_fd = _open_turn_file(self._turn_path, database=path)
            _open.add(self)

    def take_turn(self) -> None:
        """Wait until it is this connection's turn to write (the caller then begins its
        transaction with ``BEGIN IMMEDIATE``); the turn is given back when it ends."""
        if self._turn_fd is None or self._has_turn:
            return
        self._has_turn = True  # first: if the wait is interrupted, giving back undoes it
        fcntl.flock(self._turn_fd, fcntl.LOCK_EX)  # sleeps, without the GIL, until free

    def give_turn_back(self) -> None:
        """Let the next writer go (called when the transaction ends, or never began)."""
        if self._has_turn and self._turn_fd is not None:
            self._has_turn = False
            fcntl.flock(self._turn_fd, fcntl.LOCK_UN)

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._ended()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._ended()

    def _ended(self) -> None:
        """After a commit or rollback: the turn goes back once no transaction is left
        (one that failed to commit still holds the lock, until its rollback)."""
        if not self.in_transaction:
            self.give_turn_back()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._close_turn_file()

    def __del__(self) -> None:  # a connection dropped unclosed must not keep its turn
        self._close_turn_file()

    def _close_turn_file(self) -> None:
        fd, self._turn_fd, self._has_turn = self._turn_fd, None, False
        if fd is not None:
            os.close(fd)  # gives back the turn with it

    def _forked(self) -> None:
        """In a forked child: the inherited descriptor shares the parent's lock (a turn
        either takes would be both's, and live on in the other after a death); the
        child gets one of its own."""
        if self._turn_fd is not None and self._turn_path is not None:
            os.close(self._turn_fd)
            self._turn_fd, self._has_turn = os.open(self._turn_path, os.O_RDONLY), False


_open: weakref.WeakSet[QueuedConnection] = weakref.WeakSet()
os.register_at_fork(after_in_child=lambda: [c._forked() for c in list(_open)])


def _open_turn_file(path: str, *, database: str) -> int:
    """The lock file, opened read-only (enough for ``flock``); made, if it is not
    there, with the database's permissions, as SQLite makes its -wal and -shm files,
    whatever the umask, so that every user who may write the database may queue."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return os.open(path, os.O_RDONLY)
    os.fchmod(fd, os.stat(database).st_mode & 0o777 if os.path.exists(database) else 0o644)
    return fd


def connect_args() -> dict[str, object]:
    """``sqlite3.connect`` arguments for an engine whose writers queue."""
    return {"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False,
            "factory": QueuedConnection}  # fmt: skip


def on_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    # SQLAlchemy, not the driver, begins transactions (schemas.store.sessions).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a crash of any process loses nothing; a power cut may lose the
    # last commits, never corrupts. PostgreSQL is the database for durable production.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000:.0f}")
    cursor.close()
