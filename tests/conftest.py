"""Shared fixtures: real services, owned by the test session.

- Redis: a ``redis-server`` the session starts on a free loopback port (never a
  database the tests did not create); without the binary, Redis at
  127.0.0.1:6379 is used only if ``CAPTIONQ_TEST_REDIS_URL`` names a database.
- Databases: a SQLite file, and a PostgreSQL database created and dropped per
  session on 127.0.0.1:5432 (``CAPTIONQ_TEST_PG_URL`` overrides the server).
- A missing service skips locally and fails in CI (``CI=true``).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_CI = os.environ.get("CI") == "true"
PG_SERVER = os.environ.get("CAPTIONQ_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")

FOLDER_MARKERS = {
    "integration": "integration",
    "security": "unit",
    "models": "unit",
    "writing": "unit",
    "evaluation": "unit",
    "unit": "unit",
    "reliability": "reliability",
    "browser": "browser",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers by folder, so ``-m unit`` or ``-m integration`` select whole suites."""
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        marker = FOLDER_MARKERS.get(folder)
        if marker and not any(item.iter_markers(marker)):
            item.add_marker(marker)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault scenarios' tallies: jobs submitted / finished / lost / duplicated and
    callbacks expected / delivered / duplicate deliveries."""
    harness = sys.modules.get("tests.reliability.harness")
    lines = getattr(harness, "SCENARIO_REPORT", [])
    if lines:
        terminalreporter.section("fault scenarios")
        for line in lines:
            terminalreporter.write_line(line)


def unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    from producers.demo import RedisServer

    override = os.environ.get("CAPTIONQ_TEST_REDIS_URL")
    if override:
        yield override
        return
    try:
        server = RedisServer.start()
    except RuntimeError as exc:
        unavailable(str(exc))
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from worker.models.tiny import build_tiny_blip

    return build_tiny_blip(tmp_path_factory.mktemp("models") / "tiny-blip")


def _postgres_database() -> Iterator[str]:
    import psycopg

    name = f"captionq_test_{uuid.uuid4().hex[:12]}"
    admin = PG_SERVER.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        unavailable(f"PostgreSQL at {PG_SERVER} unavailable: {exc}")
    url = f"{PG_SERVER}/{name}"
    try:
        yield url
    finally:
        from schemas.store.sessions import dispose_engine

        dispose_engine(url)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """A migrated, empty PostgreSQL database, for what only PostgreSQL can show."""
    from schemas.store.sessions import migrate

    for url in _postgres_database():
        migrate(url)
        yield url


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated, empty database of each kind (module-scoped: one per test module)."""
    from schemas.store.sessions import migrate

    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'captionq.db'}"
        migrate(url)
        yield url
        return
    for url in _postgres_database():
        migrate(url)
        yield url
