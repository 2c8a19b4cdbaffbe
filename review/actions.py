"""The desk's decisions: approve, reject, edit one variant; approve a job; bulk-approve.

Each is a POST with the session's CSRF token. A plain form post is answered with a
redirect back to the page (303); the page's script asks for JSON instead
(``Accept: application/json``) and updates the page in place, one request per decision.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlmodel import Session

from review import metrics, views
from review.auth import CheckedDesk, Desk, Refused, SessionDep, local_path
from schemas.decisions import EDIT_MAX_CHARS, RejectReason
from schemas.errors import ErrorCode, RequestError
from schemas.store import approvals, decisions
from schemas.tables import DecisionAction

router = APIRouter()
Text = Annotated[str, Form(max_length=EDIT_MAX_CHARS * 2)]
Note = Annotated[str, Form(max_length=1000)]
Next = Annotated[str, Form(max_length=2000)]
STATUS = {ErrorCode.not_found: 404, ErrorCode.already_decided: 409, ErrorCode.edit_refused: 422}


def _wants_json(request: Request) -> bool:
    return request.headers.get("accept", "").startswith("application/json")


def _refused(exc: RequestError) -> Refused:
    detail = None
    if isinstance(exc, decisions.EditRefusedError):
        detail = [b.model_dump() for b in exc.breaches]
    return Refused(STATUS.get(exc.code, 422), exc.code.value, exc.message, detail)


def _done(
    request: Request, session: Session, made: list[decisions.Decided], next_page: str
) -> Response:
    """Commit, hand the callbacks to the IO workers, answer."""
    session.commit()
    metrics.decided(made)
    request.app.state.announcer.send([d.delivery for d in made if d.delivery is not None])
    if not _wants_json(request):
        return RedirectResponse(local_path(next_page), status_code=303)
    return JSONResponse({"decided": [_decided(d) for d in made]})


def _decided(made: decisions.Decided) -> dict[str, Any]:
    shown = views.card(made.variant)
    return {
        "variant_id": shown.id,
        "state": shown.state,
        "state_label": shown.state_label,
        "text": shown.text,
        "length": shown.length,
        "limit": shown.limit,
        "decided_by": made.decision.decided_by,
    }


def _decide(
    request: Request,
    desk: Desk,
    session: Session,
    variant_id: str,
    action: DecisionAction,
    next_page: str,
    **fields: Any,
) -> Response:
    try:
        made = decisions.decide(
            session=session,
            tenant_ids=list(desk.tenants),
            variant_id=variant_id,
            action=action,
            decider=desk.decider,
            **fields,
        )
    except RequestError as exc:
        session.rollback()
        raise _refused(exc) from exc
    return _done(request, session, [made], next_page)


@router.post("/variants/{variant_id}/approve", include_in_schema=False)
def approve(
    request: Request,
    variant_id: str,
    desk: CheckedDesk,
    session: SessionDep,
    note: Note = "",
    redecide: Annotated[bool, Form()] = False,
    next: Next = "/",
) -> Response:
    return _decide(
        request, desk, session, variant_id, DecisionAction.approved, next,
        note=note or None, redecide=redecide,
    )  # fmt: skip


@router.post("/variants/{variant_id}/reject", include_in_schema=False)
def reject(
    request: Request,
    variant_id: str,
    desk: CheckedDesk,
    session: SessionDep,
    reason: Annotated[RejectReason, Form()] = RejectReason.other,
    note: Note = "",
    redecide: Annotated[bool, Form()] = False,
    next: Next = "/",
) -> Response:
    return _decide(
        request, desk, session, variant_id, DecisionAction.rejected, next,
        reason=reason, note=note or None, redecide=redecide,
    )  # fmt: skip


@router.post("/variants/{variant_id}/edit", include_in_schema=False)
def edit(
    request: Request,
    variant_id: str,
    desk: CheckedDesk,
    session: SessionDep,
    text: Text,
    note: Note = "",
    redecide: Annotated[bool, Form()] = False,
    next: Next = "/",
) -> Response:
    if len(text) > EDIT_MAX_CHARS:
        raise Refused(422, "invalid_request", f"an edit is at most {EDIT_MAX_CHARS} characters")
    return _decide(
        request, desk, session, variant_id, DecisionAction.edited, next,
        text=text, note=note or None, redecide=redecide,
    )  # fmt: skip


@router.post("/jobs/{job_id}/approve", include_in_schema=False)
def approve_job(
    request: Request, job_id: str, desk: CheckedDesk, session: SessionDep, next: Next = "/"
) -> Response:
    try:
        outcomes = approvals.approve_job(
            session=session, tenant_ids=list(desk.tenants), job_id=job_id, decider=desk.decider
        )
    except RequestError as exc:
        raise _refused(exc) from exc
    made = [o for o in outcomes.values() if isinstance(o, decisions.Decided)]
    answer = _done(request, session, made, next)
    if isinstance(answer, JSONResponse):
        return _with_refusals(made, outcomes.items())
    return answer


@router.post("/bulk-approve", include_in_schema=False)
def bulk_approve(
    request: Request,
    desk: CheckedDesk,
    session: SessionDep,
    variant_ids: Annotated[list[str], Form()],
    next: Next = "/",
) -> Response:
    """Approve the variants selected in the queue; each is approved or refused on its own."""
    outcomes = approvals.bulk_approve(
        session=session,
        tenant_ids=list(desk.tenants),
        variant_ids=variant_ids[:500],
        decider=desk.decider,
    )
    made = [o for o in outcomes if isinstance(o, decisions.Decided)]
    answer = _done(request, session, made, next)
    if isinstance(answer, JSONResponse):
        return _with_refusals(made, zip(variant_ids, outcomes, strict=False))
    return answer


def _with_refusals(
    made: list[decisions.Decided],
    outcomes: Iterable[tuple[str, decisions.Decided | RequestError]],
) -> JSONResponse:
    refusals = [
        {"variant_id": v, "code": o.code.value, "message": o.message}
        for v, o in outcomes
        if isinstance(o, RequestError)
    ]
    return JSONResponse({"decided": [_decided(d) for d in made], "refused": refusals})
