"""The review desk: what a decision costs a reviewer, and what the pages cost the server.

1. Keyboard-only flow, in headless Chromium (Debian's ``/usr/bin/chromium``): sign in,
   then approve, reject (with a reason), edit and bulk-approve variants from the queue
   with the keyboard alone; counts the keys pressed and the requests the browser sent
   to the desk for each kind of decision.
2. Server time of the queue and the job view with ``--variants`` (10,000) pending
   variants, on SQLite and on PostgreSQL: each view asked ``--runs`` times in process
   (no network), median and 90th percentile in ms. Never passes or fails on time.

    .venv/bin/python -m benchmarks.review_desk --variants 10000 --runs 9 --out review.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import insert

from benchmarks.spine_throughput import database
from producers.demo import free_port
from review.app import create_app
from schemas.settings import ReviewSettings
from schemas.store.review_queue import encode_cursor
from schemas.store.reviewers import create_reviewer
from schemas.store.sessions import migrate, session_scope
from schemas.store.tenants import create_tenant
from schemas.tables import Job, JobStatus, Variant, new_id, utcnow

PASSWORD = "benchmark passphrase"
EMAIL = "bench@desk.example"
STYLES = ("playful", "luxury")
PLATFORMS = ("instagram", "x")


def seed(url: str, variants: int) -> list[str]:
    """A tenant, a reviewer, and ``variants`` pending variants (four per job, one in ten
    flagged); returns the job ids, oldest first."""
    migrate(url)
    with session_scope(url) as session:
        tenant = create_tenant(session=session, name=f"bench-{uuid.uuid4().hex[:6]}")
        create_reviewer(session=session, email=EMAIL, password=PASSWORD, tenants=[tenant])
        tenant_id = tenant.id
    per_job = len(STYLES) * len(PLATFORMS)
    job_ids = [new_id("job") for _ in range(max(1, variants // per_job))]
    start = utcnow().timestamp() - len(job_ids)
    jobs, rows = [], []
    for n, job_id in enumerate(job_ids):
        at = datetime.fromtimestamp(start + n, tz=UTC)
        jobs.append({
            "id": job_id, "tenant_id": tenant_id, "status": JobStatus.succeeded.value,
            "styles": list(STYLES), "platforms": list(PLATFORMS), "variants": 1,
            "request_hash": "0" * 64, "priority": 5, "meta": {}, "attempts": 1,
            "caption": f"a sample photo number {n}", "model_id": "bench-captioner",
            "created_at": at, "updated_at": at,
        })  # fmt: skip
        for i, (style, platform) in enumerate((s, p) for s in STYLES for p in PLATFORMS):
            rows.append({
                "id": new_id("var"), "job_id": job_id, "style": style, "platform": platform,
                "index": 0, "text": f"Copy {n}.{i}: a bright day, a bright pair of shoes.",
                "quality_score": (n % 100) / 100, "quality_parts": {"compliance": 1.0},
                "flags": ["policy:claim.guarantee"] if (n + i) % 10 == 0 else [],
                "review_state": "pending_review", "provenance": {"model_id": "bench-writer"},
                "created_at": at,
            })  # fmt: skip
    with session_scope(url) as session:
        connection = session.connection()
        for chunk in range(0, len(jobs), 1000):
            connection.execute(insert(Job.__table__), jobs[chunk : chunk + 1000])  # type: ignore[attr-defined]
        for chunk in range(0, len(rows), 1000):
            connection.execute(insert(Variant.__table__), rows[chunk : chunk + 1000])  # type: ignore[attr-defined]
    return job_ids


def signed_in(settings: ReviewSettings) -> TestClient:
    http = TestClient(create_app(settings), follow_redirects=False)
    token = re.search(r'name="csrf_token" value="([^"]+)"', http.get("/login").text)
    assert token is not None
    data = {"email": EMAIL, "password": PASSWORD, "csrf_token": token[1]}
    assert http.post("/login", data=data).status_code == 303
    return http


def server_times(kind: str, variants: int, runs: int, redis_url: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as workdir, database(kind, Path(workdir)) as url:
        started = time.perf_counter()
        job_ids = seed(url, variants)
        seeded_s = time.perf_counter() - started
        http = signed_in(ReviewSettings(database_url=url, redis_url=redis_url))
        with session_scope(url) as session:
            deep = session.get(Job, job_ids[int(len(job_ids) * 0.9)])
            assert deep is not None
            cursor = encode_cursor(deep)
        views = {
            "queue, first page": "/",
            "queue, a page 90% deep": "/?" + _query(cursor=cursor),
            "queue, flagged on X": "/?" + _query(flagged="yes", platform="x"),
            "queue, newest first, score >= 0.5": "/?" + _query(order="newest", min_score="0.5"),
            "job view": f"/jobs/{job_ids[len(job_ids) // 2]}",
            "stats, 30 days": "/stats",
        }
        out: dict[str, Any] = {"variants": variants, "jobs": len(job_ids), "seed_s": seeded_s}
        for name, path in views.items():
            assert http.get(path).status_code == 200, path  # warm: plans, caches, templates
            samples = []
            for _ in range(runs):
                t0 = time.perf_counter()
                answer = http.get(path)
                samples.append((time.perf_counter() - t0) * 1000)
                assert answer.status_code == 200
            samples.sort()
            out[name] = {
                "median_ms": round(statistics.median(samples), 2),
                "p90_ms": round(samples[int(0.9 * (len(samples) - 1))], 2),
            }
        return out


def _query(**params: str) -> str:
    from urllib.parse import urlencode

    return urlencode(params)


def keyboard_flow(redis_url: str) -> dict[str, Any]:
    """Keys and requests per decision, reviewing 12 variants with the keyboard alone."""
    import uvicorn
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as workdir:
        url = f"sqlite:///{Path(workdir) / 'flow.db'}"
        seed(url, 12)
        app = create_app(ReviewSettings(database_url=url, redis_url=redis_url))
        port = free_port()
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        base = f"http://127.0.0.1:{port}"
        try:
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=os.environ.get("CHROMIUM", "/usr/bin/chromium"),
                    headless=True,
                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                          "--disable-component-update", "--disable-sync", "--no-first-run"],
                )  # fmt: skip
                page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
                result = _flow(page, base)
                browser.close()
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    return result


def _flow(page: Any, base: str) -> dict[str, Any]:
    requests: list[Any] = []
    page.on("request", lambda r: requests.append(r) if r.url.startswith(base) else None)
    page.goto(base + "/")
    page.keyboard.type(EMAIL)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    page.wait_for_url(base + "/")
    new_text = "Bright shoes for bright days."
    plans = {
        # decision kind: (keys, decisions, the state each decided card reaches)
        "approve": (["a"], 1, "approved"),
        "reject with a reason": (["r", "2", "Enter"], 1, "rejected"),
        "edit": (["e", "Control+a", *new_text, "Control+Enter"], 1, "edited"),
        "bulk-approve 3": (["x", "j", "x", "j", "x", "Shift+A"], 3, "approved"),
    }
    out: dict[str, Any] = {}
    for kind, (keys, decided, final) in plans.items():
        before_requests = len(requests)
        before = page.locator(f"article[data-state={final}]").count()
        for key in keys:
            page.keyboard.press(key) if len(key) > 1 else page.keyboard.type(key)
        deadline = time.monotonic() + 15  # no page.wait_for_function: the CSP forbids eval
        while page.locator(f"article[data-state={final}]").count() < before + decided:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{kind}: the page did not show the decision")
            time.sleep(0.02)
        typed = len(new_text) if kind == "edit" else 0
        out[kind] = {
            "keys_per_decision": round(len(keys) / decided, 2),
            "keys_besides_the_new_text": round((len(keys) - typed) / decided, 2),
            "requests_per_decision": round((len(requests) - before_requests) / decided, 2),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--kinds", default="sqlite,postgresql")
    parser.add_argument("--no-browser", action="store_true")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/15")
    report: dict[str, Any] = {}
    if not args.no_browser:
        report["keyboard"] = keyboard_flow(redis_url)
    for kind in args.kinds.split(","):
        report[kind] = server_times(kind, args.variants, args.runs, redis_url)
    text = json.dumps(report, indent=2)
    print(text)  # noqa: T201
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
