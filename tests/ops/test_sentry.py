"""Sentry through a local transport: the DSN points at a loopback server that takes the
SDK's envelopes as Sentry would. The API and the review desk report an unhandled error
with the FastAPI integration; a worker reports an error logged inside a task with the Celery
integration; beat's periodic tasks check in to Sentry
Crons; all through the scrubbers (``schemas.sentry``)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from schemas.names import QUEUE_IO, TASK_DELIVER
from schemas.settings import CoreSettings
from tests.support.servers import LoopbackServer
from tests.support.stack import Stack
from tests.support.waiting import wait_for

API_KEY = "cq_live_" + "k3y" * 8

API_SCRIPT = textwrap.dedent(
    f"""
    import sys
    import sentry_sdk
    from fastapi.testclient import TestClient
    from producers.api import create_app
    from schemas.settings import ApiSettings

    app = create_app(ApiSettings(database_url=sys.argv[2], sentry_dsn=sys.argv[1]))

    @app.get("/boom")
    def boom() -> None:
        credential = "{API_KEY}"
        raise RuntimeError("the API broke using " + credential)

    with TestClient(app, raise_server_exceptions=False) as http:
        assert http.get("/boom").status_code == 500
    sentry_sdk.flush(10)
    """
)


REVIEW_SCRIPT = textwrap.dedent(
    f"""
    import sys
    import sentry_sdk
    from fastapi.testclient import TestClient
    from review.app import create_app
    from schemas.settings import ReviewSettings

    app = create_app(ReviewSettings(database_url=sys.argv[2], sentry_dsn=sys.argv[1]))

    @app.get("/boom")
    def boom() -> None:
        password = "{API_KEY}"
        raise RuntimeError("the review desk broke using " + password)

    with TestClient(app, raise_server_exceptions=False) as http:
        answer = http.get("/boom")
        assert answer.status_code == 500, answer.status_code
        assert "{API_KEY}" not in answer.text
    sentry_sdk.flush(10)
    """
)


def envelopes(server: LoopbackServer) -> list[list[dict[str, object]]]:
    """Each envelope the server took, as its JSON lines (header, item header, item...)."""
    found = []
    for seen in server.seen:
        if seen.path.endswith("/envelope/"):
            lines = [line for line in seen.body.split(b"\n") if line.strip()]
            found.append([json.loads(line) for line in lines if line.startswith(b"{")])
    return found


def test_the_api_reports_an_unhandled_error_with_fastapi(
    http_server: LoopbackServer, database_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "api.py"
    script.write_text(API_SCRIPT)
    dsn = f"http://public@127.0.0.1:{http_server.port}/1"
    done = subprocess.run(
        [sys.executable, str(script), dsn, database_url],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [item for env in envelopes(http_server) for item in env if "exception" in item]
    (event,) = events
    assert "fastapi" in event["sdk"]["integrations"]  # type: ignore[index]
    assert event["transaction"] == "/boom"
    assert API_KEY not in json.dumps(event)


def test_the_review_desk_reports_an_unhandled_error_with_fastapi(
    http_server: LoopbackServer, database_url: str, tmp_path: Path
) -> None:
    script = tmp_path / "desk.py"  # not review.py: the script's folder comes first
    script.write_text(REVIEW_SCRIPT)
    dsn = f"http://public@127.0.0.1:{http_server.port}/1"
    done = subprocess.run(
        [sys.executable, str(script), dsn, database_url],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [item for env in envelopes(http_server) for item in env if "exception" in item]
    (event,) = events
    assert "fastapi" in event["sdk"]["integrations"]  # type: ignore[index]
    assert event["transaction"] == "/boom"
    assert event["environment"] == "development"
    assert API_KEY not in json.dumps(event)


def test_a_worker_and_beat_report_through_the_celery_integration(
    http_server: LoopbackServer, database_url: str, redis_db: str, tmp_path: Path
) -> None:
    settings = CoreSettings(database_url=database_url, redis_url=redis_db)
    dsn = f"http://public@127.0.0.1:{http_server.port}/1"
    env = {"SENTRY_DSN": dsn, "CAPTIONER_MODEL": "captionq/noop", "REAPER_INTERVAL_S": "1"}
    stack = Stack.open(settings, env=env, logdir=tmp_path)
    try:
        stack.start("gpu+io")
        stack.start("beat")
        from producers.publish import producer_app

        # Not a deliver message: the task logs an error (and drops it; beat sends rows).
        producer_app(redis_db).send_task(
            TASK_DELIVER, args=[{"rows": "not a deliver message"}], queue=QUEUE_IO
        )

        def reported() -> bool:
            items = [item for env in envelopes(http_server) for item in env]
            slugs = {i.get("monitor_slug") for i in items}
            logged = any("dropping an unreadable deliver message" in json.dumps(i) for i in items)
            return logged and {"captionq-reaper", "captionq-dispatch"} <= slugs

        wait_for(reported, timeout_s=60, what="an error event and a Crons check-in")
    finally:
        stack.stop()
    items = [item for env in envelopes(http_server) for item in env]
    (event,) = [i for i in items if "dropping an unreadable deliver message" in json.dumps(i)]
    assert "celery" in event["sdk"]["integrations"]  # type: ignore[index]
    check_ins = [i for i in items if i.get("monitor_slug")]
    assert {"captionq-reaper", "captionq-dispatch"} <= {i["monitor_slug"] for i in check_ins}
