"""A tenant's account as its API shows it: API keys (admin scope), the auto-approve
setting, and usage by day."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


def _iso_only(value: object) -> object:
    """A time as the schema says (an RFC 3339 string), not a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("a date-time string, e.g. 2030-01-01T00:00:00Z")
    return value


IsoDatetime = Annotated[datetime, BeforeValidator(_iso_only)]



def _calendar_date(value: object) -> object:
    """A day as the schema says (YYYY-MM-DD), not a number of days or seconds."""
    iso = isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)
    if not (iso or isinstance(value, date)):
        raise ValueError("a date, YYYY-MM-DD")
    return value


CalendarDate = Annotated[date, BeforeValidator(_calendar_date)]

KeyScope = Literal["submit", "read", "review", "admin"]


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    scopes: list[KeyScope] = Field(
        default_factory=lambda: ["submit", "read"], min_length=1, max_length=4
    )
    expires_at: IsoDatetime | None = None


class KeyExpiry(BaseModel):
    """When a key stops working; null: never."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    expires_at: IsoDatetime | None


class KeyPublic(BaseModel):
    prefix: str
    scopes: list[str]
    state: Literal["active", "expired", "revoked"]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class KeyCreated(KeyPublic):
    key: str = Field(description="The key itself: shown once, stored hashed")


class TenantPolicyPublic(BaseModel):
    """The calling tenant's auto-approve setting. ``auto_approve_threshold`` null: nothing
    is auto-approved. ``threshold_stale``: the threshold was fitted on quality scores of
    ``auto_approve_score_version`` (null: before scores were versioned, i.e. 1), not on the
    ``quality_score_version`` the worker computes now; recalibrate (``captionq eval
    calibrate --tenant NAME --store``) before trusting it."""

    id: str
    name: str
    auto_approve_threshold: float | None
    auto_approve_score_version: int | None
    quality_score_version: int
    threshold_stale: bool


class UsagePublic(BaseModel):
    """What a tenant used on one UTC day (``GET /v1/usage``)."""

    day: date
    jobs: int = Field(description="Submissions accepted")
    images: int = Field(description="Images that went through the model")
    variants: int = Field(description="Variants written")
    model_seconds: float = Field(description="The tenant's share of its batches' model time")
    callbacks: int = Field(description="Callbacks delivered (2xx)")


class UsagePage(BaseModel):
    tenant_id: str
    days: list[UsagePublic]
