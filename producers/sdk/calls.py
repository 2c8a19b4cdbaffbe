"""Every API route as a :class:`Call`: the method, path, body and result type that the
sync and async clients both send. One place says what each route takes and answers."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from producers.api.statuses import status_for
from producers.sdk.errors import ApiError
from schemas.accounts import KeyCreated, KeyPublic, TenantPolicyPublic, UsagePage
from schemas.api import (
    BulkAccepted,
    DeliveryPublic,
    EndpointPublic,
    EndpointSecret,
    JobAccepted,
    JobPage,
    JobPublic,
    PlatformCatalogue,
    StyleCatalogue,
)
from schemas.decisions import (
    BulkDecided,
    JobApproved,
    ReviewQueuePage,
    VariantDecided,
)
from schemas.errors import ErrorCode, RequestError

ImageInput = str | Path | bytes


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    result: Any = None  # a pydantic model, a TypeAdapter, or None (no body)
    params: Mapping[str, Any] | None = None
    json: Any = None
    data: Mapping[str, str] | None = None
    files: Mapping[str, tuple[str, bytes]] | None = None
    retry_safe: bool = field(default=False)  # may be sent again after no answer
    then: Callable[[Any], Any] | None = None  # what the client returns, from the result

    def parse(self, content: bytes) -> Any:
        if self.result is None:
            return None
        if isinstance(self.result, TypeAdapter):
            parsed = self.result.validate_json(content)
        else:
            parsed = self.result.model_validate_json(content)
        return self.then(parsed) if self.then is not None else parsed


def read(path: str, result: Any, **params: Any) -> Call:
    query = {k: v for k, v in params.items() if v is not None}
    return Call("GET", path, result, params=query or None, retry_safe=True)


def post(path: str, result: Any, body: Any = None) -> Call:
    return Call("POST", path, result, json=body)


Endpoints = TypeAdapter(list[EndpointPublic])
Deliveries = TypeAdapter(list[DeliveryPublic])
Keys = TypeAdapter(list[KeyPublic])
Replayed = TypeAdapter(dict[str, int])


def job_fields(job: Mapping[str, Any]) -> dict[str, Any]:
    """A job as the API takes it: ``image`` (a path, bytes or an http(s) URL) becomes
    ``image_url`` or ``image_base64``; every job gets an idempotency key (so that a retry
    finds the same job); fields left None are left out."""
    fields = {k: v for k, v in job.items() if k != "image" and v is not None}
    fields.setdefault("idempotency_key", f"sdk-{uuid.uuid4()}")
    image = job.get("image")
    if isinstance(image, str) and image.startswith(("http://", "https://")):
        fields["image_url"] = image
    elif image is not None:
        fields["image_base64"] = base64.b64encode(image_bytes(image)).decode()
    return fields


def image_bytes(image: str | Path | bytes) -> bytes:
    if isinstance(image, bytes):
        return image
    try:
        return Path(image).read_bytes()
    except OSError as exc:
        raise RequestError(
            f"cannot read {image}: {exc.strerror}", code=ErrorCode.image_missing
        ) from exc


# --- jobs ------------------------------------------------------------------------------


def submit(job: Mapping[str, Any]) -> Call:
    body = job_fields(job)  # the API judges it, as it judges every way in
    return Call("POST", "/v1/jobs", JobAccepted, json=body, retry_safe=True)


def submit_bulk(jobs: Sequence[Mapping[str, Any]]) -> Call:
    """The jobs as one bulk request; a job the SDK cannot even build (a file that cannot
    be read) is sent as it is, so that the API judges it with the others."""
    body = [job_fields(job) for job in jobs]
    return Call(
        "POST", "/v1/jobs/bulk", BulkAccepted, json={"jobs": body}, retry_safe=True, then=_items
    )


def _items(bulk: BulkAccepted) -> list[JobAccepted | ApiError]:
    """Each item of a bulk answer: its ``JobAccepted``, or the ``ApiError`` that refused
    it (with the status the API answers that code with alone)."""
    return [
        item.job
        if item.job is not None
        else ApiError(
            item.error.message, code=item.error.code, status=status_for(ErrorCode(item.error.code))
        )
        for item in bulk.jobs
        if item.job is not None or item.error is not None
    ]


def upload(image: str | Path | bytes, job: Mapping[str, Any], filename: str) -> Call:
    fields = job_fields({**job, "image": None})
    return Call(
        "POST",
        "/v1/jobs/upload",
        JobAccepted,
        data={"job": json.dumps(fields)},
        files={"image": (filename, image_bytes(image))},
        retry_safe=True,
    )


def get_job(job_id: str) -> Call:
    return read(f"/v1/jobs/{job_id}", JobPublic)


def list_jobs(status: str | None, limit: int, cursor: str | None) -> Call:
    return read("/v1/jobs", JobPage, status=status, limit=limit, cursor=cursor)


def cancel(job_id: str) -> Call:
    return post(f"/v1/jobs/{job_id}/cancel", JobPublic)


def delete_job(job_id: str) -> Call:
    return Call("DELETE", f"/v1/jobs/{job_id}")


# --- webhooks: endpoints and deliveries ------------------------------------------------


def create_endpoint(url: str, event_types: Sequence[str]) -> Call:
    return Call(
        "POST", "/v1/webhooks", EndpointSecret, json={"url": url, "event_types": list(event_types)}
    )


def endpoint_action(endpoint_id: str, action: str) -> Call:
    result = EndpointSecret if action == "rotate" else EndpointPublic
    if action == "ping":
        result = DeliveryPublic
    return post(f"/v1/webhooks/{endpoint_id}/{action}", result)


def list_deliveries(status: str | None, limit: int) -> Call:
    return read("/v1/webhooks/deliveries", Deliveries, status=status, limit=limit)


# --- review ----------------------------------------------------------------------------


def review_queue(params: Mapping[str, Any]) -> Call:
    return read("/v1/review/queue", ReviewQueuePage, **params)


def decide(variant_id: str, action: str, body: Mapping[str, Any]) -> Call:
    fields = {k: v for k, v in body.items() if v is not None}
    return post(f"/v1/review/variants/{variant_id}/{action}", VariantDecided, fields)


def approve_job(job_id: str, note: str | None) -> Call:
    return post(f"/v1/review/jobs/{job_id}/approve", JobApproved, _note(note))


def bulk_approve(variant_ids: Sequence[str], note: str | None) -> Call:
    return post(
        "/v1/review/bulk-approve", BulkDecided, {"variant_ids": list(variant_ids), **_note(note)}
    )


def _note(note: str | None) -> dict[str, str]:
    return {"note": note} if note is not None else {}


# --- the catalogue and the tenant's keys -------------------------------------------------

STYLES = read("/v1/styles", StyleCatalogue)
PLATFORMS = read("/v1/platforms", PlatformCatalogue)
TENANT = read("/v1/tenant", TenantPolicyPublic)


def usage(since: date | None, until: date | None) -> Call:
    return read(
        "/v1/usage", UsagePage, since=since and since.isoformat(), until=until and until.isoformat()
    )


def create_key(scopes: Sequence[str], expires_at: datetime | None) -> Call:
    body: dict[str, Any] = {"scopes": list(scopes)}
    if expires_at is not None:
        body["expires_at"] = expires_at.isoformat()
    return post("/v1/keys", KeyCreated, body)


def set_key_expiry(prefix: str, expires_at: datetime | None) -> Call:
    body = {"expires_at": expires_at.isoformat() if expires_at is not None else None}
    return Call("PUT", f"/v1/keys/{prefix}/expiry", KeyPublic, json=body)
