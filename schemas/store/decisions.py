"""Decisions on variants: approve, edit, reject, and the callbacks that announce them.

A variant waits in ``pending_review`` until someone decides::

    pending_review ──approve──► approved
                   ──edit─────► edited     (the new text, checked before it saves)
                   ──reject───► rejected   (a reason from a fixed list, a note)
    auto_approved                           (the worker: no flags, score ≥ threshold)

Each decision is a :class:`~schemas.tables.Decision` row, and the variant moves with a
conditional UPDATE (``WHERE review_state = <what the decider saw>``), so two reviewers
deciding at once cannot both win: the second is refused with ``already_decided``. A
decided variant is decided again only by an admin who asks to (``redecide``); that is a
new row, and the one it replaces is marked ``superseded_by``.

An edit is checked with the worker's own rules (``schemas.checks.rules`` for the
platform, ``schemas.checks.policy`` for the tenant's copy policy); a refusal
(:class:`EditRefusedError`, ``edit_refused``) names every rule broken and saves nothing.

Every decision writes its ``caption.approved`` or ``caption.rejected`` outbox row in the
same transaction (``schemas.store.outbox.event_row``): same signing, schedule, dead
letters and replay as job events. The worker's auto-approvals send ``caption.approved``
with ``auto_approved: true`` from the result's own transaction (:func:`auto_approved_rows`).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlmodel import Session, col, select

from schemas.checks import rules
from schemas.checks.policy import check_copy
from schemas.decisions import CaptionDecision, CaptionEvent, RejectReason, RuleBreach
from schemas.errors import ErrorCode, RequestError
from schemas.messages import DeliveryRef
from schemas.platforms import PLATFORMS
from schemas.store.outbox import event_row, wanted
from schemas.store.sessions import insert_rows
from schemas.tables import (
    Decision,
    DecisionAction,
    Delivery,
    Job,
    ReviewState,
    Tenant,
    Variant,
    new_id,
    utcnow,
)

APPROVED = "caption.approved"
REJECTED = "caption.rejected"
_STATE_OF = {
    DecisionAction.approved: ReviewState.approved,
    DecisionAction.edited: ReviewState.edited,
    DecisionAction.rejected: ReviewState.rejected,
}


@dataclass(frozen=True)
class Decider:
    """Who decides: a reviewer at the desk, or an API key with the ``review`` scope.
    ``label`` is what the history and the callback show (an e-mail, ``api-key:<prefix>``)."""

    label: str
    reviewer_id: str | None = None
    admin: bool = False


@dataclass(frozen=True)
class Decided:
    """A decision made: its row, the variant as it now is, and its outbox row as
    (id, URL) when the job has a callback URL (publish it after the commit)."""

    decision: Decision
    variant: Variant
    delivery: DeliveryRef | None


class EditRefusedError(RequestError):
    """An edit that breaks a platform rule or the copy policy: nothing was saved."""

    def __init__(self, breaches: Sequence[RuleBreach]) -> None:
        names = ", ".join(b.rule for b in breaches)
        super().__init__(f"the edit breaks {names}; nothing was saved", code=ErrorCode.edit_refused)
        self.breaches = list(breaches)


def check_edit(text: str, *, platform: str, tenant: Tenant) -> list[RuleBreach]:
    """Every rule ``text`` breaks for ``platform`` and the tenant's copy policy, with the
    code the worker uses; empty when it may be saved."""
    breaches = [
        RuleBreach(rule=b.rule, message=b.detail) for b in rules.check(text, PLATFORMS[platform])
    ]
    flags = check_copy(
        text,
        banned_terms=tenant.banned_terms,
        allow_domains=tenant.allow_domains,
        allow_handles=tenant.allow_handles,
    )
    breaches.extend(
        RuleBreach(rule=f"policy:{f.rule_id}", message=f"{f.message}: {f.match!r}") for f in flags
    )
    return breaches


def _owned(session: Session, tenant_ids: Collection[str], variant_id: str) -> tuple[Variant, Job]:
    variant = session.get(Variant, variant_id, populate_existing=True)
    job = session.get(Job, variant.job_id) if variant is not None else None
    if variant is None or job is None or job.tenant_id not in tenant_ids:
        raise RequestError(f"no variant {variant_id}", code=ErrorCode.not_found)
    return variant, job


def decide(
    *,
    session: Session,
    tenant_ids: Collection[str],
    variant_id: str,
    action: DecisionAction,
    decider: Decider,
    reason: RejectReason | None = None,
    note: str | None = None,
    text: str | None = None,
    redecide: bool = False,
) -> Decided:
    """Decide one variant of one of ``tenant_ids``' jobs (another tenant's: ``not_found``).

    ``text`` is the new text of an edit; an edit that leaves the text as it was is an
    approval. Refused: ``already_decided`` (unless an admin re-decides on purpose),
    ``edit_refused`` (with the rules broken)."""
    variant, job = _owned(session, tenant_ids, variant_id)
    seen = ReviewState(variant.review_state)
    if seen != ReviewState.pending_review and not (redecide and decider.admin):
        raise RequestError(
            f"variant {variant_id} is already {seen.value}; an admin may re-decide it",
            code=ErrorCode.already_decided,
        )
    action, final = _final(session, job, variant, action, text)
    reason = (reason or RejectReason.other) if action == DecisionAction.rejected else None
    now = utcnow()
    moved = session.connection().execute(
        update(Variant.__table__)  # type: ignore[attr-defined]
        .where(col(Variant.id) == variant.id, col(Variant.review_state) == seen.value)
        .values(review_state=_STATE_OF[action].value, text=final)
    )
    if moved.rowcount != 1:  # another decision landed in between
        raise RequestError(
            f"variant {variant_id} was decided meanwhile", code=ErrorCode.already_decided
        )
    decision = new_decision(
        job, variant, action, seen, decider, final, now, reason=reason, note=note
    )
    if seen != ReviewState.pending_review:
        _supersede(session, variant.id, decision.id)
    session.add(decision)
    session.flush()
    session.refresh(variant)
    return Decided(decision, variant, _announce(session, job, variant, decision))


def new_decision(
    job: Job,
    variant: Variant,
    action: DecisionAction,
    seen: ReviewState,
    decider: Decider,
    final: str,
    now: datetime,
    *,
    reason: RejectReason | None = None,
    note: str | None = None,
) -> Decision:
    return Decision(
        id=new_id("dec"),
        tenant_id=job.tenant_id,
        job_id=job.id,
        variant_id=variant.id,
        reviewer_id=decider.reviewer_id,
        decided_by=decider.label,
        action=action.value,
        previous_state=seen.value,
        reason=reason.value if reason else None,
        note=note or None,
        text_before=variant.text,
        text_after=final,
        style=variant.style,
        platform=variant.platform,
        model_id=str(variant.provenance.get("model_id") or job.model_id or "") or None,
        decided_at=now,
    )


def _final(
    session: Session, job: Job, variant: Variant, action: DecisionAction, text: str | None
) -> tuple[DecisionAction, str]:
    """The action and the text it leaves: an edit's text is cleaned (no control or bidi
    characters, tidy spaces) and checked; an edit that changes nothing is an approval."""
    if action != DecisionAction.edited:
        return action, variant.text
    final = rules.clean_generated(text or "")
    if final == variant.text:
        return DecisionAction.approved, final
    tenant = session.get(Tenant, job.tenant_id)
    assert tenant is not None
    breaches = check_edit(final, platform=variant.platform, tenant=tenant)
    if breaches:
        raise EditRefusedError(breaches)
    return action, final


def _supersede(session: Session, variant_id: str, by: str) -> None:
    session.execute(  # ORM update: decisions already loaded in the session follow
        update(Decision)
        .where(col(Decision.variant_id) == variant_id, col(Decision.superseded_by).is_(None))
        .values(superseded_by=by)
    )


def original_text(session: Session, variant: Variant) -> str:
    """What the model wrote: the text before the variant's first decision."""
    first = session.exec(
        select(Decision.text_before)
        .where(Decision.variant_id == variant.id)
        .order_by(col(Decision.decided_at), col(Decision.id))
        .limit(1)
    ).first()
    return first if first is not None else variant.text


