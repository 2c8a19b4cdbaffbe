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

import pytest

from schemas.names import QUEUE_IO, TASK_DELIVER
from schemas.settings import CoreSettings
from tests.support.servers import LoopbackServer
from tests.support.stack import Stack
from tests.support.waiting import wait_for

API_KEY = "cq_live_" + "k3y" * 8

# One web app (``module``'s ``create_app`` with its ``settings`` class) raising inside a
# route, as a subprocess: Sentry's FastAPI integration turns itself on there.
APP_SCRIPT = textwrap.dedent(
    """
    import sys
    import sentry_sdk
    from fastapi.testclient import TestClient
    from {module} import create_app
    from schemas.settings import {settings}

    app = create_app({settings}(database_url=sys.argv[2], sentry_dsn=sys.argv[1]))

    @app.get("/boom")
    def boom() -> None:
        credential = "{key}"
        raise RuntimeError("it broke using " + credential)

    with TestClient(app, raise_server_exceptions=False) as http:
        answer = http.get("/boom")
        assert answer.status_code == 500, answer.status_code
        assert "{key}" not in answer.text
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


@pytest.mark.parametrize(
    ("module", "settings"),
    [("producers.api", "ApiSettings"), ("review.app", "ReviewSettings")],
    ids=["api", "review-desk"],
)
def test_a_web_app_reports_an_unhandled_error_with_fastapi(
    http_server: LoopbackServer, database_url: str, tmp_path: Path, module: str, settings: str
) -> None:
    script = tmp_path / "app_under_test.py"  # a name no package of ours has
    script.write_text(APP_SCRIPT.format(module=module, settings=settings, key=API_KEY))
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
        stack.start("all")
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
