"""Messages on the broker: frozen, versioned, validated at both ends.

A caption task carries a job id and what the worker needs to run it without a
second round trip; never the image bytes (they are in the blob store).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DELIVER_BATCH_MAX = 256  # outbox rows in one deliver message


class CaptionMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    job_id: str
    attempt: int = 1


class DeliverMessage(BaseModel):
    """Outbox rows to send, one endpoint's as a rule (see ``schemas.broker``).

    Version 1 carried one row. A version-1 message left in a queue across an upgrade
    is dropped by the new worker; its row is still pending, and beat's dispatch sends
    it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[2] = 2
    delivery_ids: list[str] = Field(min_length=1, max_length=DELIVER_BATCH_MAX)
