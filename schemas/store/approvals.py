"""Approving many variants at once: a whole job's waiting variants (set-based, a fixed
number of statements), or a selection from the queue (a savepoint each). Both answer each
variant on its own: one decided meanwhile by someone else is ``already_decided`` and the
others are approved. One decision at a time, and what a decision writes, are in
:mod:`schemas.store.decisions`."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from sqlalchemy import update
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, col, select

from schemas.errors import ErrorCode, RequestError
from schemas.store.decisions import Decided, Decider, announce_decisions, decide, new_decision
from schemas.tables import DecisionAction, Job, ReviewState, Variant, utcnow


def _approve(
    session: Session,
    tenant_ids: Collection[str],
    variant_id: str,
    decider: Decider,
    note: str | None,
) -> Decided:
    return decide(
        session=session,
        tenant_ids=tenant_ids,
        variant_id=variant_id,
        action=DecisionAction.approved,
        decider=decider,
        note=note,
    )


def approve_job(
    *,
    session: Session,
    tenant_ids: Collection[str],
    job_id: str,
    decider: Decider,
    note: str | None = None,
) -> dict[str, Decided | RequestError]:
    """Approve every variant of the job still waiting for review, in as many statements
    for ten variants as for one: one conditional UPDATE (``WHERE review_state =
    'pending_review'``) moves them, one insert writes their decisions, one their
    callbacks. A variant decided by someone else since it was read is left as that
    decision made it and answered ``already_decided``; the others are approved. The
    outcomes are by variant id, in the job's order (style, platform, index)."""
    job = session.get(Job, job_id)
    if job is None or job.tenant_id not in tenant_ids:
        raise RequestError(f"no job {job_id}", code=ErrorCode.not_found)
    waiting = session.exec(
        select(Variant)
        .where(Variant.job_id == job_id, Variant.review_state == ReviewState.pending_review)
        .order_by(col(Variant.style), col(Variant.platform), col(Variant.index))
    ).all()
    if not waiting:
        return {}
    table = Variant.__table__  # type: ignore[attr-defined]
    moved = set(
        session.connection()
        .execute(
            update(table)
            .where(
                table.c.id.in_([v.id for v in waiting]),
                table.c.review_state == ReviewState.pending_review.value,
            )
            .values(review_state=ReviewState.approved.value)
            .returning(table.c.id)
        )
        .scalars()
    )
    now = utcnow()
    made = []
    for variant in waiting:
        if variant.id not in moved:
            continue
        decision = new_decision(
            job, variant, DecisionAction.approved, ReviewState.pending_review, decider,
            variant.text, now, note=note,
        )  # fmt: skip
        set_committed_value(variant, "review_state", ReviewState.approved.value)
        # A variant that was waiting has no decision before this one: its text is the model's.
        made.append((variant, decision, variant.text))
    session.add_all([decision for _, decision, _ in made])
    session.flush()
    refs = announce_decisions(session, job, made)
    decided = {v.id: Decided(d, v, refs.get(v.id)) for v, d, _ in made}
    return {
        v.id: decided.get(v.id)
        or RequestError(f"variant {v.id} was decided meanwhile", code=ErrorCode.already_decided)
        for v in waiting
    }


def bulk_approve(
    *,
    session: Session,
    tenant_ids: Collection[str],
    variant_ids: Sequence[str],
    decider: Decider,
    note: str | None = None,
) -> list[Decided | RequestError]:
    """Approve each variant on its own (a savepoint each): a refused item carries its
    error (``not_found``, ``already_decided``) and the others go on. Which of them are
    the tenants' is read in one query first, so an id that is not costs no savepoint."""
    owned = set(
        session.exec(
            select(Variant.id)
            .join(Job, col(Job.id) == col(Variant.job_id))
            .where(col(Variant.id).in_(set(variant_ids)), col(Job.tenant_id).in_(tenant_ids))
        ).all()
    )
    outcomes: list[Decided | RequestError] = []
    for variant_id in variant_ids:
        if variant_id not in owned:
            outcomes.append(RequestError(f"no variant {variant_id}", code=ErrorCode.not_found))
            continue
        try:
            with session.begin_nested():
                outcomes.append(_approve(session, tenant_ids, variant_id, decider, note))
        except RequestError as exc:
            outcomes.append(exc)
    return outcomes
