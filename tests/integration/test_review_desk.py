"""The review desk's web app over HTTP, on SQLite and PostgreSQL: sign-in and its limits,
sessions and CSRF, cross-site refusals, tenant isolation of pages and thumbnails,
untrusted model text, and decisions made from the page."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from review.app import create_app
from schemas.settings import ReviewSettings
from schemas.store.blobs import put_blob
from schemas.store.reviewers import create_reviewer
from schemas.store.sessions import make_engine, session_scope
from schemas.store.tenants import create_tenant
from schemas.tables import Decision, Job, ReviewerRole, Tenant, Variant
from tests.integration.review_world import reviewable_job
from tests.support.images import png

PASSWORD = "correct horse battery"
HOSTILE = (
    'Buy <script>alert(1)</script> <img src=x onerror="alert(2)"> '
    '<a href="javascript:alert(3)">go</a>'
)


@dataclass
class World:
    url: str
    settings: ReviewSettings
    alice: str
    admin: str
    job_a: Job
    job_b: Job
    variants_a: list[Variant]


@pytest.fixture(scope="module")
def world(database_url: str, redis_db: str) -> World:
    suffix = uuid.uuid4().hex[:6]
    with session_scope(database_url) as session:
        a = create_tenant(session=session, name=f"shop-a-{suffix}")
        b = create_tenant(session=session, name=f"shop-b-{suffix}")
        job_a = reviewable_job(
            session, a, text=HOSTILE, platforms=("instagram",), styles=("playful", "luxury")
        )
        job_b = reviewable_job(session, b)
        for job in (job_a, job_b):
            job.image_sha256 = put_blob(session=session, store="db", data=png())
            session.add(job)
        alice = f"alice-{suffix}@example.com"
        admin = f"admin-{suffix}@example.com"
        create_reviewer(session=session, email=alice, password=PASSWORD, tenants=[a])
        create_reviewer(
            session=session, email=admin, password=PASSWORD, tenants=[a, b], role=ReviewerRole.admin
        )
        session.flush()
        variants_a = list(session.exec(select(Variant).where(Variant.job_id == job_a.id)).all())
    settings = ReviewSettings(
        database_url=database_url, redis_url=redis_db, review_login_max_failures=3
    )
    return World(database_url, settings, alice, admin, job_a, job_b, variants_a)


def signed_in(world: World, email: str) -> TestClient:
    http = TestClient(create_app(world.settings), follow_redirects=False)
    form = http.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    answer = http.post(
        "/login",
        data={"email": email, "password": PASSWORD, "csrf_token": token[1], "next": "/"},
    )
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/"
    return http


def csrf(http: TestClient, path: str = "/") -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', http.get(path).text)
    assert found is not None
    return found[1]


def test_pages_need_a_session_and_the_cookie_is_httponly_and_samesite(world: World) -> None:
    anonymous = TestClient(create_app(world.settings), follow_redirects=False)
    assert anonymous.get("/").status_code == 303
    assert anonymous.get("/").headers["location"].startswith("/login")
    http = TestClient(create_app(world.settings), follow_redirects=False)
    form = http.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    answer = http.post(
        "/login", data={"email": world.alice, "password": PASSWORD, "csrf_token": token[1]}
    )
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "samesite=lax" in cookie.lower()
    assert "Secure" not in cookie  # plain http here; Secure over https
    secure = TestClient(create_app(world.settings), base_url="https://desk.example")
    form = secure.get("/login").text
    token = re.search(r'name="csrf_token" value="([^"]+)"', form)
    assert token is not None
    answer = secure.post(
        "/login",
        data={"email": world.alice, "password": PASSWORD, "csrf_token": token[1]},
        follow_redirects=False,
    )
    assert "Secure" in answer.headers["set-cookie"]


def test_failed_sign_ins_lock_the_account_for_a_while(world: World) -> None:
    email = f"locked-{uuid.uuid4().hex[:6]}@example.com"
    with session_scope(world.url) as session:
        owner = session.get(Tenant, world.job_a.tenant_id)
        assert owner is not None
        create_reviewer(session=session, email=email, password=PASSWORD, tenants=[owner])
    http = TestClient(create_app(world.settings), follow_redirects=False)
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/login").text)
    assert token is not None
    for _ in range(3):
        wrong = http.post(
            "/login", data={"email": email, "password": "wrong password!", "csrf_token": token[1]}
        )
        assert "/login?problem=" in wrong.headers["location"]
    assert "problem=locked" in wrong.headers["location"]
    right = http.post("/login", data={"email": email, "password": PASSWORD, "csrf_token": token[1]})
    assert "problem=locked" in right.headers["location"]
    page = http.get(right.headers["location"])
    assert page.status_code == 401
    assert "Too many failed sign-ins" in page.text


def test_state_changing_requests_need_the_sessions_csrf_token(world: World) -> None:
    http = signed_in(world, world.alice)
    variant = world.variants_a[0]
    refused = http.post(f"/variants/{variant.id}/approve", data={})
    assert refused.status_code == 403
    wrong = http.post(f"/variants/{variant.id}/approve", data={"csrf_token": "guess"})
    assert wrong.status_code == 403
    no_login_token = TestClient(create_app(world.settings)).post(
        "/login", data={"email": world.alice, "password": PASSWORD}
    )
    assert no_login_token.status_code == 403
    assert http.post("/logout", data={}).status_code == 403
    with session_scope(world.url) as session:
        assert session.get(Variant, variant.id).review_state == "pending_review"  # type: ignore[union-attr]


def test_cross_site_requests_are_refused_but_a_link_from_elsewhere_opens(world: World) -> None:
    http = signed_in(world, world.alice)
    token = csrf(http)
    variant = world.variants_a[0]
    cross = {"sec-fetch-site": "cross-site", "sec-fetch-mode": "cors", "sec-fetch-dest": "empty"}
    posted = http.post(f"/variants/{variant.id}/approve", data={"csrf_token": token}, headers=cross)
    assert posted.status_code == 403
    embedded = {
        "sec-fetch-site": "cross-site",
        "sec-fetch-mode": "no-cors",
        "sec-fetch-dest": "image",
    }
    assert http.get(f"/jobs/{world.job_a.id}/thumbnail", headers=embedded).status_code == 403
    link = {
        "sec-fetch-site": "cross-site",
        "sec-fetch-mode": "navigate",
        "sec-fetch-dest": "document",
    }
    assert http.get(f"/jobs/{world.job_a.id}", headers=link).status_code == 200
    same = {"sec-fetch-site": "same-origin", "sec-fetch-mode": "navigate"}
    assert http.get("/", headers=same).status_code == 200


def test_another_tenants_job_and_thumbnail_are_not_found(world: World) -> None:
    http = signed_in(world, world.alice)
    assert http.get(f"/jobs/{world.job_b.id}").status_code == 404
    assert http.get(f"/jobs/{world.job_b.id}/thumbnail").status_code == 404
    token = csrf(http)
    with session_scope(world.url) as session:
        b_variant = session.exec(select(Variant).where(Variant.job_id == world.job_b.id)).first()
        assert b_variant is not None
    for path in (f"/variants/{b_variant.id}/approve", f"/jobs/{world.job_b.id}/approve"):
        assert http.post(path, data={"csrf_token": token}).status_code == 404
    assert world.job_b.id not in http.get("/").text
    admin = signed_in(world, world.admin)
    assert admin.get(f"/jobs/{world.job_b.id}").status_code == 200


def test_the_thumbnail_is_a_reencoded_jpeg_with_nosniff(world: World) -> None:
    http = signed_in(world, world.alice)
    answer = http.get(f"/jobs/{world.job_a.id}/thumbnail")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "image/jpeg"
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert answer.content[:3] == b"\xff\xd8\xff"


def test_model_text_is_escaped_and_the_page_allows_no_inline_script(world: World) -> None:
    http = signed_in(world, world.alice)
    for path in ("/", f"/jobs/{world.job_a.id}"):
        answer = http.get(path)
        assert answer.status_code == 200
        assert "<script>alert" not in answer.text
        assert 'onerror="alert' not in answer.text
        assert 'href="javascript:' not in answer.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in answer.text
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self'" in policy
        assert "unsafe-inline" not in policy
        assert answer.headers["x-frame-options"] == "DENY"
        inline = re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", answer.text)
        assert inline == []


def test_decisions_from_the_page_answer_json_to_the_script_and_redirect_a_form(
    world: World,
) -> None:
    http = signed_in(world, world.alice)
    token = csrf(http)
    first, second = world.variants_a
    approved = http.post(
        f"/variants/{first.id}/approve",
        data={"csrf_token": token},
        headers={"accept": "application/json"},
    )
    assert approved.status_code == 200
    assert approved.json()["decided"][0]["state"] == "approved"
    too_long = http.post(
        f"/variants/{second.id}/edit",
        data={"csrf_token": token, "text": "word " * 600},
        headers={"accept": "application/json"},
    )
    assert too_long.status_code == 422
    assert too_long.json()["error"]["code"] == "edit_refused"
    assert "too_long" in [d["rule"] for d in too_long.json()["error"]["detail"]]
    edited = http.post(
        f"/variants/{second.id}/edit",
        data={
            "csrf_token": token,
            "text": "A calm, clean caption.",
            "next": f"/jobs/{world.job_a.id}",
        },
    )
    assert edited.status_code == 303
    assert edited.headers["location"] == f"/jobs/{world.job_a.id}"
    page = http.get(f"/jobs/{world.job_a.id}").text
    assert "<ins>" in page  # the edit as a diff, escaped pieces
    assert "<del>" in page
    assert world.alice in page
    again = http.post(f"/variants/{first.id}/reject", data={"csrf_token": token})
    assert again.status_code == 409
    with session_scope(world.url) as session:
        rows = session.exec(select(Decision).where(Decision.job_id == world.job_a.id)).all()
        assert sorted(d.action for d in rows) == ["approved", "edited"]
    stats = http.get("/stats")
    assert stats.status_code == 200
    assert "<svg" in stats.text


def test_sign_out_ends_the_session(world: World) -> None:
    http = signed_in(world, world.alice)
    cookie = http.cookies.get("captionq_review")
    assert http.post("/logout", data={"csrf_token": csrf(http)}).status_code == 303
    http.cookies.set("captionq_review", cookie or "")
    assert http.get("/").status_code == 303


def test_the_database_away_is_a_503_page_with_the_security_headers(world: World) -> None:
    """Sign-in needs the database: with it away the reviewer reads that (503, retry),
    on the desk's own page and headers, not a bare server error."""
    away = world.settings.model_copy(
        update={"database_url": "postgresql+psycopg://postgres@127.0.0.1:1/captionq"}
    )
    http = TestClient(create_app(away), raise_server_exceptions=False)
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/login").text)
    assert token
    answer = http.post(
        "/login", data={"email": world.alice, "password": PASSWORD, "csrf_token": token[1]}
    )
    assert answer.status_code == 503, answer.text
    assert "database_unavailable" in answer.text or "cannot be reached" in answer.text
    assert answer.headers["retry-after"] == "5"
    assert "script-src 'self'" in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_an_email_with_no_account_answers_as_an_account_would(world: World) -> None:
    """Same answers, in the same order, for an account and for an e-mail that has none:
    the lockout cannot be used to learn which e-mails exist."""
    real = f"real-{uuid.uuid4().hex[:6]}@example.com"
    with session_scope(world.url) as session:
        owner = session.get(Tenant, world.job_a.tenant_id)
        assert owner is not None
        create_reviewer(session=session, email=real, password=PASSWORD, tenants=[owner])
    answers: dict[str, list[str]] = {}
    for email in (real, f"nobody-{uuid.uuid4().hex[:6]}@example.com"):
        http = TestClient(create_app(world.settings), follow_redirects=False)
        token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/login").text)
        assert token is not None
        answers[email] = [
            http.post(
                "/login",
                data={"email": email, "password": "wrong password!", "csrf_token": token[1]},
            ).headers["location"]
            for _ in range(4)
        ]
    assert len(set(map(tuple, answers.values()))) == 1, answers
    assert "problem=locked" in answers[real][-1]


@contextmanager
def writer_holding_its_lock(url: str) -> Iterator[None]:
    """Another process's write transaction, held open: on SQLite the write lock itself
    (BEGIN IMMEDIATE, as a worker's result transaction takes it); on PostgreSQL an
    EXCLUSIVE lock on the desk's tables, which lets plain reads through and no writer."""
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(
                    "LOCK TABLE job, variant, decision, tenant, blob, reviewer, "
                    "reviewergrant, reviewsession IN EXCLUSIVE MODE"
                )
            yield
    finally:
        engine.dispose()


def test_pages_only_read_so_they_answer_while_a_writer_holds_the_database(world: World) -> None:
    http = signed_in(world, world.admin)
    pages = ["/", f"/jobs/{world.job_a.id}", f"/jobs/{world.job_a.id}/thumbnail", "/stats"]
    with writer_holding_its_lock(world.url):
        answers = {page: http.get(page) for page in pages}
    assert {page: a.status_code for page, a in answers.items()} == dict.fromkeys(pages, 200)
    assert world.variants_a[0].id in answers[f"/jobs/{world.job_a.id}"].text
