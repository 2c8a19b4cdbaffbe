"""Request and response models of the ingestion API, the client and the callbacks.

Strict: unknown fields are refused, every list and string is bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from schemas.errors import ErrorCode
from schemas.names import PRIORITY_DEFAULT, PRIORITY_MAX, PRIORITY_MIN
from schemas.platforms import PLATFORM_NAMES
from schemas.styles import STYLE_NAMES
from schemas.tables import JobStatus

MAX_VARIANTS = 10
IdempotencyKey = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")
]
Name = Annotated[str, StringConstraints(min_length=1, max_length=40)]


class JobRequest(BaseModel):
    """One caption job. Exactly one of ``image_url`` and ``image_base64``."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    image_url: Annotated[str, StringConstraints(max_length=2048)] | None = None
    image_base64: str | None = Field(default=None, description="Inline image bytes, base64")
    styles: list[Name] = Field(min_length=1, max_length=len(STYLE_NAMES))
    platforms: list[Name] = Field(min_length=1, max_length=len(PLATFORM_NAMES))
    variants: int = Field(
        default=3, description=f"Variants per style and platform, 1..{MAX_VARIANTS}"
    )
    brand_voice: Annotated[str, StringConstraints(max_length=200)] | None = None
    callback_url: Annotated[str, StringConstraints(max_length=2048)] | None = None
    idempotency_key: IdempotencyKey | None = None
    priority: int = Field(default=PRIORITY_DEFAULT, ge=PRIORITY_MIN, le=PRIORITY_MAX)
    metadata: dict[Annotated[str, StringConstraints(max_length=64)], str | int | float | bool] = (
        Field(default_factory=dict, max_length=32)
    )

    @model_validator(mode="after")
    def _one_image(self) -> JobRequest:
        if (self.image_url is None) == (self.image_base64 is None):
            raise ValueError("give exactly one of image_url and image_base64")
        return self

    @field_validator("styles", "platforms")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("duplicate entries")
        return value


def catalogue_problem(
    *, styles: Sequence[str], platforms: Sequence[str], variants: int
) -> tuple[ErrorCode, str] | None:
    """What is wrong with a job's styles × platforms × variants, in catalogue terms (None
    when nothing). The one check: the API runs it on a request, the worker on a job."""
    unknown_styles = sorted(set(styles) - STYLE_NAMES)
    if unknown_styles or not styles:
        return ErrorCode.unknown_style, (
            f"unknown style(s) {unknown_styles or 'none given'}; known: {sorted(STYLE_NAMES)}"
        )
    unknown_platforms = sorted(set(platforms) - PLATFORM_NAMES)
    if unknown_platforms or not platforms:
        return ErrorCode.unknown_platform, (
            f"unknown platform(s) {unknown_platforms or 'none given'}; "
            f"known: {sorted(PLATFORM_NAMES)}"
        )
    if not 1 <= variants <= MAX_VARIANTS:
        return ErrorCode.variants_out_of_range, (
            f"variants must be between 1 and {MAX_VARIANTS}, got {variants}"
        )
    return None


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    jobs: list[JobRequest] = Field(min_length=1)


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorDetail(ErrorBody):
    detail: list[dict[str, Any]] | None = None


class ErrorResponse(BaseModel):
    """Every error the API answers: a stable ``code`` and a human ``message``."""

    error: ErrorDetail


class VariantBase(BaseModel):
    """One variant, spelled once: what the worker's pipeline writes, what the store
    inserts (with an id, its job and a time: the ``Variant`` table's columns) and what
    clients read (:class:`VariantPublic`)."""

    model_config = ConfigDict(frozen=True)

    style: str
    platform: str
    index: int
    text: str
    quality_score: float
    quality_parts: dict[str, float]
    flags: tuple[str, ...]
    review_state: str
    provenance: dict[str, Any]


class VariantPublic(VariantBase):
    id: str


class JobPublic(BaseModel):
    id: str
    status: JobStatus
    styles: list[str]
    platforms: list[str]
    variants_requested: int
    priority: int
    idempotency_key: str | None
    metadata: dict[str, Any]
    attempts: int
    caption: str | None
    model_id: str | None
    model_revision: str | None
    variants: list[VariantPublic]
    error: ErrorBody | None
    created_at: datetime
    finished_at: datetime | None

    @property
    def terminal(self) -> bool:
        return self.status.terminal


class JobAccepted(BaseModel):
    id: str
    status: JobStatus
    status_url: str
    created: bool = Field(description="False when an idempotency key matched an earlier job")


class BulkItem(BaseModel):
    index: int
    job: JobAccepted | None = None
    error: ErrorBody | None = None


class BulkAccepted(BaseModel):
    jobs: list[BulkItem]


class JobPage(BaseModel):
    jobs: list[JobPublic]
    next_cursor: str | None


EventType = Literal["job.succeeded", "job.failed", "caption.approved", "caption.rejected"]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)


class WebhookEvent(BaseModel):
    """The body of a callback (Standard Webhooks: type, timestamp, data)."""

    type: EventType
    timestamp: datetime
    data: JobPublic


class EndpointCreate(BaseModel):
    url: Annotated[str, Field(max_length=2048)]
    event_types: list[str] = Field(default_factory=list)


class EndpointPublic(BaseModel):
    id: str
    url: str
    event_types: list[str]
    disabled: bool
    disabled_reason: str | None
    previous_secret_expires_at: datetime | None
    created_at: datetime


class EndpointSecret(EndpointPublic):
    secret: str  # shown once, on creation and on rotation


class DeliveryPublic(BaseModel):
    id: str
    job_id: str | None
    event_type: str
    url: str
    status: str
    attempts: int
    next_attempt_at: datetime
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
