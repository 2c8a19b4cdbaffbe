"""Request and response models of the ingestion API, the client and the callbacks.

Strict: unknown fields are refused, every list and string is bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
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


# The review desk: decisions on variants, and the callbacks that announce them.


class RejectReason(StrEnum):
    """Why a variant was rejected: a short fixed list (a note may say more)."""

    off_brand = "off_brand"
    inaccurate = "inaccurate"
    policy = "policy"
    poorly_written = "poorly_written"
    duplicate = "duplicate"
    other = "other"


REJECT_REASON_LABELS = {
    RejectReason.off_brand: "Off brand",
    RejectReason.inaccurate: "Wrong about the image",
    RejectReason.policy: "Breaks policy",
    RejectReason.poorly_written: "Poorly written",
    RejectReason.duplicate: "Duplicate",
    RejectReason.other: "Other",
}
Note = Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)]
EDIT_MAX_CHARS = 5000


class ApproveRequest(BaseModel):
    """Approve a variant as it stands. ``redecide``: an admin changes a decided variant."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    note: Note | None = None
    redecide: bool = False


class RejectRequest(ApproveRequest):
    reason: RejectReason = RejectReason.other


class EditRequest(ApproveRequest):
    """Replace a variant's text and approve it. The text is checked against its platform's
    rules and the tenant's copy policy first; a refusal (``edit_refused``) names the rules."""

    text: Annotated[str, StringConstraints(min_length=1, max_length=EDIT_MAX_CHARS, pattern=NO_NUL)]


class BulkApproveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    variant_ids: list[Annotated[str, StringConstraints(max_length=40, pattern=NO_NUL)]] = Field(
        min_length=1, max_length=500
    )
    note: Note | None = None


class RuleBreach(BaseModel):
    """A rule an edit breaks: a platform rule (``too_long``, ``too_many_hashtags``,
    ``emoji_not_allowed``, ``hash_not_allowed``, ``empty``) or a copy-policy rule
    (``policy:<rule id>``, as in a variant's flags)."""

    rule: str
    message: str


class DecisionPublic(BaseModel):
    id: str
    job_id: str
    variant_id: str
    action: Literal["approved", "edited", "rejected"]
    previous_state: str
    reason: str | None
    note: str | None
    text_before: str
    text_after: str
    decided_by: str
    decided_at: datetime
    superseded_by: str | None


class VariantDecided(BaseModel):
    variant: VariantPublic
    decision: DecisionPublic


class BulkDecisionItem(BaseModel):
    index: int
    variant_id: str
    decision: DecisionPublic | None = None
    error: ErrorBody | None = None


class BulkDecided(BaseModel):
    items: list[BulkDecisionItem]


class JobDecided(BaseModel):
    job_id: str
    decisions: list[DecisionPublic]


class ReviewQueueJob(BaseModel):
    job_id: str
    created_at: datetime
    caption: str | None
    model_id: str | None
    pending: list[VariantPublic]


class ReviewQueuePage(BaseModel):
    """Jobs with variants waiting for review, oldest first unless asked otherwise;
    ``total_*`` count everything that matches the filters, not only this page."""

    jobs: list[ReviewQueueJob]
    total_jobs: int
    total_variants: int
    next_cursor: str | None


class CaptionDecision(BaseModel):
    """The data of a ``caption.approved`` or ``caption.rejected`` callback: one variant's
    decision, not the whole job. ``text`` is the final text (for a rejection, the text
    that was rejected); ``original_text`` is what the model wrote; ``edited`` says a
    reviewer changed it; ``auto_approved`` says no person decided (the variant met the
    tenant's calibrated threshold with no flags), and ``reviewer`` is then null."""

    job_id: str
    variant_id: str
    style: str
    platform: str
    text: str
    original_text: str
    edited: bool
    auto_approved: bool
    reviewer: str | None
    decided_at: datetime
    reason: str | None
    note: str | None = None


class CaptionEvent(BaseModel):
    """The body of a ``caption.*`` callback (Standard Webhooks: type, timestamp, data)."""

    type: Literal["caption.approved", "caption.rejected"]
    timestamp: datetime
    data: CaptionDecision


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


# A tenant's API keys (routes that need the ``admin`` scope).


def _iso_only(value: object) -> object:
    """A time as the schema says (an RFC 3339 string), not a number of seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError("a date-time string, e.g. 2030-01-01T00:00:00Z")
    return value


IsoDatetime = Annotated[datetime, BeforeValidator(_iso_only)]

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
