"""Database tables (SQLModel). The database is the source of truth.

Schema changes go through Alembic (``schemas/migrations``); a test checks that
the migrations and these models agree on SQLite and PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary, String, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    """Aware UTC; SQLModel stores it as UTC on SQLite and PostgreSQL alike."""
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


class JobStatus(StrEnum):
    """received → (fetching, for an image URL) → queued → running → succeeded | failed |
    cancelled. ``fetching``: a fetch worker is to fetch (or is fetching) the job's image URL
    into the blob store; a GPU worker only ever claims a job whose bytes are stored."""

    received = "received"
    fetching = "fetching"
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


class ReviewState(StrEnum):
    pending_review = "pending_review"
    auto_approved = "auto_approved"
    approved = "approved"
    edited = "edited"
    rejected = "rejected"


class DeliveryStatus(StrEnum):
    pending = "pending"
    delivered = "delivered"
    dead = "dead"


# What a variant's quality score means (worker/quality.py). 2: the image-text part is the
# evaluator's CLIP-S, text prompted "A photo depicts " (1 scored the bare text). A stored
# threshold fitted on another version is stale until the tenant is calibrated again.
QUALITY_SCORE_VERSION = 2


class Tenant(SQLModel, table=True):
    id: str = Field(default_factory=lambda: new_id("ten"), primary_key=True, max_length=40)
    name: str = Field(unique=True, index=True, max_length=100)
    # The default signing secret for the tenant's endpoints, as a Fernet token.
    webhook_secret_encrypted: str = Field(sa_type=Text)
    # None means "never auto-approve": everything goes to review until calibrated.
    auto_approve_threshold: float | None = None
    # The QUALITY_SCORE_VERSION the threshold was fitted on; None: before versions (1).
    auto_approve_score_version: int | None = None
    # Copy policy, on top of the global one (schemas/checks/policy.py).
    banned_terms: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    allow_domains: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    allow_handles: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)

    @property
    def threshold_stale(self) -> bool:
        """A threshold fitted on scores that meant something else than today's."""
        return self.auto_approve_threshold is not None and (
            (self.auto_approve_score_version or 1) != QUALITY_SCORE_VERSION)


class ApiKey(SQLModel, table=True):
    id: str = Field(default_factory=lambda: new_id("key"), primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=40)
    prefix: str = Field(unique=True, index=True, max_length=32)
    key_hash: str = Field(max_length=64)
    scopes: str = Field(default="submit,read", max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None


class Blob(SQLModel, table=True):
    """Content-addressed image bytes (the 'db' blob store)."""

    sha256: str = Field(primary_key=True, max_length=64)
    size: int
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Job(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("tenant_id", "idempotency_key", name="uq_job_idempotency"),)

    id: str = Field(default_factory=lambda: new_id("job"), primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=40)
    status: str = Field(default=JobStatus.received, index=True, sa_type=String(16))
    image_sha256: str | None = Field(default=None, max_length=64)
    image_url: str | None = Field(default=None, sa_type=Text)
    styles: list[str] = Field(sa_column=Column(JSON, nullable=False))
    platforms: list[str] = Field(sa_column=Column(JSON, nullable=False))
    variants: int
    brand_voice: str | None = Field(default=None, max_length=200)
    callback_url: str | None = Field(default=None, sa_type=Text)
    idempotency_key: str | None = Field(default=None, max_length=255)
    request_hash: str = Field(max_length=64)
    priority: int = 5
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    attempts: int = 0  # caption claims (the model's attempts)
    fetch_attempts: int = 0  # fetch claims of the image URL, with a budget of their own
    error_code: str | None = Field(default=None, max_length=64)
    error_message: str | None = Field(default=None, sa_type=Text)
    caption: str | None = Field(default=None, sa_type=Text)
    model_id: str | None = Field(default=None, max_length=300)
    model_revision: str | None = Field(default=None, max_length=100)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    updated_at: datetime = Field(default_factory=utcnow)
    queued_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    # While running (or fetching): the worker renews it (a fetch's is fixed, longer than its
    # deadline); past it, the reaper re-publishes the job.
    lease_expires_at: datetime | None = Field(default=None, index=True)


class Variant(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("job_id", "style", "platform", "index", name="uq_variant_slot"),
    )

    id: str = Field(default_factory=lambda: new_id("var"), primary_key=True, max_length=40)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=40)
    style: str = Field(max_length=40)
    platform: str = Field(max_length=40)
    index: int
    text: str = Field(sa_type=Text)
    quality_score: float
    quality_parts: dict[str, float] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    flags: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    review_state: str = Field(default=ReviewState.pending_review, sa_type=String(20))
    provenance: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


class Delivery(SQLModel, table=True):
    """Outbox row: one callback event. ``id`` is the stable ``webhook-id``."""

    id: str = Field(default_factory=lambda: new_id("msg"), primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=40)
    job_id: str | None = Field(default=None, foreign_key="job.id", index=True, max_length=40)
    event_type: str = Field(max_length=40)
    url: str = Field(sa_type=Text)
    payload: str = Field(sa_type=Text)  # the exact body bytes, identical on every attempt
    status: str = Field(default=DeliveryStatus.pending, index=True, sa_type=String(16))
    attempts: int = 0
    # The attempt count when the current retry schedule began (a replay starts a new one).
    schedule_from: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    next_attempt_at: datetime = Field(default_factory=utcnow, index=True)
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, sa_type=Text)
    # Set while one worker is sending it: no second sender until it has passed.
    sending_until: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)
    delivered_at: datetime | None = None


