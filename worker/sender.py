"""Signed callbacks (Standard Webhooks): sign, and POST to a checked address.

A :class:`Sender` POSTs to one URL the way ``worker.fetch`` makes a GET: the URL is
checked (``schemas.checks.urls``) and its host resolved once, every address checked, and
the connection made to the checked address itself; it is then kept alive for the
sender's next POST to the same URL (a batch of one endpoint's callbacks). Each POST
has one deadline (``timeout_s``) covering connect, send and the whole answer;
redirects are not followed (a 3xx is a failed attempt); no proxy or environment
setting is read.

A callback never fails a caption: results are committed before the outbox row is
sent, and delivery problems only ever change the delivery row (``schemas.store.outbox``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType

import httpcore
from sqlmodel import Session
from standardwebhooks.webhooks import Webhook

from schemas.checks.urls import DEFAULT_PORTS, Ports, check_url, parse_networks
from schemas.errors import CaptionError, PermanentError
from schemas.settings import WorkerSettings
from schemas.store.endpoints import find_endpoint, signing_secrets
from schemas.store.outbox import AttemptResult, Sent, Taken, record, subscribed, take
from schemas.store.sessions import session_scope
from schemas.store.usage import Used, add_usage
from schemas.tables import WebhookEndpoint, utcnow
from worker import metrics
from worker.connection import Deadline, PinnedBackend, resolve

USER_AGENT = "captionq-webhooks/1"
_ERROR_BODY_BYTES = 500


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
        allowed_ports: Ports | Sequence[int] = DEFAULT_PORTS,
        allow_networks: Sequence[str] = (),
    ) -> None:
        self._secrets = list(secrets)
        self._timeout_s = timeout_s
        self._deadline = Deadline(time.monotonic() + timeout_s)
        self._pool: httpcore.ConnectionPool | None = None
        self._unusable: str | None = None
        self._refused = False
        networks = parse_networks(allow_networks)
        try:
            target = check_url(url, allowed_ports=allowed_ports, allow_networks=networks)
            addresses = resolve(target, deadline=self._deadline, networks=networks, resolver=None)
        except CaptionError as exc:
            # A URL the guard refuses is refused for good (the delivery is dead now,
            # with its code); a name that does not resolve now may resolve later.
            self._unusable = f"{exc.code.value}: {exc.message}"
            self._refused = isinstance(exc, PermanentError)
            return
        backend = PinnedBackend(host=target.host, addresses=addresses, deadline=self._deadline)
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
            return AttemptResult(None, self._unusable, _ms(started), refused=self._refused)
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


# A taken delivery's lease is the POST deadline and this margin. A POST starts only if
# its deadline leaves a fifth of the margin, to record it, before the lease ends.
LEASE_MARGIN_S = 5.0


def send_batch(delivery_ids: Sequence[str], *, settings: WorkerSettings) -> Sent:
    """Take, send and record a batch of deliveries: one transaction to take them, one
    connection per endpoint, one transaction to record every attempt.

    A POST starts only if its deadline falls inside the lease (``callback_timeout_s``
    and a margin) with time left to record it; what cannot is handed back untried, for
    the next dispatch. Once the attempts are recorded, each acknowledged delivery's lag
    (row written → 2xx recorded) goes to ``captionq_delivery_lag_seconds``. After a POST
    that times out,
    that endpoint's other callbacks in the batch are not sent: each is recorded as a
    failed attempt (so a hanging receiver costs one deadline per batch, not one per
    callback) and retried on the schedule.
    """
    window_s = settings.callback_timeout_s + LEASE_MARGIN_S
    last_end = time.monotonic() + window_s - LEASE_MARGIN_S / 5  # before the lease's start
    with session_scope(settings.database_url) as session:
        rows = take(
            session=session,
            delivery_ids=delivery_ids,
            window_s=window_s,
            lock_s=settings.delivery_lock_s,
        )
        groups: dict[tuple[str, str], list[Taken]] = {}
        for row in rows:
            groups.setdefault((row.tenant_id, row.url), []).append(row)
        endpoints = {
            key: endpoint_for(session=session, tenant_id=key[0], url=key[1]) for key in groups
        }
    sent = Sent()
    for key, group in groups.items():
        _send_group(group, endpoints[key], settings=settings, last_end=last_end, sent=sent)
    if rows:
        delivered: dict[str, Used] = {}
        for row in rows:
            if _acknowledged(row, sent):
                delivered.setdefault(row.tenant_id, Used()).callbacks += 1
        with session_scope(settings.database_url) as session:
            record(session=session, sent=sent, schedule_s=settings.callback_schedule_s)
            add_usage(session=session, used=delivered)
        recorded = utcnow()
        lags_s = [(recorded - r.created_at).total_seconds() for r in rows if _acknowledged(r, sent)]
        metrics.deliveries_acknowledged(lags_s)
    return sent


def _acknowledged(row: Taken, sent: Sent) -> bool:
    return row.id in sent.attempts and sent.attempts[row.id][1].ok


def _send_group(
    group: Sequence[Taken],
    endpoint: WebhookEndpoint | None,
    *,
    settings: WorkerSettings,
    last_end: float,
    sent: Sent,
) -> None:
    refusal = _refusal(endpoint)
    if refusal is not None:
        for row in group:
            result = AttemptResult(None, refusal, 0.0, refused=True)
            sent.attempts[row.id] = (endpoint.id if endpoint else None, result)
        return
    assert endpoint is not None
    with Sender(
        endpoint.url,
        secrets=signing_secrets(endpoint, key=settings.webhook_secrets_key),
        timeout_s=settings.callback_timeout_s,
        allowed_ports=settings.allowed_ports,
        allow_networks=settings.url_allow_cidrs,
    ) as sender:
        stopped: AttemptResult | None = None
        for row in group:
            if stopped is not None:
                result = stopped
            elif time.monotonic() + settings.callback_timeout_s > last_end:
                sent.untried.append(row.id)
                continue
            elif not subscribed(endpoint, row.event_type):
                unsubscribed = f"endpoint does not subscribe to {row.event_type}"
                result = AttemptResult(None, unsubscribed, 0.0, refused=True)
            else:
                result = sender.post(msg_id=row.id, body=row.payload)
                if result.timed_out:
                    stopped = AttemptResult(None, f"not sent: {row.id} timed out before it", 0.0)
                elif result.status_code == 410:
                    stopped = AttemptResult(None, "endpoint answered 410 Gone", 0.0, refused=True)
            sent.attempts[row.id] = (endpoint.id, result)


def _refusal(endpoint: WebhookEndpoint | None) -> str | None:
    """Why nothing can be sent to ``endpoint`` now or later, if so."""
    if endpoint is None:
        return "no endpoint for this URL: the tenant deleted it"
    if endpoint.disabled_at is not None:
        return f"endpoint disabled: {endpoint.disabled_reason}"
    return None


def endpoint_for(*, session: Session, tenant_id: str, url: str) -> WebhookEndpoint | None:
    """The endpoint a delivery goes to: registered when the job was submitted (or by the
    tenant); a worker reads tenant configuration, never writes it."""
    return find_endpoint(session=session, tenant_id=tenant_id, url=url)
