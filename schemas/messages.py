"""Messages on the broker: frozen, versioned, validated at both ends; and the
references that producers, the store and the worker pass around to build them.

A caption or fetch task carries job ids and what the worker needs to run them without
a second round trip; never the image bytes (they are in the blob store).
"""

from __future__ import annotations

from typing import Annotated, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

DELIVER_BATCH_MAX = 256  # outbox rows in one deliver message
# Jobs in one caption message as published, by default (CAPTION_MESSAGE_JOBS): the
# default BATCH_SIZE. A worker takes a message of any size up to CAPTION_READ_MAX, which
# also bounds both settings.
CAPTION_MESSAGE_JOBS = 8
CAPTION_READ_MAX = 256


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
    """Caption these jobs. The jobs of one priority and delay that are published together
    share messages of up to ``CAPTION_MESSAGE_JOBS``: a bulk submission's jobs reach a
    GPU worker a batch at a time, and the worker's per-message cost (receive, record,
    acknowledge) is paid once per batch instead of once per job.

    Version 1 carried one job; one left in a queue across an upgrade is read as a
    message of that one job (:func:`caption_job_ids`)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[2] = 2
    job_ids: list[str] = Field(min_length=1, max_length=CAPTION_READ_MAX)


class CaptionMessageV1(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    job_id: str
    attempt: int = 1


_CAPTION = TypeAdapter(
    Annotated[CaptionMessage | CaptionMessageV1, Field(discriminator="schema_version")]
)


def caption_job_ids(payload: object) -> list[str]:
    """The job ids of a caption message of either version (raises pydantic's
    ``ValidationError`` for anything else)."""
    message = _CAPTION.validate_python(payload)
    return [message.job_id] if isinstance(message, CaptionMessageV1) else list(message.job_ids)


class FetchMessage(BaseModel):
    """Fetch a job's image URL into the blob store, then publish its caption task."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    job_id: str


class DeliverMessage(BaseModel):
    """Outbox rows to send, one endpoint's as a rule (see ``schemas.broker``).

    ``endpoint`` names the URL the rows go to (a digest, not the URL, which may carry a
    tenant's token): an IO worker sends the rows of the messages it gathers together,
    one endpoint's at a time (``worker.gather``).

    Version 3 added ``endpoint``; a version-2 message is read as one that names no
    endpoint (sent alone). Version 1 carried one row. A message of a version a worker
    does not read (one left in a queue across an upgrade, or a version-3 message at a
    worker of an earlier release) is dropped there; its rows are still pending, and
    beat's dispatch sends them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[2, 3] = 3
    delivery_ids: list[str] = Field(min_length=1, max_length=DELIVER_BATCH_MAX)
    endpoint: str | None = Field(default=None, max_length=64)
