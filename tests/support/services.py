"""The real services a test owns, and what a missing one does.

- Redis: a ``redis-server`` started on a free loopback port (the demo's own
  ``RedisServer``), never a database the tests did not create; without the binary,
  Redis at 127.0.0.1:6379 is used only if ``CAPTIONQ_TEST_REDIS_URL`` names a database.
- Databases: a SQLite file, or a PostgreSQL database created and dropped for the test
  on 127.0.0.1:5432 (``CAPTIONQ_TEST_PG_URL`` overrides the server); both migrated.
- A missing service skips locally and fails in CI (``CI=true``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import pytest
from cryptography.fernet import Fernet

if TYPE_CHECKING:
    from producers.redis_server import RedisServer

IN_CI = os.environ.get("CI") == "true"
PG_SERVER = os.environ.get("CAPTIONQ_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432")
# Encrypts webhook secrets at rest where a test gives its workers a key of their own.
SECRETS_KEY = Fernet.generate_key().decode()


def unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


def start_redis() -> RedisServer:
    from producers.redis_server import RedisServer

    try:
        return RedisServer.start()
    except RuntimeError as exc:
        unavailable(str(exc))


def postgres_database() -> Iterator[str]:
    """An empty PostgreSQL database of its own, dropped when the generator ends."""
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


def migrated_database(kind: str, folder: Path) -> Iterator[str]:
    """A migrated, empty database: ``sqlite`` (a file in ``folder``) or ``postgresql``."""
    from schemas.store.sessions import migrate

    if kind == "sqlite":
        url = f"sqlite:///{folder / 'captionq.db'}"
        migrate(url)
        yield url
        return
    for url in postgres_database():
        migrate(url)
        yield url


# Receivers and image servers in tests listen on loopback, on ports the system picks:
# the settings (and the processes' environment) that let URLs reach them.
LOOPBACK: dict[str, object] = {
    "url_allow_cidrs": ["127.0.0.0/8"],
    "url_allowed_ports": ["1024-65535"],
}
LOOPBACK_ENV = {"URL_ALLOW_CIDRS": '["127.0.0.0/8"]', "URL_ALLOWED_PORTS": '["1024-65535"]'}
