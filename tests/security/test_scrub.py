"""Sentry scrubbing: unit tests on event dicts, and a real sentry_sdk sending to a
loopback server, whose received envelopes must hold no image bytes or secrets."""

from __future__ import annotations

import base64
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from schemas.sentry import FILTERED, before_breadcrumb, before_send, scrub
from tests.support.servers import LoopbackServer

IMAGE = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40
IMAGE_B64 = base64.b64encode(IMAGE).decode()
API_KEY = "cq_live_" + "k3y" * 8
SECRET = "whsec_" + "c2VjcmV0" * 4
LEAKS = (API_KEY, SECRET, "k3yk3yk3y", IMAGE_B64[:64], IMAGE_B64[-64:], "\\x89PNG", "x89PNG")


def _assert_clean(serialised: str) -> None:
    for leak in LEAKS:
        assert leak not in serialised, f"{leak[:20]!r} leaked"


@pytest.mark.unit
def test_event_values_are_scrubbed_recursively() -> None:
    event = {
        "request": {
            "url": f"https://api.test/jobs?key={API_KEY}",
            "headers": {"Authorization": f"Bearer {API_KEY}", "X-Request-Id": "r-1"},
            "data": {"image_base64": IMAGE_B64, "style": "witty"},
        },
        "extra": {"raw": IMAGE, "note": f"inline data:image/png;base64,{IMAGE_B64}"},
        "contexts": {"webhook": {"endpoint": "https://t.test/hook", "signing": SECRET}},
        "exception": {
            "values": [
                {
                    "value": f"delivery failed with {SECRET}",
                    "stacktrace": {
                        "frames": [{"vars": {"blob": repr(IMAGE)[:1024], "n": 3, "ok": True}}]
                    },
                }
            ]
        },
        "breadcrumbs": {"values": [{"data": {"headers": [("authorization", "Basic abc")]}}]},
    }
    scrubbed: Any = before_send(event, {})  # type: ignore[arg-type]
    assert scrubbed is not None
    _assert_clean(repr(scrubbed))
    assert scrubbed["request"]["headers"]["Authorization"] == FILTERED
    assert scrubbed["request"]["headers"]["X-Request-Id"] == "r-1"
    assert scrubbed["request"]["data"] == {"image_base64": FILTERED, "style": "witty"}
    assert scrubbed["extra"]["raw"] == f"[{len(IMAGE)} bytes filtered]"
    frame_vars = scrubbed["exception"]["values"][0]["stacktrace"]["frames"][0]["vars"]
    assert frame_vars["n"] == 3
    assert frame_vars["ok"] is True
    assert scrubbed["breadcrumbs"]["values"][0]["data"]["headers"][0][1] == FILTERED


@pytest.mark.unit
@pytest.mark.parametrize(
    "value",
    [
        pytest.param(IMAGE.decode("utf-8", "replace"), id="bytes-decoded-as-text"),
        pytest.param(IMAGE_B64, id="bare-base64"),
        pytest.param(f"b{IMAGE!r}"[1:], id="bytes-repr"),
        pytest.param(bytearray(IMAGE), id="bytearray"),
        pytest.param(memoryview(IMAGE), id="memoryview"),
    ],
)
def test_binary_values_never_survive(value: object) -> None:
    assert "PNG" not in str(scrub(value))
    _assert_clean(str(scrub(value)))


@pytest.mark.unit
def test_breadcrumbs_are_scrubbed_and_ordinary_text_kept() -> None:
    crumb = {"message": f"POST with key {API_KEY}", "data": {"status": 200, "body": IMAGE}}
    scrubbed = before_breadcrumb(crumb, {})  # type: ignore[arg-type]
    assert scrubbed == {
        "message": f"POST with key {FILTERED}",
        "data": {"status": 200, "body": f"[{len(IMAGE)} bytes filtered]"},
    }
    assert scrub("caption for job 42: a red bicycle") == "caption for job 42: a red bicycle"


SENDER = textwrap.dedent(
    """
    import base64, sys
    import sentry_sdk
    from schemas.sentry import init_sentry

    IMAGE = b"\\x89PNG\\r\\n\\x1a\\n" + bytes(range(256)) * 40
    API_KEY = "cq_live_" + "k3y" * 8
    SECRET = "whsec_" + "c2VjcmV0" * 4
    B64 = base64.b64encode(IMAGE).decode()

    init_sentry(sys.argv[1], environment="test")
    sentry_sdk.add_breadcrumb(
        category="fetch", message=f"uploaded with {API_KEY}",
        data={"body": IMAGE, "Authorization": f"Bearer {API_KEY}"},
    )
    sentry_sdk.set_extra("payload", {"image_base64": B64, "note": B64, "raw": IMAGE})
    sentry_sdk.set_context("tenant", {"signing": SECRET})

    def deliver(blob, credential, signing, inline, nested):
        raise RuntimeError(f"delivery failed using {credential} and {signing}")

    try:
        deliver(IMAGE, API_KEY, SECRET, "data:image/png;base64," + B64, {"img": IMAGE})
    except RuntimeError:
        sentry_sdk.capture_exception()
    sentry_sdk.flush(10)
    """
)


@pytest.mark.integration
def test_real_sentry_envelopes_carry_no_secrets(
    http_server: LoopbackServer, tmp_path: Path
) -> None:
    script = tmp_path / "sender.py"
    script.write_text(SENDER)
    dsn = f"http://public@127.0.0.1:{http_server.port}/1"
    done = subprocess.run(
        [sys.executable, str(script), dsn],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    envelopes = [s for s in http_server.seen if s.path == "/api/1/envelope/"]
    assert envelopes, "sentry_sdk sent nothing to the loopback server"
    text = b"\n".join(s.body for s in envelopes).decode("utf-8", "replace")
    assert "RuntimeError" in text
    assert "deliver" in text
    assert '"blob"' in text
    assert f"<{len(IMAGE)} bytes>" in text
    assert FILTERED in text
    _assert_clean(text)
