"""Alembic migrations and the SQLModel tables describe the same schema, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import schemas.tables  # noqa: F401
from schemas.store.sessions import engine_for, migrate


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    migrate(database_url)  # idempotent at head
    with engine_for(database_url).connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert diff == []
