"""Browser tests: Debian's Chromium driven by Playwright, against real services.

The stack: the shared one (``tests/conftest.py``: a real Celery worker with a tiny
BLIP, a callback receiver that verifies every signature with the standardwebhooks
library) over a migrated SQLite database, with the ingestion API and the review desk
each served by uvicorn on loopback. Chromium is ``/usr/bin/chromium`` (``CHROMIUM``
overrides); Playwright never downloads a browser of its own. Without Chromium the
tests fail in CI and skip, saying why, elsewhere.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from producers.api.serve import Served
from review.app import create_app as create_desk
from schemas.settings import ReviewSettings
from schemas.store.reviewers import create_reviewer
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_api_key, create_tenant
from schemas.tables import ReviewerRole, Tenant
from tests.support.services import migrated_database, unavailable
from tests.support.stack import Stack

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTEFACTS = Path(__file__).parent / "artefacts"
PASSWORD = "a long reviewer passphrase"


@dataclass
class Desk:
    stack: Stack  # tenant acme, its receiver, the worker
    api: Served
    desk: Served
    api_key: str
    other_tenant_id: str
    reviewer: str

    @property
    def database_url(self) -> str:
        return self.stack.database_url

    @property
    def tenant_id(self) -> str:
        return self.stack.tenant_id

    @property
    def receiver(self) -> Any:
        return self.stack.receiver

    def submit(self, **job: Any) -> str:
        answer = httpx.post(
            f"{self.api.url}/v1/jobs",
            json=job,
            headers={"authorization": f"Bearer {self.api_key}"},
            timeout=30,
        )
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])

    def wait(self, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = httpx.get(
                f"{self.api.url}/v1/jobs/{job_id}",
                headers={"authorization": f"Bearer {self.api_key}"},
                timeout=30,
            ).json()
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return dict(job)
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} did not finish:\n{self.stack.logs()}")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install playwright)")
    ARTEFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One database kind is enough for what the browser sees: SQLite."""
    yield from migrated_database("sqlite", tmp_path_factory.mktemp("db"))


@pytest.fixture(scope="module")
def desk(stack: Stack) -> Iterator[Desk]:
    """The shared stack (tenant acme, its receiver, a worker) with the API and the desk
    served, an API key, a reviewer of acme, and a tenant the reviewer may not see."""
    database_url, redis_url = stack.database_url, stack.settings.redis_url
    reviewer = "rita@acme.example"
    with session_scope(database_url) as session:
        shop = session.get(Tenant, stack.tenant_id)
        assert shop is not None
        other = create_tenant(session=session, name="elsewhere")
        key = create_api_key(session=session, tenant=shop, scopes=["submit", "read"])[1]
        create_reviewer(session=session, email=reviewer, password=PASSWORD, tenants=[shop],
                        role=ReviewerRole.reviewer)  # fmt: skip
        other_id = other.id
    review = Served(create_desk(ReviewSettings(database_url=database_url, redis_url=redis_url)))
    yield Desk(stack, stack.api, review, key, other_id, reviewer)  # the stack's API
    review.stop()
