"""The review desk in a real headless Chromium, against a real API, a real worker and a
receiver that verifies every callback's signature: sign in and review with the keyboard
alone, an edit refused with its rule, bulk approval, the callbacks that follow, tenant
isolation, CSRF, and model text that tries to run."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sqlmodel import select

from schemas.store.blobs import put_blob
from schemas.store.sessions import session_scope
from schemas.tables import Tenant, Variant
from tests.browser.conftest import ARTEFACTS, PASSWORD, Desk
from tests.integration.review_world import reviewable_job
from tests.support.images import png

HOSTILE = (
    'Sale <script>alert("script")</script> <img src=x onerror="alert(\'img\')"> '
    "<a href=\"javascript:alert('link')\">tap</a>"
)


def wait_for(predicate: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


@pytest.fixture
def page(browser: Any, desk: Desk) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    tab = context.new_page()
    tab.set_default_timeout(15_000)
    yield tab
    context.close()


class Recorder:
    """Keystrokes pressed and requests to the desk, per decision."""

    def __init__(self, page: Any, desk: Desk) -> None:
        self.page, self.keys, self.requests = page, 0, []
        page.on(
            "request",
            lambda r: self.requests.append(r) if r.url.startswith(desk.desk.url) else None,
        )

    def press(self, *keys: str) -> None:
        for key in keys:
            self.page.keyboard.press(key)
            self.keys += 1

    def type(self, text: str) -> None:
        self.page.keyboard.type(text)
        self.keys += len(text)


def sign_in(page: Any, desk: Desk, keys: Recorder | None = None) -> None:
    page.goto(desk.desk.url + "/")
    assert "/login" in page.url
    typist = keys or Recorder(page, desk)
    # The e-mail field takes the focus by itself (autofocus), but Chromium applies it at
    # its next rendering, which on a busy host can come after the load event.
    page.wait_for_function("document.activeElement && document.activeElement.id === 'email'")
    typist.type(desk.reviewer)
    typist.press("Tab")
    typist.type(PASSWORD)
    typist.press("Enter")
    page.wait_for_url(desk.desk.url + "/")


def submit_jobs(desk: Desk, n: int, **job: Any) -> list[str]:
    ids = [
        desk.submit(
            image_base64=base64.b64encode(png((60 * i, 140, 200))).decode(),
            variants=1,
            callback_url=desk.receiver.url,
            **job,
        )
        for i in range(n)
    ]
    for job_id in ids:
        assert desk.wait(job_id)["status"] == "succeeded"
    return ids


def events(desk: Desk, job_ids: list[str]) -> list[Any]:
    return [
        r for r in desk.receiver.received
        if r.event_type.startswith("caption.") and r.body["data"]["job_id"] in job_ids
    ]  # fmt: skip


def state(page: Any, index: int) -> str:
    return str(page.locator("article.variant").nth(index).get_attribute("data-state"))


def test_a_queue_reviewed_with_the_keyboard_alone(page: Any, desk: Desk) -> None:
    ids = submit_jobs(desk, 2, styles=["playful"], platforms=["instagram", "x"])
    keys = Recorder(page, desk)
    sign_in(page, desk, keys)
    cards = page.locator("article.variant")
    assert cards.count() == 4  # per job: instagram, then x
    page.screenshot(path=str(ARTEFACTS / "queue.png"))
    assert page.evaluate("document.activeElement.id") == cards.nth(0).get_attribute("id")

    keys.press("?")
    assert page.locator("dialog#help").is_visible()
    keys.press("Escape")
    assert not page.locator("dialog#help").is_visible()

    keys.press("a")  # approve the first
    wait_for(lambda: state(page, 0) == "approved")
    keys.press("r", "1", "Enter")  # reject the next, reason 1 (off brand)
    wait_for(lambda: state(page, 1) == "rejected")
    keys.press("j", "e")  # the second job's X variant: edit it past X's limit
    keys.press("Control+a")
    keys.type("Too long for X. " * 20)
    keys.press("Control+Enter")
    problem = cards.nth(3).locator("[data-problem]")
    problem.wait_for(state="visible")
    assert "too_long" in problem.inner_text()
    assert state(page, 3) == "pending_review"
    keys.press("Control+a")
    keys.type("Edited by keyboard: city shoes.")
    keys.press("Control+Enter")
    wait_for(lambda: state(page, 3) == "edited")
    keys.press("k", "x", "Shift+A")  # select the one left and bulk-approve it
    wait_for(lambda: state(page, 2) == "approved")
    assert page.locator("[data-count-variants]").inner_text() == "0"

    decisions = [r for r in keys.requests if r.method == "POST" and "/login" not in r.url]
    assert len(decisions) == 5  # approve, reject, refused edit, edit, bulk: one request each

    wait_for(lambda: len(events(desk, ids)) >= 4)
    received = events(desk, ids)
    assert all(r.verified for r in received)
    edited = [r.body["data"] for r in received if r.body["data"]["edited"]]
    assert [e["text"] for e in edited] == ["Edited by keyboard: city shoes."]
    assert edited[0]["original_text"] != edited[0]["text"]
    assert [r.body["data"]["reason"] for r in received if r.event_type == "caption.rejected"] == [
        "off_brand"
    ]
    assert sum(r.event_type == "caption.approved" for r in received) == 3

    page.goto(f"{desk.desk.url}/jobs/{ids[1]}")
    assert "Edited by keyboard" in page.locator("section.history").inner_text()
    assert page.locator("section.history ins").count() >= 1
    page.screenshot(path=str(ARTEFACTS / "job.png"), full_page=True)
    page.goto(f"{desk.desk.url}/stats")
    assert page.locator("svg").count() >= 2
    page.screenshot(path=str(ARTEFACTS / "stats.png"), full_page=True)


def test_bulk_approve_a_selection_from_the_queue(page: Any, desk: Desk) -> None:
    ids = submit_jobs(desk, 1, styles=["playful", "luxury", "minimal"], platforms=["x"])
    sign_in(page, desk)
    picks = page.locator("input.pick")
    assert picks.count() == 3
    for i in range(3):
        picks.nth(i).check()
    assert page.locator("[data-selected]").inner_text() == "(3)"
    page.get_by_role("button", name="Approve selected").click()
    wait_for(lambda: all(state(page, i) == "approved" for i in range(3)))
    wait_for(lambda: len(events(desk, ids)) >= 3)
    assert {r.event_type for r in events(desk, ids)} == {"caption.approved"}
    assert all(r.verified for r in events(desk, ids))
    page.reload()
    assert page.locator("article.variant").count() == 0


def test_another_tenants_job_and_thumbnail_are_not_found(page: Any, desk: Desk) -> None:
    with session_scope(desk.database_url) as session:
        other = session.get(Tenant, desk.other_tenant_id)
        assert other is not None
        job = reviewable_job(session, other)
        job.image_sha256 = put_blob(session=session, store="db", data=png())
        session.add(job)
    sign_in(page, desk)
    assert page.goto(f"{desk.desk.url}/jobs/{job.id}").status == 404
    assert page.goto(f"{desk.desk.url}/jobs/{job.id}/thumbnail").status == 404


def test_a_form_posted_without_its_csrf_token_is_refused(page: Any, desk: Desk) -> None:
    with session_scope(desk.database_url) as session:
        shop = session.get(Tenant, desk.tenant_id)
        assert shop is not None
        job = reviewable_job(session, shop, platforms=("x",))
        variant = session.exec(select(Variant).where(Variant.job_id == job.id)).one()
    sign_in(page, desk)
    page.goto(f"{desk.desk.url}/jobs/{job.id}")
    with page.expect_navigation() as answer:
        page.evaluate(
            """() => {
                const form = document.querySelector("form[data-decide=approve]");
                form.querySelector("input[name=csrf_token]").remove();
                form.submit();  // a plain post, as a forged form would send it
            }"""
        )
    assert answer.value.status == 403
    with session_scope(desk.database_url) as session:
        assert session.get(Variant, variant.id).review_state == "pending_review"  # type: ignore[union-attr]
    page.goto(f"{desk.desk.url}/jobs/{job.id}")
    page.keyboard.press("a")
    wait_for(
        lambda: page.locator("article.variant").first.get_attribute("data-state") == "approved"
    )


def test_model_text_is_shown_as_text_and_runs_nothing(page: Any, desk: Desk) -> None:
    with session_scope(desk.database_url) as session:
        shop = session.get(Tenant, desk.tenant_id)
        assert shop is not None
        job = reviewable_job(session, shop, platforms=("instagram",), text=HOSTILE)
        job.caption = HOSTILE
        job.image_sha256 = put_blob(session=session, store="db", data=png())
        session.add(job)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in(page, desk)
    for path in ("/", f"/jobs/{job.id}"):
        page.goto(desk.desk.url + path)
        text = page.locator("article.variant [data-text]").first
        assert text.inner_text() == HOSTILE
        page.keyboard.press("e")  # the text in an edit box, too
        assert page.locator("textarea").first.input_value() == HOSTILE
        page.keyboard.press("Escape")
        injected = page.evaluate(
            """() => ({
              inText: document.querySelectorAll("[data-text] *, [data-caption] *, .caption *")
                .length,
              images: document.querySelectorAll("img[src='x'], img:not([src^='/jobs/'])").length,
              scripts: [...document.scripts].filter(s => !s.src.endsWith("/static/review.js"))
                .length,
              links: document.querySelectorAll("a[href^='javascript']").length,
            })"""
        )
        assert injected == {"inText": 0, "images": 0, "scripts": 0, "links": 0}, injected
    page.wait_for_timeout(300)
    assert dialogs == []