def _announce(
    session: Session, job: Job, variant: Variant, decision: Decision
) -> DeliveryRef | None:
    if not job.callback_url:
        return None
    made = [(variant, decision, original_text(session, variant))]
    refs = announce_decisions(session, job, made)
    return refs.get(variant.id)


def announce_decisions(
    session: Session, job: Job, made: Sequence[tuple[Variant, Decision, str]]
) -> dict[str, DeliveryRef]:
    """The outbox rows of ``made`` (each variant, its decision and its original text),
    in one insert; their (id, URL) by variant id, for those the endpoint wants."""
    if not job.callback_url or not made:
        return {}
    rows, variant_of = [], {}
    for variant, decision, original in made:
        data = CaptionDecision(
            job_id=job.id,
            variant_id=variant.id,
            style=variant.style,
            platform=variant.platform,
            text=decision.text_after,
            original_text=original,
            edited=decision.text_after != original,
            auto_approved=False,
            reviewer=decision.decided_by,
            decided_at=decision.decided_at,
            reason=decision.reason,
            note=decision.note,
        )
        event = REJECTED if decision.action == DecisionAction.rejected else APPROVED
        rows.append(_event_row(job, data, event))
        variant_of[rows[-1]["id"]] = variant.id
    rows = wanted(session, rows)
    if not rows:  # the endpoint does not subscribe to this event
        return {}
    insert_rows(session.connection(), Delivery.__table__, rows)  # type: ignore[attr-defined]
    return {variant_of[row["id"]]: DeliveryRef(row["id"], row["url"]) for row in rows}


