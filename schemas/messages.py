"""Messages on the broker: frozen, versioned, validated at both ends; and the
references that producers, the store and the worker pass around to build them.

A caption or fetch task carries a job id and what the worker needs to run it without a
second round trip; never the image bytes (they are in the blob store).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

DELIVER_BATCH_MAX = 256  # outbox rows in one deliver message


class JobRef(NamedTuple):
    """A job to publish a task for, at ``priority`` (0 low .. 9 urgent): a caption task,
    or (``fetch``) a fetch task, for a job whose image URL is not fetched yet."""

    id: str
    priority: int
    fetch: bool = False


class DeliveryRef(NamedTuple):
    """An outbox row to send: its id (the ``webhook-id``) and the URL it goes to."""

    id: str
    url: str


class CaptionMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    job_id: str
    attempt: int = 1


class FetchMessage(BaseModel):
    """Fetch a job's image URL into the blob store, then publish its caption task."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    job_id: str


class DeliverMessage(BaseModel):
    """Outbox rows to send, one endpoint's as a rule (see ``schemas.broker``).

    Version 1 carried one row. A version-1 message left in a queue across an upgrade
    is dropped by the new worker; its row is still pending, and beat's dispatch sends
    it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[2] = 2
    delivery_ids: list[str] = Field(min_length=1, max_length=DELIVER_BATCH_MAX)
