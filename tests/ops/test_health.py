"""Readiness means something: ``/readyz`` answers 200 only while the database and Redis
both answer, and names the one that is away (through a relay that is cut, as a network
would); ``/livez`` stays 200 throughout, so an outage never restarts the API."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient

from producers.api import create_app
from schemas.settings import ApiSettings
from tests.support.proxy import Relay


@pytest.fixture
def relays(postgres_url: str, redis_db: str) -> Iterator[dict[str, Relay]]:
    made = {
        "database": Relay(urlsplit(postgres_url).port or 5432),
        "redis": Relay(urlsplit(redis_db).port or 6379),
    }
    yield made
    for relay in made.values():
        relay.close()


@pytest.fixture
def http(postgres_url: str, redis_db: str, relays: dict[str, Relay]) -> Iterator[TestClient]:
    database = urlsplit(postgres_url)
    redis_url = urlsplit(redis_db)
    settings = ApiSettings(
        database_url=database._replace(netloc=f"postgres@127.0.0.1:{relays['database'].port}")
        .geturl(),
        redis_url=redis_url._replace(netloc=f"127.0.0.1:{relays['redis'].port}").geturl(),
    )
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize(
    ("away", "code"), [("database", "database_unavailable"), ("redis", "broker_unavailable")]
)
def test_readiness_fails_while_a_dependency_is_away(
    http: TestClient, relays: dict[str, Relay], away: str, code: str
) -> None:
    ready = http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "redis": "ok"}

    relays[away].cut()
    refused = http.get("/readyz")
    assert refused.status_code == 503, refused.text
    body = refused.json()
    assert body["error"]["code"] == code
    assert body["checks"][away] != "ok"
    assert [name for name, state in body["checks"].items() if state == "ok"] == [
        name for name in ("database", "redis") if name != away
    ]
    assert http.get("/livez").status_code == 200

    relays[away].restore()
    assert http.get("/readyz").status_code == 200
