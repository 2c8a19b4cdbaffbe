"""The callback receiver: a Standard Webhooks endpoint on loopback that a test steers.

It verifies every signature with the ``standardwebhooks`` library (a bad one is
answered 401), counts the connections it was opened (the sender keeps one alive per
endpoint), and answers as the test says: ``status`` after ``delay_s``, or by name
with ``mode``: ``ok`` (204), ``fail`` (500), ``gone`` (410), ``hang`` (204, after
the sender's deadline).

- ``requests``: every POST, in the order it arrived (``ids``: their webhook-ids);
- ``received``: the callbacks it took at once with a 2xx, the ones a sender counts as
  delivered (``verified`` says whether each was signed right). ``on_first`` runs
  before answering the first of these for each webhook-id (to crash the sender then).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.support.servers import Loopback

MODES = {"ok": (204, 0.0), "fail": (500, 0.0), "gone": (410, 0.0), "hang": (204, 4.0)}


@dataclass(frozen=True)
class Received:
    """One callback as it arrived: its body raw and parsed."""

    webhook_id: str
    raw: bytes
    body: dict[str, Any]
    verified: bool

    @property
    def event_type(self) -> str:
        return str(self.body.get("type", ""))

    @property
    def job_id(self) -> str:
        data = self.body.get("data")
        return str(data.get("id", "")) if isinstance(data, dict) else ""


@dataclass
class Receiver:
    secret: str
    status: int = 204
    delay_s: float = 0.0
    on_first: Callable[[str], None] | None = None
    connections: int = 0
    requests: list[Received] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._received_ids: set[str] = set()
        self.http = Loopback(_handler_class(self))

    @property
    def mode(self) -> str:
        return next((n for n, way in MODES.items() if way == (self.status, self.delay_s)), "")

    @mode.setter
    def mode(self, name: str) -> None:
        self.status, self.delay_s = MODES[name]

    @property
    def ids(self) -> list[str]:
        return [request.webhook_id for request in self.requests]

    @property
    def url(self) -> str:
        return self.url_for("hooks")

    def url_for(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http.port}/{path}"

    def stop(self) -> None:
        self.http.stop()

    def take(self, raw: bytes, headers: dict[str, str]) -> int:
        """Record one POST (headers with lower-case names); the status to answer, once
        ``delay_s`` has passed."""
        got = Received(headers.get("webhook-id", ""), raw, _json(raw), self._verifies(raw, headers))
        self.requests.append(got)
        status, delay_s = self.status, self.delay_s
        if 200 <= status < 300 and delay_s == 0:
            first = got.webhook_id not in self._received_ids
            self._received_ids.add(got.webhook_id)
            self.received.append(got)
            if first and self.on_first is not None:
                self.on_first(got.webhook_id)
        if delay_s:
            time.sleep(delay_s)
        return status if got.verified else 401

    def _verifies(self, raw: bytes, headers: dict[str, str]) -> bool:
        try:
            Webhook(self.secret).verify(raw, headers)
        except WebhookVerificationError:
            return False
        return True


def _json(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _handler_class(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keeps the sender's connection alive

        def setup(self) -> None:
            receiver.connections += 1
            super().setup()

        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            headers = {k.lower(): v for k, v in self.headers.items()}
            self.send_response(receiver.take(raw, headers))
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            return None

    return Handler