class DeliveryAttempt(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    delivery_id: str = Field(foreign_key="delivery.id", index=True, max_length=40)
    attempt: int
    status_code: int | None = None
    duration_ms: float
    error: str | None = Field(default=None, sa_type=Text)
    at: datetime = Field(default_factory=utcnow)


class WebhookEndpoint(SQLModel, table=True):
    """Where a tenant receives callbacks. Secrets are encrypted at rest (Fernet).

    During a rotation's grace period ``previous_secret`` still signs too (Standard
    Webhooks sends space-separated signatures), so receivers can switch at leisure.
    """

    __table_args__ = (UniqueConstraint("tenant_id", "url", name="uq_endpoint_url"),)

    id: str = Field(default_factory=lambda: new_id("ep"), primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=40)
    url: str = Field(sa_type=Text)
    secret_encrypted: str = Field(sa_type=Text)
    previous_secret_encrypted: str | None = Field(default=None, sa_type=Text)
    previous_secret_expires_at: datetime | None = None
    event_types: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    disabled_at: datetime | None = None
    disabled_reason: str | None = Field(default=None, max_length=200)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


class Marker(SQLModel, table=True):
    """Small named values that services share, e.g. the broker epoch the reaper last saw."""

    name: str = Field(primary_key=True, max_length=64)
    value: str = Field(max_length=200)
    updated_at: datetime = Field(default_factory=utcnow)


# The review desk: decisions on variants, reviewer accounts and their sessions.


class DecisionAction(StrEnum):
    approved = "approved"
    edited = "edited"
    rejected = "rejected"


class ReviewerRole(StrEnum):
    reviewer = "reviewer"
    admin = "admin"  # may also re-decide a decided variant, and sees stats per tenant


class Decision(SQLModel, table=True):
    """One decision on one variant: who, when, what, why, and the text before and after.

    A variant's current decision is its newest; an admin's re-decision adds a row and
    marks the one it replaces (``superseded_by``), so the history stays whole. Style,
    platform and model are copied from the variant, so that stats read one table."""

    id: str = Field(default_factory=lambda: new_id("dec"), primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenant.id", index=True, max_length=40)
    job_id: str = Field(foreign_key="job.id", index=True, max_length=40)
    variant_id: str = Field(foreign_key="variant.id", index=True, max_length=40)
    reviewer_id: str | None = Field(default=None, foreign_key="reviewer.id", max_length=40)
    decided_by: str = Field(max_length=320)  # a reviewer's e-mail, or "api-key:<prefix>"
    action: str = Field(sa_type=String(16))
    previous_state: str = Field(sa_type=String(20))
    reason: str | None = Field(default=None, max_length=40)
    note: str | None = Field(default=None, sa_type=Text)
    text_before: str = Field(sa_type=Text)
    text_after: str = Field(sa_type=Text)
    style: str = Field(max_length=40)
    platform: str = Field(max_length=40)
    model_id: str | None = Field(default=None, max_length=300)
    superseded_by: str | None = Field(default=None, max_length=40)
    decided_at: datetime = Field(default_factory=utcnow, index=True)


class Reviewer(SQLModel, table=True):
    """A person at the review desk. The password is stored as an argon2id hash."""

    id: str = Field(default_factory=lambda: new_id("rev"), primary_key=True, max_length=40)
    email: str = Field(unique=True, index=True, max_length=320)
    password_hash: str = Field(sa_type=Text)
    role: str = Field(default=ReviewerRole.reviewer, sa_type=String(16))
    failed_logins: int = 0
    locked_until: datetime | None = None
    disabled_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class ReviewerGrant(SQLModel, table=True):
    """A tenant whose jobs a reviewer may see and decide."""

    reviewer_id: str = Field(foreign_key="reviewer.id", primary_key=True, max_length=40)
    tenant_id: str = Field(foreign_key="tenant.id", primary_key=True, max_length=40)
    created_at: datetime = Field(default_factory=utcnow)


class ReviewSession(SQLModel, table=True):
    """A signed-in browser. ``id`` is the SHA-256 of the cookie's token (the token itself
    is never stored); ``csrf_token`` must come with every state-changing request."""

    id: str = Field(primary_key=True, max_length=64)
    reviewer_id: str = Field(foreign_key="reviewer.id", index=True, max_length=40)
    csrf_token: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime = Field(index=True)


# The review queue reads pending variants: found by state, not by scanning every variant.
Index("ix_variant_review_state", Variant.__table__.c.review_state, Variant.__table__.c.job_id)  # type: ignore[attr-defined]


class UsageDay(SQLModel, table=True):
    """What one tenant used on one UTC day: the basis of quotas and invoices. Rows are
    added to, never rewritten (``schemas.store.usage``), and outlive the jobs they
    count (retention purges jobs, not usage)."""

    __tablename__ = "usage_day"

    tenant_id: str = Field(foreign_key="tenant.id", primary_key=True, max_length=40)
    day: date = Field(primary_key=True)
    jobs: int = 0  # accepted submissions
    images: int = 0  # images that went through the model
    variants: int = 0  # variants written
    model_seconds: float = 0.0  # the tenant's share of its batches' model time
    callbacks: int = 0  # callbacks delivered (2xx)
