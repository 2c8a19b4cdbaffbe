"""Alembic migrations and the SQLModel tables describe the same schema, on both databases."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlmodel import SQLModel

import schemas.tables  # noqa: F401
from schemas.store.sessions import dispose_engine, engine_for, migrate
from tests.support.services import postgres_database


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    migrate(database_url)  # idempotent at head
    with engine_for(database_url).connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), SQLModel.metadata)
    assert diff == []


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_0010_moves_queued_url_jobs_to_the_fetch_stage(kind: str, tmp_path: Path) -> None:
    """A URL job queued before the fetch stage has a caption message that no GPU worker
    fetches for any more: it becomes fetching with its lease lapsed (the reaper fetches
    it); inline and received jobs stay as they are."""
    urls = [f"sqlite:///{tmp_path / 'old.db'}"] if kind == "sqlite" else postgres_database()
    for url in urls:
        migrate(url, "0009")
        now = datetime.now(UTC).replace(tzinfo=None)
        with engine_for(url).begin() as connection:
            connection.execute(
                text("INSERT INTO tenant (id, name, webhook_secret_encrypted, banned_terms, "
                     "allow_domains, allow_handles, created_at) "
                     "VALUES ('ten_1', 'old', 'x', '[]', '[]', '[]', :now)"),
                {"now": now},
            )  # fmt: skip
            for job_id, status, sha, image_url in [
                ("job_url_queued", "queued", None, "https://images.example/a.png"),
                ("job_url_received", "received", None, "https://images.example/b.png"),
                ("job_inline_queued", "queued", "ab" * 32, None),
            ]:
                connection.execute(
                    text("INSERT INTO job (id, tenant_id, status, image_sha256, image_url, "
                         "styles, platforms, variants, request_hash, priority, meta, "
                         "attempts, created_at, updated_at) VALUES (:id, 'ten_1', :status, "
                         ":sha, :url, '[]', '[]', 1, 'h', 5, '{}', 0, :now, :now)"),
                    {"id": job_id, "status": status, "sha": sha, "url": image_url, "now": now},
                )  # fmt: skip
        migrate(url)
        with engine_for(url).connect() as connection:
            rows = connection.execute(
                text("SELECT id, status, fetch_attempts, lease_expires_at FROM job ORDER BY id")
            ).all()
        found = {row[0]: (row[1], row[2], row[3] is not None) for row in rows}
        assert found == {
            "job_inline_queued": ("queued", 0, False),
            "job_url_queued": ("fetching", 0, True),  # lapsed: the reaper fetches it
            "job_url_received": ("received", 0, False),  # the reaper publishes its fetch
        }
        dispose_engine(url)
