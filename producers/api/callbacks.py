"""The callbacks captionq sends, as OpenAPI ``webhooks``: what a tenant's endpoint receives.

Standard Webhooks: each POST carries ``webhook-id`` (one id per event, the same on every
retry and replay: deduplicate on it), ``webhook-timestamp`` (Unix seconds) and
``webhook-signature`` (``v1,<base64 HMAC-SHA256>`` of ``id.timestamp.body`` with the
endpoint's secret; two signatures, space-separated, during a secret rotation). Any 2xx
acknowledges; anything else, or no answer within ``CALLBACK_TIMEOUT_S``, is retried on
``CALLBACK_RETRY_SCHEDULE_S`` (by default 0 s, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h),
after which the delivery is dead: listed and replayable at ``/v1/webhooks/deliveries``.
"""

from __future__ import annotations

import typing
from typing import Annotated

from fastapi import APIRouter, Header
from pydantic import BaseModel

from schemas.api import WebhookEvent
from schemas.decisions import CaptionEvent

router = APIRouter(tags=["callbacks"])

WebhookId = Annotated[str, Header(alias="webhook-id", description="The event's id (dedupe on it)")]
WebhookTimestamp = Annotated[
    str, Header(alias="webhook-timestamp", description="Unix seconds when this attempt was signed")
]
WebhookSignature = Annotated[
    str,
    Header(
        alias="webhook-signature",
        description="v1,<base64 HMAC-SHA256 of '{webhook-id}.{webhook-timestamp}.{body}'>; "
        "space-separated when a rotated secret also signs",
    ),
]
ACK = {"description": "Any 2xx acknowledges the event; anything else is retried"}


def _event(kind: str, body: type[BaseModel], summary: str, data: str) -> None:
    """Declare the callback ``kind``: its body model and the Standard Webhooks headers."""

    def event(
        body: BaseModel,
        webhook_id: WebhookId,
        webhook_timestamp: WebhookTimestamp,
        webhook_signature: WebhookSignature,
    ) -> None: ...

    event.__doc__ = data
    event.__annotations__ = {**typing.get_type_hints(event, include_extras=True), "body": body}
    router.post(kind, responses={200: ACK}, summary=f"{kind}: {summary}")(event)


for _kind in ("job.succeeded", "job.failed"):
    _event(
        _kind,
        WebhookEvent,
        "a job finished",
        "``data`` is the job as ``GET /v1/jobs/{id}`` answers it.",
    )
for _kind in ("caption.approved", "caption.rejected"):
    _event(
        _kind,
        CaptionEvent,
        "a variant was decided",
        "``data`` is one variant's decision (edited and auto-approved say so).",
    )
