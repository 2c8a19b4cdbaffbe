"""The review desk's contracts: decisions on variants (requests and results), the review
queue, and the ``caption.*`` callbacks that announce decisions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from schemas.api import NO_NUL, ErrorBody, VariantPublic


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


class VariantRefused(BaseModel):
    variant_id: str
    error: ErrorBody


class JobApproved(JobDecided):
    """A whole job's approval: the decisions made, and the variants that were waiting
    when it began but were decided by someone else meanwhile (``already_decided``)."""

    refused: list[VariantRefused] = Field(default_factory=list)


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
