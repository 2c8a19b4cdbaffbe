"""Read-only sessions (``read_scope``) on both databases: they never write, and on
PostgreSQL they leave the connection's prepared statements in place."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
from sqlalchemy.exc import InternalError
from sqlmodel import col, select

from schemas.store.sessions import dispose_engine, read_scope, session_scope
from schemas.store.tenants import ensure_tenant
from schemas.tables import Tenant


def test_a_read_scope_stores_nothing(database_url: str) -> None:
    # PostgreSQL's transaction is READ ONLY: the server refuses the write itself.
    # SQLite's is rolled back.
    refused = (
        pytest.raises(InternalError, match="read-only transaction")
        if database_url.startswith("postgresql")
        else nullcontext()
    )
    with refused, read_scope(database_url) as session:
        ensure_tenant(session=session, name="never-stored")
    with read_scope(database_url) as session:
        names = session.exec(select(Tenant.name)).all()
    assert "never-stored" not in names


def _prepared(url: str) -> int:
    with session_scope(url) as session:
        return (
            session.connection()
            .exec_driver_sql("SELECT count(*) FROM pg_prepared_statements")
            .scalar_one()
        )


def test_a_read_scope_keeps_the_connections_prepared_statements(postgres_url: str) -> None:
    """psycopg prepares a statement on a connection once it has run it a few times, and
    forgets them all (``DEALLOCATE ALL``) after a ROLLBACK. A read-only session that
    ended with one made the server parse and plan every statement again, each time."""
    dispose_engine(postgres_url)  # one pooled connection, used by each session in turn
    with session_scope(postgres_url) as session:
        ensure_tenant(session=session, name="prepared")
    for _ in range(8):
        with session_scope(postgres_url) as session:
            session.exec(select(Tenant.id).where(col(Tenant.name) == "prepared")).one()
    assert _prepared(postgres_url) >= 1
    with read_scope(postgres_url) as session:
        assert session.exec(select(Tenant.name)).all()
    assert _prepared(postgres_url) >= 1


@pytest.mark.parametrize("failing", [False, True])
def test_a_read_scope_leaves_the_next_session_a_writer(postgres_url: str, failing: bool) -> None:
    """The READ ONLY characteristic ends with the read-only session, failed or not."""
    dispose_engine(postgres_url)
    raised = pytest.raises(RuntimeError) if failing else nullcontext()
    with raised, read_scope(postgres_url) as session:
        session.exec(select(Tenant.name)).all()
        if failing:
            raise RuntimeError("a reader's own error")
    with session_scope(postgres_url) as session:
        ensure_tenant(session=session, name=f"written-after-{failing}")
    with read_scope(postgres_url) as session:
        assert session.exec(
            select(Tenant.name).where(col(Tenant.name) == f"written-after-{failing}")
        ).one()
