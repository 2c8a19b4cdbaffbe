"""Engines, sessions and migrations. Every side (API, client, worker, review) uses these."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import case, event, literal
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, create_engine

MIGRATIONS = Path(__file__).parent.parent / "migrations"
_READ_ONLY = "captionq_read_only"


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite files get WAL and a busy timeout for several processes."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin_immediate)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10)


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # SQLAlchemy, not the driver, begins transactions (see _sqlite_begin_immediate).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # WAL + NORMAL: a crash of any process loses nothing; a power cut may lose the
    # last commits, never corrupts. PostgreSQL is the database for durable production.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin_immediate(connection) -> None:  # type: ignore[no-untyped-def]
    """Take SQLite's write lock at BEGIN. A deferred transaction that reads, then writes
    after another process committed, fails at once with "database is locked" instead of
    waiting; taking the lock up front makes every writer wait its turn (busy_timeout).
    A read-only session (:func:`read_scope`) begins deferred: it reads a snapshot and
    neither waits for writers nor holds them up."""
    read_only = connection.get_execution_options().get(_READ_ONLY, False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


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


def per_row(key: Any, column: Any, values: Mapping[Any, object]) -> Any:
    """``column``'s new value for each row, by its ``key``, as one SQL expression
    (``CASE key WHEN ... THEN ... ELSE column END``): an UPDATE of many rows with
    values of their own is then one statement, on SQLite and PostgreSQL alike."""
    whens = {k: literal(v, column.type) for k, v in values.items()}
    return case(whens, value=key, else_=column)


@contextmanager
def read_scope(url: str) -> Iterator[Session]:
    """A session that only reads (its transaction is rolled back at the end). On SQLite
    it does not take the write lock."""
    engine = engine_for(url).execution_options(**{_READ_ONLY: True})
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
        finally:
            session.rollback()


def migrate(url: str, revision: str = "head") -> None:
    """Bring the database at ``url`` to ``revision`` with Alembic."""
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, revision)
