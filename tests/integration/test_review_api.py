"""/v1/review against real parts, on SQLite and PostgreSQL: jobs captioned by a real
worker, decided through the API, and every decision's callback received by a real
receiver that verifies its signature with the standardwebhooks library."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from producers.api import create_app
from schemas.decisions import CaptionEvent
from schemas.settings import ApiSettings
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_api_key
from schemas.tables import Tenant
from tests.support.images import png
from tests.support.stack import Stack
from tests.support.waiting import wait_for


@pytest.fixture(scope="module")
def desk(stack: Stack) -> Iterator[tuple[TestClient, dict[str, str], list[str]]]:
    accepted = stack.client.submit_bulk(
        [
            {
                "image": png((40 * i, 120, 90)),
                "styles": ["playful"],
                "platforms": ["x", "instagram"],
                "variants": 1,
                "callback_url": stack.receiver.url,
            }
            for i in range(3)
        ]
    )
    ids = [a.id for a in accepted]
    for job_id in ids:
        assert stack.client.wait(job_id, timeout_s=120).status == "succeeded"
    with session_scope(stack.settings.database_url) as session:
        tenant = session.get(Tenant, stack.tenant_id)
        assert tenant is not None
        key = create_api_key(session=session, tenant=tenant, scopes=["review"])[1]
        admin = create_api_key(session=session, tenant=tenant, scopes=["admin"])[1]
    settings = ApiSettings(
        database_url=stack.settings.database_url, redis_url=stack.settings.redis_url
    )
    with TestClient(create_app(settings)) as http:
        yield http, {"authorization": f"Bearer {key}", "x-admin": f"Bearer {admin}"}, ids


def _caption_events(stack: Stack, job_ids: list[str]) -> list[tuple[dict, bool]]:
    return [
        (r.body, r.verified)
        for r in stack.receiver.received
        if r.event_type.startswith("caption.") and r.body["data"]["job_id"] in job_ids  # type: ignore[index]
    ]


def test_the_queue_lists_pending_variants_oldest_first_with_counts_and_keyset_pages(
    desk: tuple[TestClient, dict[str, str], list[str]],
) -> None:
    http, keys, ids = desk
    auth = {"authorization": keys["authorization"]}
    first = http.get("/v1/review/queue", params={"limit": 2}, headers=auth).json()
    assert first["total_jobs"] >= 3
    assert [j["job_id"] for j in first["jobs"]] == ids[:2]
    assert {v["platform"] for v in first["jobs"][0]["pending"]} == {"x", "instagram"}
    rest = http.get(
        "/v1/review/queue", params={"limit": 2, "cursor": first["next_cursor"]}, headers=auth
    ).json()
    assert rest["jobs"][0]["job_id"] == ids[2]
    only_x = http.get("/v1/review/queue", params={"platform": "x"}, headers=auth).json()
    assert only_x["total_variants"] == only_x["total_jobs"]
    newest = http.get("/v1/review/queue", params={"order": "newest"}, headers=auth).json()
    assert newest["jobs"][0]["job_id"] == ids[-1]
    assert http.get("/v1/review/queue", params={"cursor": "junk"}, headers=auth).status_code == 422


def test_decisions_reach_the_receiver_as_verified_callbacks(
    desk: tuple[TestClient, dict[str, str], list[str]], stack: Stack
) -> None:
    http, keys, ids = desk
    auth = {"authorization": keys["authorization"]}
    job = http.get("/v1/review/queue", headers=auth).json()["jobs"][0]
    by_platform = {v["platform"]: v for v in job["pending"]}
    x, insta = by_platform["x"]["id"], by_platform["instagram"]["id"]

    too_long = http.post(
        f"/v1/review/variants/{x}/edit", json={"text": "So light. " * 40}, headers=auth
    )
    assert too_long.status_code == 422
    assert too_long.json()["error"]["code"] == "edit_refused"
    assert [d["rule"] for d in too_long.json()["error"]["detail"]] == ["too_long"]

    edited = http.post(
        f"/v1/review/variants/{x}/edit", json={"text": "Shoes for the city."}, headers=auth
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["variant"]["review_state"] == "edited"
    assert edited.json()["decision"]["decided_by"].startswith("api-key:")
    rejected = http.post(
        f"/v1/review/variants/{insta}/reject",
        json={"reason": "off_brand", "note": "too loud"},
        headers=auth,
    )
    assert rejected.status_code == 200, rejected.text
    again = http.post(f"/v1/review/variants/{insta}/approve", json={}, headers=auth)
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "already_decided"
    not_admin = http.post(
        f"/v1/review/variants/{insta}/approve", json={"redecide": True}, headers=auth
    )
    assert not_admin.status_code == 409
    by_admin = http.post(
        f"/v1/review/variants/{insta}/approve",
        json={"redecide": True},
        headers={"authorization": keys["x-admin"]},
    )
    assert by_admin.status_code == 200, by_admin.text
    history = http.get(f"/v1/review/jobs/{job['job_id']}/decisions", headers=auth).json()
    assert [d["action"] for d in history["decisions"]] == ["edited", "rejected", "approved"]
    assert history["decisions"][1]["superseded_by"] == history["decisions"][2]["id"]

    wait_for(lambda: len(_caption_events(stack, [job["job_id"]])) >= 3)
    events = _caption_events(stack, [job["job_id"]])
    assert all(verified for _, verified in events)
    bodies = [CaptionEvent.model_validate(body) for body, _ in events]
    kinds = {(e.type, e.data.variant_id) for e in bodies}
    assert kinds == {
        ("caption.approved", x),
        ("caption.rejected", insta),
        ("caption.approved", insta),
    }
    edit = next(e for e in bodies if e.data.variant_id == x)
    assert edit.data.edited is True
    assert edit.data.text == "Shoes for the city."
    assert edit.data.original_text == by_platform["x"]["text"]
    assert next(e for e in bodies if e.type == "caption.rejected").data.reason == "off_brand"


def test_approve_a_whole_job_and_bulk_approve_each_item_answered_on_its_own(
    desk: tuple[TestClient, dict[str, str], list[str]], stack: Stack
) -> None:
    http, keys, ids = desk
    auth = {"authorization": keys["authorization"]}
    whole = http.post(f"/v1/review/jobs/{ids[1]}/approve", json={}, headers=auth)
    assert whole.status_code == 200
    assert len(whole.json()["decisions"]) == 2
    assert whole.json()["refused"] == []  # nobody else decided one of them meanwhile
    pending = http.get("/v1/review/queue", headers=auth).json()["jobs"]
    last = next(j for j in pending if j["job_id"] == ids[2])
    chosen = [v["id"] for v in last["pending"]]
    bulk = http.post(
        "/v1/review/bulk-approve",
        json={"variant_ids": [*chosen, chosen[0], "var_nope"]},
        headers=auth,
    ).json()["items"]
    assert [bool(i["decision"]) for i in bulk] == [True, True, False, False]
    assert [i["error"]["code"] for i in bulk[2:]] == ["already_decided", "not_found"]
    wait_for(lambda: len(_caption_events(stack, ids[1:])) >= 4)
    assert all(verified for _, verified in _caption_events(stack, ids[1:]))


def test_a_key_without_the_review_scope_is_refused(
    desk: tuple[TestClient, dict[str, str], list[str]], stack: Stack
) -> None:
    http, _, _ = desk
    with session_scope(stack.settings.database_url) as session:
        tenant = session.get(Tenant, stack.tenant_id)
        assert tenant is not None
        key = create_api_key(session=session, tenant=tenant, scopes=["read"])[1]
    answer = http.get("/v1/review/queue", headers={"authorization": f"Bearer {key}"})
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"


def test_variants_the_worker_auto_approves_are_called_back_as_approved(stack: Stack) -> None:
    """Last in this module: it gives the tenant a threshold that approves everything."""
    with session_scope(stack.settings.database_url) as session:
        tenant = session.get(Tenant, stack.tenant_id)
        assert tenant is not None
        tenant.auto_approve_threshold = 0.0
        session.add(tenant)
    job_id = stack.client.submit(
        image=png((10, 200, 10)),
        styles=["minimal"],
        platforms=["x"],
        variants=1,
        callback_url=stack.receiver.url,
    ).id
    job = stack.client.wait(job_id, timeout_s=120)
    assert [v.review_state for v in job.variants] == ["auto_approved"]
    wait_for(lambda: len(_caption_events(stack, [job_id])) >= 1)
    ((body, verified),) = _caption_events(stack, [job_id])
    event = CaptionEvent.model_validate(body)
    assert verified
    assert event.type == "caption.approved"
    assert (event.data.auto_approved, event.data.edited, event.data.reviewer) == (True, False, None)
    assert event.data.variant_id == job.variants[0].id
    assert event.data.text == job.variants[0].text
