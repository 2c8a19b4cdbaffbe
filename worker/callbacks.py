"""Signed callbacks (Standard Webhooks): sign, and POST once to a checked address.

One POST, the way ``worker.fetch`` makes a GET: the URL is checked
(``schemas.urlguard``) at send time, the host resolved once, every address
checked, and the connection made to the checked address itself; one deadline
(``timeout_s``) covers connect, send and the whole answer; redirects are not
followed (a 3xx is a failed attempt); no proxy or environment setting is read.

A callback never fails a caption: results are committed before the outbox row is
sent, and delivery problems only ever change the delivery row (``worker.delivery``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import httpcore
from standardwebhooks.webhooks import Webhook

from schemas.errors import CaptionError
from schemas.urlguard import check_url, parse_networks
from worker.fetch import _Deadline, _PinnedBackend, _resolve

USER_AGENT = "captionq-webhooks/1"
ANY_PORT = tuple(range(1, 65536))
_ERROR_BODY_BYTES = 500


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    error: str | None
    duration_ms: float
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def signed_headers(
    *,
    msg_id: str,
    body: str,
    now: datetime,
    secret: str | None = None,
    secrets: Sequence[str] = (),
) -> dict[str, str]:
    """Standard Webhooks headers; one signature per secret, space-separated (rotation)."""
    keys = [*([secret] if secret else []), *secrets]
    signatures = " ".join(
        Webhook(key).sign(msg_id=msg_id, timestamp=now, data=body) for key in keys
    )
    return {
        "content-type": "application/json",
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signatures,
        "user-agent": USER_AGENT,
    }


def post(
    *,
    url: str,
    msg_id: str,
    body: str,
    secrets: Sequence[str],
    timeout_s: float,
    allowed_ports: Sequence[int] = (),
    allow_networks: Sequence[str] = (),
) -> AttemptResult:
    """POST ``body`` once; any outcome is an :class:`AttemptResult`, never an exception."""
    started = time.perf_counter()
    headers = signed_headers(secrets=secrets, msg_id=msg_id, body=body, now=datetime.now(UTC))
    deadline = _Deadline(time.monotonic() + timeout_s)
    networks = parse_networks(allow_networks)
    try:
        target = check_url(url, allowed_ports=allowed_ports or ANY_PORT, allow_networks=networks)
        addresses = _resolve(target, deadline=deadline, networks=networks, resolver=None)
        backend = _PinnedBackend(host=target.host, addresses=addresses, deadline=deadline)
        request_url = httpcore.URL(
            scheme=target.scheme.encode(),
            host=target.host.encode(),
            port=target.port,
            target=target.target.encode(),
        )
        wire_headers = [(b"Host", target.host_header.encode()), (b"Connection", b"close")]
        wire_headers += [(k.encode(), v.encode()) for k, v in headers.items()]
        with (
            httpcore.ConnectionPool(network_backend=backend, max_connections=1) as pool,
            pool.stream("POST", request_url, headers=wire_headers, content=body.encode()) as answer,
        ):
            text = _read_some(answer)
            status = answer.status
            answer_headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in answer.headers
            }
    except CaptionError as exc:
        return AttemptResult(None, f"{exc.code.value}: {exc.message}", _ms(started))
    except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError) as exc:
        return AttemptResult(None, f"{type(exc).__name__}: {exc}", _ms(started))
    error = None if 200 <= status < 300 else (text or f"HTTP {status}")
    return AttemptResult(status, error, _ms(started), _retry_after(answer_headers))


def _read_some(answer: httpcore.Response) -> str:
    """Up to a few hundred bytes of the answer (for the attempt log); the rest is drained."""
    kept = b""
    for chunk in answer.iter_stream():
        if len(kept) < _ERROR_BODY_BYTES:
            kept += chunk[: _ERROR_BODY_BYTES - len(kept)]
    return kept.decode("utf-8", errors="replace")


def _retry_after(headers: dict[str, str]) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date), or None."""
    value = headers.get("retry-after", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000