def _event_row(job: Job, data: CaptionDecision, event: str) -> dict[str, Any]:
    assert job.callback_url is not None
    body = CaptionEvent(type=event, timestamp=data.decided_at, data=data)  # type: ignore[arg-type]
    return event_row(
        tenant_id=job.tenant_id,
        job_id=job.id,
        event_type=event,
        url=job.callback_url,
        payload=body.model_dump_json(),
        now=data.decided_at,
    )


def auto_approved_rows(
    jobs: Sequence[Job], variants: Mapping[str, Sequence[Mapping[str, Any]]], *, now: datetime
) -> list[dict[str, Any]]:
    """The ``caption.approved`` outbox rows (``auto_approved: true``) of the variants that
    the worker auto-approved, as column values for the result's own insert; ``variants``
    are the rows just stored, by job id."""
    out = []
    for job in jobs:
        if not job.callback_url:
            continue
        for row in variants.get(job.id, ()):
            if row["review_state"] != ReviewState.auto_approved:
                continue
            data = CaptionDecision(
                job_id=job.id,
                variant_id=row["id"],
                style=row["style"],
                platform=row["platform"],
                text=row["text"],
                original_text=row["text"],
                edited=False,
                auto_approved=True,
                reviewer=None,
                decided_at=now,
                reason=None,
            )
            out.append(_event_row(job, data, APPROVED))
    return out


def history(*, session: Session, tenant_ids: Collection[str], job_id: str) -> list[Decision]:
    """Every decision on the job's variants, oldest first."""
    job = session.get(Job, job_id)
    if job is None or job.tenant_id not in tenant_ids:
        raise RequestError(f"no job {job_id}", code=ErrorCode.not_found)
    query = (
        select(Decision)
        .where(Decision.job_id == job_id)
        .order_by(col(Decision.decided_at), col(Decision.id))
    )
    return list(session.exec(query).all())
