"""Messages on the broker: frozen, versioned, validated at both ends.

A caption task carries a job id and what the worker needs to run it without a
second round trip; never the image bytes (they are in the blob store).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class CaptionMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    job_id: str
    attempt: int = 1


class DeliverMessage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    delivery_id: str
