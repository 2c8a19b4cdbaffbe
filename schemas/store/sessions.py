"""Engines, sessions and migrations. Every side (API, client, worker, review) uses these."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import bindparam, event, insert, update
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlmodel import Session, create_engine

from schemas.store import sqlite_writers

MIGRATIONS = Path(__file__).parent.parent / "migrations"
_READ_ONLY = "captionq_read_only"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL and a busy timeout for several processes."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args=sqlite_writers.connect_args())
        event.listen(engine, "connect", sqlite_writers.on_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def _sqlite_begin(connection) -> None:  # type: ignore[no-untyped-def]
    """A writing transaction waits its turn in the queue of the database's writers
    (:mod:`schemas.store.sqlite_writers`), then takes SQLite's write lock at BEGIN: a
    deferred transaction that reads, then writes after another process committed, fails
    at once with "database is locked" instead of waiting. A read-only session
    (:func:`read_scope`) begins deferred: it reads a snapshot and neither waits for
    writers nor holds them up."""
    if connection.get_execution_options().get(_READ_ONLY, False):
        connection.exec_driver_sql("BEGIN")
        return
    raw = connection.connection.dbapi_connection
    try:
        raw.take_turn()
        connection.exec_driver_sql("BEGIN IMMEDIATE")  # SQLAlchemy's errors, as any other
    except BaseException:
        raw.give_turn_back()
        raise


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def engine_for(url: str) -> Engine:
    """One engine per URL per process (create after fork: call this lazily)."""
    engine = _engines.get(url)
    if engine is None:
        with _engines_lock:
            engine = _engines.get(url) or _engines.setdefault(url, make_engine(url))
    return engine


def dispose_engine(url: str) -> None:
    """Close the pooled connections of ``url``'s engine and forget it (a dropped database)."""
    engine = _engines.pop(url, None)
    if engine is not None:
        engine.dispose()


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine_for(url), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def update_rows(
    connection: Any,
    table: Any,
    rows: Mapping[Any, Mapping[str, object]],
    *,
    every: Mapping[str, object] | None = None,
) -> None:
    """Give each row (``rows``: primary key → its columns' new values) values of its
    own: one statement per set of columns (as a rule one), run for all its rows at once
    (the driver's executemany: a C loop on SQLite, a pipeline on PostgreSQL), on
    SQLite and PostgreSQL alike; rows in key order, so that two writers of the same rows
    lock them in the same order. ``every``: values (bound, not SQL) that every row gets."""
    groups: dict[tuple[str, ...], list[dict[str, object]]] = {}
    shared = {f"e_{column}": value for column, value in (every or {}).items()}
    for row_key in sorted(rows):
        values = rows[row_key]
        row = {"k_": row_key, **{f"v_{column}": value for column, value in values.items()},
               **shared}  # fmt: skip
        groups.setdefault(tuple(values), []).append(row)
    for columns, params in groups.items():
        connection.execute(_row_update(table, columns, tuple(every or ())), params)


def insert_rows(connection: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` into ``table`` in one executemany, with the INSERT built once per
    process for each table."""
    connection.execute(_insert(table), rows)


@lru_cache(maxsize=16)
def _insert(table: Any) -> Any:
    return insert(table)


@lru_cache(maxsize=16)
def _row_update(table: Any, columns: tuple[str, ...], every: tuple[str, ...]) -> Any:
    """The UPDATE of one row's ``columns`` and ``every``, built once per process for
    each set of columns (building it costs about as much CPU as running it)."""
    key = table.primary_key.columns.values()[0]
    return (
        update(table)
        .where(key == bindparam("k_", type_=key.type))
        .values(
            **{c: bindparam(f"v_{c}", type_=table.c[c].type) for c in columns},
            **{c: bindparam(f"e_{c}", type_=table.c[c].type) for c in every},
        )
    )


@contextmanager
def read_scope(url: str) -> Iterator[Session]:
    """A session that only reads. On SQLite it does not take the write lock, and its
    transaction is rolled back. On PostgreSQL its transaction is ``READ ONLY`` (the
    server refuses a write) and ends with a COMMIT: psycopg forgets a connection's
    prepared statements after a ROLLBACK, and the server would parse and plan every
    statement of the next sessions on it again. What it read stays readable after it,
    as read: the objects leave the session before it ends, which would expire them."""
    engine = engine_for(url)
    postgres = engine.dialect.name == "postgresql"
    options = {_READ_ONLY: True, **({"postgresql_readonly": True} if postgres else {})}
    with Session(engine.execution_options(**options), expire_on_commit=False) as session:
        try:
            yield session
            session.expunge_all()
            if postgres:
                session.commit()
            else:
                session.rollback()
        except BaseException:
            session.expunge_all()
            session.rollback()
            raise


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` with Alembic."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, revision)


# PostgreSQL SQLSTATEs of a server that is away, or refuses for now. Class 08: connection
# exceptions. 57P01 admin_shutdown (a restart, a failover, pg_terminate_backend),
# 57P02 crash_shutdown, 57P03 cannot_connect_now (starting up, in recovery), 53300
# too_many_connections. 40001 serialization_failure and 40P01 deadlock_detected are not
# outages, but the server's own answer to them is the same: run the transaction again.
OUTAGE_SQLSTATE_CLASSES = frozenset({"08"})
OUTAGE_SQLSTATES = frozenset({"57P01", "57P02", "57P03", "53300", "40001", "40P01"})
# SQLite: SQLITE_BUSY (5) and SQLITE_LOCKED (6), "database is locked": another writer
# held the lock past the busy timeout. Every other SQLite error, "operational" ones
# such as a missing table included, is not an outage.
SQLITE_OUTAGE_CODES = frozenset({5, 6})


def is_outage(error: BaseException) -> bool:
    """True when ``error`` says the database is briefly away (run the transaction again),
    not that the transaction is wrong: by the driver's error class and SQLSTATE."""
    if not isinstance(error, DBAPIError):
        return False
    if error.connection_invalidated:  # SQLAlchemy's dialect saw the connection drop
        return True
    sqlstate = getattr(error.orig, "sqlstate", None)  # psycopg
    if isinstance(sqlstate, str):
        return sqlstate[:2] in OUTAGE_SQLSTATE_CLASSES or sqlstate in OUTAGE_SQLSTATES
    sqlite_code = getattr(error.orig, "sqlite_errorcode", None)  # sqlite3 (primary code: low byte)
    if isinstance(sqlite_code, int):
        return sqlite_code & 0xFF in SQLITE_OUTAGE_CODES
    # A driver error with no server code at all: the client failed to reach or keep the
    # server (refused, reset, closed), which DB-API calls an OperationalError.
    return isinstance(error, OperationalError)
