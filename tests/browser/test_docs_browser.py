"""The API's docs in headless Chromium with no network but loopback: Swagger UI (with
its Authorize button, for the bearer scheme) and ReDoc load from the package's own
assets, never from a CDN. Screenshots are kept in ``tests/browser/artefacts``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest

from producers.api.serve import Served
from schemas.settings import ApiSettings
from tests.browser.conftest import ARTEFACTS
from tests.support.api import served_api


@pytest.fixture(scope="module")
def api(database_url: str, redis_db: str) -> Iterator[Served]:
    with served_api(ApiSettings(database_url=database_url, redis_url=redis_db)) as served:
        yield served


@pytest.fixture
def offline(browser: Any) -> Iterator[tuple[Any, list[str]]]:
    """A tab that may reach loopback only; what it tried to fetch elsewhere is listed.
    (Every document, script and stylesheet of the docs pages comes through here.)"""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    elsewhere: list[str] = []

    def guard(route: Any) -> None:
        if urlparse(route.request.url).hostname == "127.0.0.1":
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", guard)
    yield context.new_page(), elsewhere
    context.close()


def open_docs(offline: tuple[Any, list[str]], url: str, ready: str) -> tuple[Any, list[str]]:
    page, elsewhere = offline
    page.goto(url)
    page.wait_for_selector(ready, timeout=20_000)
    return page, elsewhere


def test_swagger_ui_renders_offline_with_an_authorize_button(
    api: Served, offline: tuple[Any, list[str]]
) -> None:
    page, elsewhere = open_docs(offline, f"{api.url}/docs", ".swagger-ui .opblock")
    authorize = page.locator("button.authorize")
    assert authorize.is_visible()
    assert page.locator(".opblock-summary-path", has_text="/v1/jobs/upload").count() == 1
    page.screenshot(path=str(ARTEFACTS / "docs.png"))
    authorize.click()
    page.wait_for_selector(".modal-ux", timeout=5_000)
    assert "bearer" in page.locator(".modal-ux").inner_text().lower()
    page.screenshot(path=str(ARTEFACTS / "docs-authorize.png"))
    assert elsewhere == []


def test_redoc_renders_offline_with_the_callbacks(
    api: Served, offline: tuple[Any, list[str]]
) -> None:
    page, elsewhere = open_docs(offline, f"{api.url}/redoc", "h1")
    page.get_by_text("job.succeeded: a job finished").first.wait_for(state="attached")
    assert "captionq ingestion API" in page.locator("h1").first.inner_text()
    page.screenshot(path=str(ARTEFACTS / "redoc.png"))
    # ReDoc's bundle links its "API docs by Redocly" badge from its CDN; the page's
    # policy keeps images on this host, so not even that request leaves it.
    assert elsewhere == []
