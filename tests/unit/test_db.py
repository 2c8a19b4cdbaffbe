"""Sessions on SQLite: writers take the lock at BEGIN, readers never wait for it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlmodel import select

from schemas.store.sessions import dispose_engine, migrate, read_scope, session_scope
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
