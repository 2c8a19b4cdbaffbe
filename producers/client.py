"""The Python SDK: an HTTP client of the ingestion API, sync and async.

    from producers.client import CaptionClient

    with CaptionClient("https://captionq.example.com", api_key="cq_...") as client:
        accepted = client.submit(image="shoe.jpg", styles=["playful"], platforms=["instagram"])
        job = client.wait(accepted)          # polls politely until succeeded/failed/cancelled
        print(job.caption, [v.text for v in job.variants])

``AsyncCaptionClient`` has the same methods, to ``await``. Every route is a method;
results are the API's models from ``schemas.api``; a refusal raises
:class:`producers.sdk.errors.ApiError` (a ``RequestError``: ``.code``, ``.message``,
``.status``). 429 and 503 are retried after ``Retry-After`` with the same idempotency
key (every submission gets one), so a retry never makes a second job.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, Self

import httpx

from producers.sdk import calls
from producers.sdk.calls import Call, ImageInput
from producers.sdk.errors import (
    RETRIED_STATUSES,
    ApiError,
    ApiUnreachableError,
    backoff_s,
    from_response,
)
from schemas.accounts import KeyPublic
from schemas.api import DeliveryPublic, JobAccepted, JobPublic
from schemas.decisions import JobDecided
from schemas.names import PRIORITY_DEFAULT

__all__ = ["ApiError", "ApiUnreachableError", "AsyncCaptionClient", "CaptionClient", "ImageInput"]
JobRef = str | JobAccepted | JobPublic


def _job_id(job: JobRef) -> str:
    return job if isinstance(job, str) else job.id


class _Routes:
    """Every route once; ``_call`` (sync or async) sends it. Each method returns the
    result (``CaptionClient``) or an awaitable of it (``AsyncCaptionClient``)."""

    def _call(self, call: Call) -> Any:
        raise NotImplementedError

    # --- jobs ----------------------------------------------------------------------

    def submit(
        self,
        *,
        image: ImageInput,
        styles: Sequence[str],
        platforms: Sequence[str],
        variants: int = 3,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        priority: int = PRIORITY_DEFAULT,
        brand_voice: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Any:
        """Submit one job (``image``: a path, bytes or an http(s) URL) -> ``JobAccepted``."""
        job = {k: v for k, v in locals().items() if k != "self"}
        return self._call(calls.submit(job))

    def submit_bulk(self, jobs: Sequence[Mapping[str, Any]]) -> Any:
        """Submit jobs (mappings of :meth:`submit`'s arguments) in one request, each judged
        on its own -> a list, in order, of ``JobAccepted`` or the ``ApiError`` refusing it."""
        return self._call(calls.submit_bulk(jobs))

    def upload(self, *, image: str | Path | bytes, filename: str = "image", **job: Any) -> Any:
        """Submit one job whose image goes as a multipart file -> ``JobAccepted``."""
        name = Path(image).name if isinstance(image, str | Path) else filename
        return self._call(calls.upload(image, job, name))

    def get(self, job: JobRef) -> Any:
        """One job -> ``JobPublic``."""
        return self._call(calls.get_job(_job_id(job)))

    def list(self, *, status: str | None = None, limit: int = 50, cursor: str | None = None) -> Any:
        """A page of jobs, newest first -> ``JobPage`` (pass ``next_cursor`` back)."""
        return self._call(calls.list_jobs(status, limit, cursor))

    def cancel(self, job: JobRef) -> Any:
        """Cancel a job that has not started -> ``JobPublic`` (409 once it runs)."""
        return self._call(calls.cancel(_job_id(job)))

    def delete(self, job: JobRef) -> Any:
        """Delete a job with its image, variants and deliveries."""
        return self._call(calls.delete_job(_job_id(job)))

    # --- webhooks ------------------------------------------------------------------

    def create_endpoint(self, url: str, *, event_types: Sequence[str] = ()) -> Any:
        """Register a callback URL -> ``EndpointSecret`` (the secret, shown once)."""
        return self._call(calls.create_endpoint(url, event_types))

    def endpoints(self) -> Any:
        return self._call(calls.read("/v1/webhooks", calls.Endpoints))

    def rotate_endpoint(self, endpoint_id: str) -> Any:
        return self._call(calls.endpoint_action(endpoint_id, "rotate"))

    def enable_endpoint(self, endpoint_id: str) -> Any:
        return self._call(calls.endpoint_action(endpoint_id, "enable"))

    def disable_endpoint(self, endpoint_id: str) -> Any:
        return self._call(calls.endpoint_action(endpoint_id, "disable"))

    def delete_endpoint(self, endpoint_id: str) -> Any:
        return self._call(Call("DELETE", f"/v1/webhooks/{endpoint_id}"))

    def ping_endpoint(self, endpoint_id: str) -> Any:
        """Send a signed ``webhook.ping`` -> its ``DeliveryPublic``."""
        return self._call(calls.endpoint_action(endpoint_id, "ping"))

    def delivery(self, delivery_id: str) -> Any:
        return self._call(calls.read(f"/v1/webhooks/deliveries/{delivery_id}", DeliveryPublic))

    def deliveries(self, *, status: str | None = None, limit: int = 100) -> Any:
        return self._call(calls.list_deliveries(status, limit))

    def replay(self, delivery_id: str) -> Any:
        """Send an event again: same ``webhook-id``, same body."""
        path = f"/v1/webhooks/deliveries/{delivery_id}/replay"
        return self._call(calls.post(path, DeliveryPublic))

    def replay_dead(self) -> Any:
        return self._call(calls.post("/v1/webhooks/deliveries/replay-dead", calls.Replayed))

    # --- review --------------------------------------------------------------------

    def review_queue(self, **filters: Any) -> Any:
        """Jobs with variants waiting for review -> ``ReviewQueuePage``."""
        return self._call(calls.review_queue(filters))

    def approve(self, variant_id: str, *, note: str | None = None, redecide: bool = False) -> Any:
        return self._call(calls.decide(variant_id, "approve", {"note": note, "redecide": redecide}))

    def reject(
        self,
        variant_id: str,
        *,
        reason: str = "other",
        note: str | None = None,
        redecide: bool = False,
    ) -> Any:
        body = {"reason": reason, "note": note, "redecide": redecide}
        return self._call(calls.decide(variant_id, "reject", body))

    def edit(
        self, variant_id: str, text: str, *, note: str | None = None, redecide: bool = False
    ) -> Any:
        body = {"text": text, "note": note, "redecide": redecide}
        return self._call(calls.decide(variant_id, "edit", body))

    def approve_job(self, job: JobRef, *, note: str | None = None) -> Any:
        return self._call(calls.approve_job(_job_id(job), note))

    def decisions(self, job: JobRef) -> Any:
        path = f"/v1/review/jobs/{_job_id(job)}/decisions"
        return self._call(calls.read(path, JobDecided))

    def bulk_approve(self, variant_ids: Sequence[str], *, note: str | None = None) -> Any:
        return self._call(calls.bulk_approve(variant_ids, note))

    # --- the catalogue and the tenant's keys (admin scope) -------------------------

    def styles(self) -> Any:
        return self._call(calls.STYLES)

    def platforms(self) -> Any:
        return self._call(calls.PLATFORMS)

    def tenant_policy(self) -> Any:
        """The calling tenant's auto-approve threshold, and whether it is stale."""
        return self._call(calls.TENANT)

    def usage(self, *, since: date | None = None, until: date | None = None) -> Any:
        """The tenant's usage by UTC day (an admin key)."""
        return self._call(calls.usage(since, until))

    def create_key(
        self, *, scopes: Sequence[str] = ("submit", "read"), expires_at: datetime | None = None
    ) -> Any:
        return self._call(calls.create_key(scopes, expires_at))

    def list_keys(self) -> Any:
        return self._call(calls.read("/v1/keys", calls.Keys))

    def revoke_key(self, prefix: str) -> Any:
        return self._call(calls.post(f"/v1/keys/{prefix}/revoke", KeyPublic))

    def set_key_expiry(self, prefix: str, expires_at: datetime | None) -> Any:
        return self._call(calls.set_key_expiry(prefix, expires_at))


class _Transport:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout_s: float,
        retries: int,
        max_retry_wait_s: float,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = {"user-agent": "captionq-sdk/1"}
        if api_key:
            self.headers["authorization"] = f"Bearer {api_key}"
        self.timeout = httpx.Timeout(timeout_s)
        self.retries = retries
        self.max_retry_wait_s = max_retry_wait_s

    def outcome(self, call: Call, response: httpx.Response | None, attempt: int) -> float | None:
        """Seconds to wait before sending ``call`` again, or None: it is answered (the
        caller reads ``response``) or it has failed for good (raised here)."""
        if response is not None and response.status_code < 400:
            return None
        error = from_response(response) if response is not None else None
        retriable = (error is None and call.retry_safe) or (
            error is not None and error.status in RETRIED_STATUSES
        )
        if not retriable or attempt > self.retries:
            raise error or ApiUnreachableError(f"{call.method} {call.path}: no answer from the API")
        hinted = error.retry_after_s if error is not None else None
        return backoff_s(attempt, hinted=hinted, cap_s=self.max_retry_wait_s)

    def settle(self, call: Call, response: httpx.Response | None, attempt: int) -> tuple[bool, Any]:
        """(True, the result) when ``call`` is answered; (False, seconds to wait) when it is
        to be sent again; raises when it has failed for good."""
        wait_s = self.outcome(call, response, attempt)
        if wait_s is None:
            assert response is not None
            return True, call.parse(response.content)
        return False, wait_s

    def request(self, call: Call) -> dict[str, Any]:
        return {
            "method": call.method,
            "url": call.path,
            "params": call.params,
            "json": call.json,
            "data": call.data,
            "files": call.files,
        }


def _next_poll(poll_s: float, deadline: float, job: JobPublic, job_id: str, limit: float) -> float:
    """How long ``wait`` sleeps next: ``poll_s`` growing by half up to 5 s, never past the
    deadline; ``TimeoutError`` once the deadline has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError(f"job {job_id} still {job.status} after {limit} s")
    return min(poll_s, left)


POLL_GROWTH, POLL_MAX_S = 1.5, 5.0


class _Client(_Routes):
    """What both clients share: their settings and an httpx client of ``_http_class``."""

    _http_class: Any

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 4,
        max_retry_wait_s: float = 30.0,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._t = _Transport(base_url, api_key, timeout_s, retries, max_retry_wait_s)
        self._http = self._http_class(
            base_url=self._t.base_url,
            headers=self._t.headers,
            timeout=self._t.timeout,
            transport=transport,
        )


class CaptionClient(_Client):
    """The API, over one kept-alive connection pool. ``timeout_s`` bounds each request;
    ``retries`` (after 429, 503, or no answer to a request safe to repeat) waits as
    ``Retry-After`` says, at most ``max_retry_wait_s`` each."""

    _http_class = httpx.Client

    def _call(self, call: Call) -> Any:
        for attempt in itertools.count(1):
            try:
                response: httpx.Response | None = self._http.request(**self._t.request(call))
            except httpx.TransportError:
                response = None
            done, value = self._t.settle(call, response, attempt)
            if done:
                return value
            time.sleep(value)
        raise AssertionError("unreachable")

    def wait(self, job: JobRef, *, timeout_s: float = 60.0, poll_s: float = 0.2) -> JobPublic:
        """Poll until the job is succeeded, failed or cancelled (every ``poll_s``, growing
        to 5 s); ``TimeoutError`` past ``timeout_s``."""
        job_id, deadline = _job_id(job), time.monotonic() + timeout_s
        while True:
            found: JobPublic = self.get(job_id)
            if found.terminal:
                return found
            time.sleep(_next_poll(poll_s, deadline, found, job_id, timeout_s))
            poll_s = min(POLL_MAX_S, poll_s * POLL_GROWTH)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class AsyncCaptionClient(_Client):
    """:class:`CaptionClient` for asyncio: the same methods, awaited."""

    _http_class = httpx.AsyncClient

    async def _call(self, call: Call) -> Any:
        for attempt in itertools.count(1):
            try:
                response = await self._http.request(**self._t.request(call))
            except httpx.TransportError:
                response = None
            done, value = self._t.settle(call, response, attempt)
            if done:
                return value
            await asyncio.sleep(value)
        raise AssertionError("unreachable")

    async def wait(self, job: JobRef, *, timeout_s: float = 60.0, poll_s: float = 0.2) -> JobPublic:
        job_id, deadline = _job_id(job), time.monotonic() + timeout_s
        while True:
            found: JobPublic = await self.get(job_id)
            if found.terminal:
                return found
            await asyncio.sleep(_next_poll(poll_s, deadline, found, job_id, timeout_s))
            poll_s = min(POLL_MAX_S, poll_s * POLL_GROWTH)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.aclose()
