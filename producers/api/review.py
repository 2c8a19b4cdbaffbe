"""/v1/review: the review queue and decisions, for platforms that build their own desk.

Keys need the ``review`` scope; an ``admin`` key may also re-decide a decided variant
(``redecide: true``). Another tenant's variant or job is 404, as everywhere. Each
decision's callback (``caption.approved``, ``caption.rejected``) is committed with it
and published at once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from sqlmodel import Session

from producers.api.deps import ReadSessionDep, SessionDep, SettingsDep, require
from producers.api.metrics import decided
from producers.api.statuses import status_for
from producers.publish import publish_deliveries
from schemas.accounts import CalendarDate
from schemas.api import NO_NUL, ErrorBody, ErrorResponse, VariantPublic
from schemas.decisions import (
    ApproveRequest,
    BulkApproveRequest,
    BulkDecided,
    BulkDecisionItem,
    DecisionPublic,
    EditRequest,
    JobApproved,
    JobDecided,
    RejectRequest,
    ReviewQueueJob,
    ReviewQueuePage,
    VariantDecided,
    VariantRefused,
)
from schemas.errors import RequestError
from schemas.settings import ApiSettings
from schemas.store import approvals, decisions
from schemas.store.review_queue import QueueFilter, review_queue
from schemas.tables import DecisionAction, Job, Tenant, Variant

router = APIRouter(prefix="/v1/review", tags=["review"])


ReviewTenant = Annotated[Tenant, Depends(require("review"))]

_REFUSALS = {
    409: {"model": ErrorResponse, "description": "Already decided (an admin may re-decide)"},
}


def refused(exc: RequestError) -> JSONResponse:
    """A refusal as the API answers it: a stable code, a message, and for an edit the
    rules it broke (``detail``)."""
    error: dict[str, object] = {"code": exc.code.value, "message": exc.message}
    if isinstance(exc, decisions.EditRefusedError):
        error["detail"] = [b.model_dump() for b in exc.breaches]
    return JSONResponse(status_code=status_for(exc.code), content={"error": error})


def decider(request: Request, tenant: ReviewTenant) -> decisions.Decider:
    key = request.state.api_key
    return decisions.Decider(label=f"api-key:{key.prefix}", admin="admin" in key.scopes.split(","))


DeciderDep = Annotated[decisions.Decider, Depends(decider)]


def owned_variant(variant_id: str, tenant: ReviewTenant, session: SessionDep) -> str:
    """The variant's id if it is the tenant's; 404 before the body is even read."""
    variant = session.get(Variant, variant_id)
    job = session.get(Job, variant.job_id) if variant is not None else None
    if job is None or job.tenant_id != tenant.id:
        raise HTTPException(status_code=404, detail=f"no variant {variant_id}")
    return variant_id


def owned_job(job_id: str, tenant: ReviewTenant, session: SessionDep) -> str:
    return _owned_job(session, job_id, tenant)


def _owned_job(session: Session, job_id: str, tenant: Tenant) -> str:
    job = session.get(Job, job_id)
    if job is None or job.tenant_id != tenant.id:
        raise HTTPException(status_code=404, detail=f"no job {job_id}")
    return job_id


OwnedVariant = Annotated[str, Depends(owned_variant)]
OwnedJob = Annotated[str, Depends(owned_job)]


def _public(decision: object) -> DecisionPublic:
    return DecisionPublic.model_validate(decision, from_attributes=True)


def _committed(session: SessionDep, settings: ApiSettings, made: list[decisions.Decided]) -> None:
    session.commit()
    decided(made)
    rows = [d.delivery for d in made if d.delivery is not None]
    if rows:
        publish_deliveries(redis_url=settings.redis_url, deliveries=rows)


@router.get("/queue", response_model=ReviewQueuePage)
def queue(
    tenant: ReviewTenant,
    session: ReadSessionDep,
    style: Annotated[str | None, Query(max_length=40, pattern=NO_NUL)] = None,
    platform: Annotated[str | None, Query(max_length=40, pattern=NO_NUL)] = None,
    model: Annotated[str | None, Query(max_length=300, pattern=NO_NUL)] = None,
    min_score: Annotated[float | None, Query(ge=0, le=1)] = None,
    max_score: Annotated[float | None, Query(ge=0, le=1)] = None,
    flagged: bool | None = None,
    since: CalendarDate | None = None,
    until: CalendarDate | None = None,
    order: Annotated[str, Query(pattern="^(oldest|newest)$")] = "oldest",
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
) -> ReviewQueuePage | JSONResponse:
    """Jobs with variants waiting for review, oldest first (``order=newest`` for the
    newest); each with its matching pending variants. Pass ``next_cursor`` back as
    ``cursor`` for the next page."""
    filters = QueueFilter(
        style=style,
        platform=platform,
        model_id=model,
        min_score=min_score,
        max_score=max_score,
        flagged=flagged,
        since=since,
        until=until,
        newest_first=order == "newest",
    )
    try:
        page = review_queue(
            session=session, tenant_ids=[tenant.id], filters=filters, limit=limit, cursor=cursor
        )
    except RequestError as exc:
        return refused(exc)
    return ReviewQueuePage(
        jobs=[
            ReviewQueueJob(
                job_id=job.id,
                created_at=job.created_at,
                caption=job.caption,
                model_id=job.model_id,
                pending=[
                    VariantPublic.model_validate(v, from_attributes=True)
                    for v in page.pending[job.id]
                ],
            )
            for job in page.jobs
        ],
        total_jobs=page.total_jobs,
        total_variants=page.total_variants,
        next_cursor=page.next_cursor,
    )


def _decide(
    session: SessionDep,
    settings: ApiSettings,
    tenant: Tenant,
    who: decisions.Decider,
    variant_id: str,
    action: DecisionAction,
    body: ApproveRequest,
) -> VariantDecided | JSONResponse:
    try:
        made = decisions.decide(
            session=session,
            tenant_ids=[tenant.id],
            variant_id=variant_id,
            action=action,
            decider=who,
            reason=getattr(body, "reason", None),
            note=body.note,
            text=getattr(body, "text", None),
            redecide=body.redecide,
        )
    except RequestError as exc:
        session.rollback()
        return refused(exc)
    _committed(session, settings, [made])
    return VariantDecided(
        variant=VariantPublic.model_validate(made.variant, from_attributes=True),
        decision=_public(made.decision),
    )


@router.post("/variants/{variant_id}/approve", response_model=VariantDecided, responses=_REFUSALS)
def approve(
    variant_id: OwnedVariant,
    body: ApproveRequest,
    tenant: ReviewTenant,
    who: DeciderDep,
    session: SessionDep,
    settings: SettingsDep,
) -> VariantDecided | JSONResponse:
    """Approve a variant as it stands."""
    return _decide(session, settings, tenant, who, variant_id, DecisionAction.approved, body)


@router.post("/variants/{variant_id}/reject", response_model=VariantDecided, responses=_REFUSALS)
def reject(
    variant_id: OwnedVariant,
    body: RejectRequest,
    tenant: ReviewTenant,
    who: DeciderDep,
    session: SessionDep,
    settings: SettingsDep,
) -> VariantDecided | JSONResponse:
    """Reject a variant, with a reason from the fixed list and an optional note."""
    return _decide(session, settings, tenant, who, variant_id, DecisionAction.rejected, body)


@router.post("/variants/{variant_id}/edit", response_model=VariantDecided, responses=_REFUSALS)
def edit(
    variant_id: OwnedVariant,
    body: EditRequest,
    tenant: ReviewTenant,
    who: DeciderDep,
    session: SessionDep,
    settings: SettingsDep,
) -> VariantDecided | JSONResponse:
    """Replace a variant's text and approve it. 422 ``edit_refused`` names the rules the
    text breaks (platform limits, X's weighted count, hashtags, emoji; the copy policy)
    in ``detail``; nothing is saved then."""
    return _decide(session, settings, tenant, who, variant_id, DecisionAction.edited, body)


@router.post("/jobs/{job_id}/approve", response_model=JobApproved)
def approve_job(
    job_id: OwnedJob,
    body: ApproveRequest,
    tenant: ReviewTenant,
    who: DeciderDep,
    session: SessionDep,
    settings: SettingsDep,
) -> JobApproved:
    """Approve every variant of the job still waiting for review; one that someone else
    decided meanwhile is listed in ``refused`` (``already_decided``), the others are
    approved."""
    outcomes = approvals.approve_job(
        session=session, tenant_ids=[tenant.id], job_id=job_id, decider=who, note=body.note
    )
    made = [o for o in outcomes.values() if isinstance(o, decisions.Decided)]
    _committed(session, settings, made)
    return JobApproved(
        job_id=job_id,
        decisions=[_public(d.decision) for d in made],
        refused=[
            VariantRefused(variant_id=v, error=ErrorBody(code=o.code.value, message=o.message))
            for v, o in outcomes.items()
            if isinstance(o, RequestError)
        ],
    )


@router.get("/jobs/{job_id}/decisions", response_model=JobDecided)
def job_history(job_id: str, tenant: ReviewTenant, session: ReadSessionDep) -> JobDecided:
    """Every decision on the job's variants, oldest first (re-decisions included)."""
    _owned_job(session, job_id, tenant)
    rows = decisions.history(session=session, tenant_ids=[tenant.id], job_id=job_id)
    return JobDecided(job_id=job_id, decisions=[_public(d) for d in rows])


@router.post("/bulk-approve", response_model=BulkDecided)
def bulk_approve(
    body: BulkApproveRequest,
    tenant: ReviewTenant,
    who: DeciderDep,
    session: SessionDep,
    settings: SettingsDep,
) -> BulkDecided:
    """Approve a list of variants; each item is approved or refused on its own (a refused
    item carries its error code: ``not_found``, ``already_decided``), as /v1/jobs/bulk."""
    outcomes = approvals.bulk_approve(
        session=session,
        tenant_ids=[tenant.id],
        variant_ids=body.variant_ids,
        decider=who,
        note=body.note,
    )
    _committed(session, settings, [o for o in outcomes if isinstance(o, decisions.Decided)])
    return BulkDecided(
        items=[
            BulkDecisionItem(
                index=i,
                variant_id=variant_id,
                error=ErrorBody(code=o.code.value, message=o.message),
            )
            if isinstance(o, RequestError)
            else BulkDecisionItem(index=i, variant_id=variant_id, decision=_public(o.decision))
            for i, (variant_id, o) in enumerate(zip(body.variant_ids, outcomes, strict=True))
        ]
    )
