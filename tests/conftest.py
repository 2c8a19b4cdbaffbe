"""Shared fixtures, over the support code in ``tests/support`` (services, processes,
stack, receivers, servers, images): real services, owned by the test that made them.

Markers come from folders, so ``-m unit`` or ``-m integration`` select whole suites.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.support.receivers import Receiver
from tests.support.servers import CertAuthority, LoopbackServer, make_cert_authority
from tests.support.services import LOOPBACK, LOOPBACK_ENV, migrated_database, start_redis

if TYPE_CHECKING:
    from tests.support.stack import Stack

FOLDER_MARKERS = {
    "integration": "integration",
    "security": "unit",
    "models": "unit",
    "writing": "unit",
    "evaluation": "unit",
    "unit": "unit",
    "reliability": "reliability",
    "browser": "browser",
    "ops": "ops",
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.fspath)).parent.name
        marker = FOLDER_MARKERS.get(folder)
        if marker and not any(item.iter_markers(marker)):
            item.add_marker(marker)


SCENARIO = "fault scenario"  # a report's user property: one tally line


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[None]:
    """A fault scenario's tally lines ride on its test's report, so that they reach the
    summary from whichever process ran the test (pytest-xdist's workers too)."""
    outcome = yield
    scenarios = sys.modules.get("tests.reliability.scenarios")
    lines: list[str] = getattr(scenarios, "SCENARIO_REPORT", [])
    if lines:
        report = outcome.get_result()
        report.user_properties += [(SCENARIO, line) for line in lines]
        lines.clear()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The fault scenarios' tallies: jobs submitted / finished / lost / duplicated and
    callbacks expected / delivered / duplicate deliveries."""
    lines = [
        value
        for reports in terminalreporter.stats.values()
        for report in reports
        for name, value in getattr(report, "user_properties", ())
        if name == SCENARIO
    ]
    if lines:
        terminalreporter.section("fault scenarios")
        for line in lines:
            terminalreporter.write_line(line)


# --- services -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The session's own redis-server (or ``CAPTIONQ_TEST_REDIS_URL``)."""
    override = os.environ.get("CAPTIONQ_TEST_REDIS_URL")
    if override:
        yield override
        return
    server = start_redis()
    yield server.url
    server.stop()


@pytest.fixture(scope="module")
def redis_db(redis_url: str, request: pytest.FixtureRequest) -> str:
    """A Redis database of the session's own server, flushed for this module."""
    import redis

    index = abs(hash(request.module.__name__)) % 15 + 1
    url = redis_url.rsplit("/", 1)[0] + f"/{index}"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture(scope="module")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated, empty PostgreSQL database, for what only PostgreSQL can show."""
    yield from migrated_database("postgresql", tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def database_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated, empty database of each kind (module-scoped: one per test module)."""
    yield from migrated_database(request.param, tmp_path_factory.mktemp("db"))


@pytest.fixture(scope="session")
def tiny_blip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from worker.models.tiny import build_tiny_blip

    return build_tiny_blip(tmp_path_factory.mktemp("models") / "tiny-blip")


# --- the whole path -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack(
    database_url: str, redis_db: str, tiny_blip: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Tenant ``acme`` with its client and receiver, and one worker (tiny BLIP) on both
    queues, per database kind."""
    from schemas.settings import CoreSettings
    from tests.support.stack import Stack

    settings = CoreSettings(
        database_url=database_url, redis_url=redis_db, blob_store="db", **LOOPBACK
    )
    env = {
        "CAPTIONER_MODEL": str(tiny_blip),
        "MAX_NEW_TOKENS": "8",
        "HF_HUB_OFFLINE": "1",
        **LOOPBACK_ENV,
    }
    built = Stack.open(settings, env=env, logdir=tmp_path_factory.mktemp("worker"))
    try:
        built.start("all")
        yield built
    finally:
        built.stop()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    """Makes callback receivers (``receivers(secret, status=500)``), stopped after the test."""
    made: list[Receiver] = []

    def make(secret: str, **behaviour: Any) -> Receiver:
        made.append(Receiver(secret, **behaviour))
        return made[-1]

    yield make
    for receiver in made:
        receiver.stop()


# --- loopback image servers ---------------------------------------------------------------


@pytest.fixture
def http_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    yield server
    server.stop()


@pytest.fixture
def second_server() -> Iterator[LoopbackServer]:
    server = LoopbackServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def cert_authority(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    """A CA and a server certificate for ``images.test``, made with openssl."""
    made = make_cert_authority(tmp_path_factory.mktemp("ca"))
    if made is None:
        pytest.skip("openssl is not installed: TLS tests need it to make certificates")
    return made


@pytest.fixture
def https_server(cert_authority: CertAuthority) -> Iterator[LoopbackServer]:
    server = LoopbackServer("https", cert_authority.server_context())
    yield server
    server.stop()
