"""Request and response models of the ingestion API, the client and the callbacks.

Strict: unknown fields are refused, every list and string is bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
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
NO_NUL = "^[^\\u0000]*$"


def _whole_number(value: object) -> object:
    """JSON Schema calls 8.0 an integer: accept it as 8 (and nothing else that is not an int)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _catalogue_name(names: frozenset[str]) -> Any:
    """A style or platform name: the schema lists the catalogue (so clients and docs
    see it); a name outside it is refused with ``unknown_style`` / ``unknown_platform``
    by :func:`catalogue_problem`, not by the parser."""
    return Annotated[Name, WithJsonSchema({"type": "string", "enum": sorted(names)})]


StyleName = _catalogue_name(STYLE_NAMES)
PlatformName = _catalogue_name(PLATFORM_NAMES)
WholeNumber = Annotated[int, BeforeValidator(_whole_number)]


class JobFields(BaseModel):
    """A job without its image: what an upload's ``job`` form field holds, as JSON."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    styles: list[StyleName] = Field(  # type: ignore[valid-type]
        min_length=1, max_length=len(STYLE_NAMES), json_schema_extra={"uniqueItems": True}
    )
    platforms: list[PlatformName] = Field(  # type: ignore[valid-type]
        min_length=1, max_length=len(PLATFORM_NAMES), json_schema_extra={"uniqueItems": True}
    )
    variants: WholeNumber = Field(
        default=3,
        description=f"Variants per style and platform, 1..{MAX_VARIANTS}",
        json_schema_extra={"minimum": 1, "maximum": MAX_VARIANTS},
    )
    brand_voice: Annotated[str, StringConstraints(max_length=200)] | None = None
    callback_url: Annotated[str, StringConstraints(max_length=2048)] | None = None
    idempotency_key: IdempotencyKey | None = None
    priority: WholeNumber = Field(default=PRIORITY_DEFAULT, ge=PRIORITY_MIN, le=PRIORITY_MAX)
    metadata: dict[Annotated[str, StringConstraints(max_length=64)], str | int | float | bool] = (
        Field(
            default_factory=dict,
            max_length=32,
            # What a database can store (no NUL; JSON numbers are finite): checked on
            # submission as ``invalid_request``, the same on every database.
            json_schema_extra={
                "propertyNames": {"maxLength": 64, "pattern": NO_NUL},
                "additionalProperties": {
                    "anyOf": [
                        {"type": "string", "pattern": NO_NUL},
                        {"type": "integer"},
                        {"type": "number"},
                        {"type": "boolean"},
                    ]
                },
            },
        )
    )

    @field_validator("styles", "platforms")
    @classmethod
    def _no_duplicates(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("duplicate entries")
        return value


class JobRequest(JobFields):
    """One caption job. Exactly one of ``image_url`` and ``image_base64``."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {
                    "required": ["image_url"],
                    "properties": {
                        "image_url": {"type": "string"},
                        "image_base64": {"type": "null"},
                    },
                },
                {
                    "required": ["image_base64"],
                    "properties": {
                        "image_base64": {"type": "string"},
                        "image_url": {"type": "null"},
                    },
                },
            ]
        }
    )

    image_url: Annotated[str, StringConstraints(max_length=2048)] | None = None
    image_base64: str | None = Field(default=None, description="Inline image bytes, base64")

    @model_validator(mode="after")
    def _one_image(self) -> JobRequest:
        if (self.image_url is None) == (self.image_base64 is None):
            raise ValueError("give exactly one of image_url and image_base64")
        return self


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


def _judged_each(schema: dict[str, Any]) -> dict[str, Any]:
    """A job's schema as a bulk item: styles, platforms, variants and metadata values
    unconstrained by the catalogue and storage rules, since each item is judged on its
    own (``unknown_style``, ``variants_out_of_range``, ``invalid_request``... in the
    item's place; the others go on)."""
    properties = dict(schema["properties"])
    for name in ("styles", "platforms"):
        item = {"type": "string", "minLength": 1, "maxLength": 40}
        properties[name] = {**properties[name], "items": item}
    properties["variants"] = {"type": "integer", "default": 3}
    values = [{"type": t} for t in ("string", "integer", "number", "boolean")]  # storable: each
    properties["metadata"] = {
        "type": "object",
        "maxProperties": 32,
        "propertyNames": {"maxLength": 64},
        "additionalProperties": {"anyOf": values},
    }
    return {**schema, "properties": properties, "title": "BulkJob"}


BulkJob = Annotated[JobRequest, WithJsonSchema(_judged_each(JobRequest.model_json_schema()))]


class BulkRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    jobs: list[BulkJob] = Field(
        min_length=1,
        description="At most BULK_MAX_JOBS (500 unless configured); more is 413",
        json_schema_extra={"maxItems": 500},
    )


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
    status: JobStatus = Field(
        description="received → fetching (an image URL, fetched by the fetch workers) → queued "
        "→ running → succeeded | failed | cancelled"
    )
    styles: list[str]
    platforms: list[str]
    variants_requested: int
    priority: int
    idempotency_key: str | None
    metadata: dict[str, Any]
    attempts: int = Field(description="Times a GPU worker took the job")
    fetch_attempts: int = Field(default=0, description="Times a fetch worker fetched its image URL")
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
    """The body of a ``job.*`` callback (Standard Webhooks: type, timestamp, data)."""

    type: Literal["job.succeeded", "job.failed"]
    timestamp: datetime
    data: JobPublic


class EndpointCreate(BaseModel):
    url: Annotated[str, Field(max_length=2048)]
    event_types: list[
        Annotated[str, WithJsonSchema({"type": "string", "enum": list(EVENT_TYPES)})]
    ] = Field(default_factory=list, description="The events it receives; empty: every one")


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


# The catalogue an integrator discovers (GET /v1/styles, GET /v1/platforms).


class StylePublic(BaseModel):
    name: str
    version: int
    description: str


class StyleCatalogue(BaseModel):
    styles: list[StylePublic]


class PlatformPublic(BaseModel):
    """A platform's rules: ``max_chars`` counted as ``counting`` says."""

    name: str
    label: str
    max_chars: int
    limit_kind: Literal["hard", "recommended"]
    counting: str
    max_hashtags: int | None
    allow_emoji: bool
    allow_hash: bool


class PlatformCatalogue(BaseModel):
    rules_version: str
    platforms: list[PlatformPublic]
