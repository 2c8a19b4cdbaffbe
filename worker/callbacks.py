"""Signed callbacks (Standard Webhooks): sign, and POST to a checked address.

A :class:`Sender` POSTs to one URL the way ``worker.fetch`` makes a GET: the URL is
checked (``schemas.urlguard``) and its host resolved once, every address checked, and
the connection made to the checked address itself; it is then kept alive for the
sender's next POST to the same URL (a batch of one endpoint's callbacks). Each POST
has one deadline (``timeout_s``) covering connect, send and the whole answer;
redirects are not followed (a 3xx is a failed attempt); no proxy or environment
setting is read.

A callback never fails a caption: results are committed before the outbox row is
sent, and delivery problems only ever change the delivery row (``worker.delivery``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType

import httpcore
from standardwebhooks.webhooks import Webhook

from schemas.errors import CaptionError
from schemas.urlguard import check_url, parse_networks
from worker.fetch import _Deadline, _PinnedBackend, _resolve

USER_AGENT = "captionq-webhooks/1"
ANY_PORT = range(1, 65536)  # a range: `in` is a comparison, not a scan
_ERROR_BODY_BYTES = 500


@dataclass(frozen=True)
class AttemptResult:
    status_code: int | None
    error: str | None
    duration_ms: float
    retry_after_s: float | None = None
    refused: bool = False  # never sent, and never will be: the delivery is dead
    timed_out: bool = False  # no answer within the deadline

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


class Sender:
    """Signed POSTs to one URL, one after another, over one kept-alive connection to
    an address checked when the sender was made. Any outcome of a POST is an
    :class:`AttemptResult`, never an exception."""

    def __init__(
        self,
        url: str,
        *,
        secrets: Sequence[str],
        timeout_s: float,
        allowed_ports: Sequence[int] = (),
        allow_networks: Sequence[str] = (),
    ) -> None:
        self._secrets = list(secrets)
        self._timeout_s = timeout_s
        self._deadline = _Deadline(time.monotonic() + timeout_s)
        self._pool: httpcore.ConnectionPool | None = None
        self._unusable: str | None = None
        networks = parse_networks(allow_networks)
        try:
            ports = allowed_ports or ANY_PORT
            target = check_url(url, allowed_ports=ports, allow_networks=networks)
            addresses = _resolve(target, deadline=self._deadline, networks=networks, resolver=None)
        except CaptionError as exc:
            self._unusable = f"{exc.code.value}: {exc.message}"
            return
        backend = _PinnedBackend(host=target.host, addresses=addresses, deadline=self._deadline)
        self._pool = httpcore.ConnectionPool(network_backend=backend, max_connections=1)
        self._url = httpcore.URL(
            scheme=target.scheme.encode(),
            host=target.host.encode(),
            port=target.port,
            target=target.target.encode(),
        )
        self._host = (b"Host", target.host_header.encode())

    def post(self, *, msg_id: str, body: str) -> AttemptResult:
        """POST ``body`` once, signed, as ``webhook-id: msg_id``."""
        started = time.perf_counter()
        if self._pool is None:
            return AttemptResult(None, self._unusable, _ms(started))
        headers = signed_headers(
            secrets=self._secrets, msg_id=msg_id, body=body, now=datetime.now(UTC)
        )
        wire_headers = [self._host, *((k.encode(), v.encode()) for k, v in headers.items())]
        self._deadline.end = time.monotonic() + self._timeout_s
        try:
            with self._pool.stream(
                "POST", self._url, headers=wire_headers, content=body.encode()
            ) as answer:
                text = _read_some(answer)
                status = answer.status
                answer_headers = {
                    k.decode("latin-1").lower(): v.decode("latin-1") for k, v in answer.headers
                }
        except httpcore.TimeoutException as exc:
            return AttemptResult(None, f"{type(exc).__name__}: {exc}", _ms(started), timed_out=True)
        except (httpcore.NetworkError, httpcore.ProtocolError) as exc:
            return AttemptResult(None, f"{type(exc).__name__}: {exc}", _ms(started))
        error = None if 200 <= status < 300 else (text or f"HTTP {status}")
        return AttemptResult(status, error, _ms(started), _retry_after(answer_headers))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> Sender:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


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
