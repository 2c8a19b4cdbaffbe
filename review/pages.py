"""The desk's pages: the queue, a job, its thumbnail, and the stats.

Every query is bounded by the tenants granted to the reviewer: another tenant's job,
variant or image is 404, exactly as one that does not exist.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from sqlalchemy import func
from sqlmodel import Session, col, select

from review import views
from review.auth import DeskDep, ReadSessionDep, Refused, SettingsDep
from schemas.checks.images import decode_image, thumbnail_jpeg
from schemas.decisions import REJECT_REASON_LABELS
from schemas.errors import ImageError, RequestError
from schemas.platforms import PLATFORMS
from schemas.store.blobs import get_blobs
from schemas.store.decisions import history
from schemas.store.review_queue import (
    QueueFilter,
    Tally,
    decision_tallies,
    pending_models,
    review_queue,
)
from schemas.styles import STYLES
from schemas.tables import Job, Variant

router = APIRouter()


def _page(request: Request, name: str, desk: Any, **context: Any) -> Response:
    return request.app.state.templates.TemplateResponse(  # type: ignore[no-any-return]
        request,
        name,
        {"desk": desk, "reasons": REJECT_REASON_LABELS, "path": request.url.path, **context},
    )


def _owned_job(session: Session, desk: Any, job_id: str) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.tenant_id not in desk.tenants:
        raise Refused(404, "not_found", f"no job {job_id}")
    return job


def _optional_float(value: str | None) -> float | None:
    try:
        return None if value in (None, "") else min(1.0, max(0.0, float(value)))
    except ValueError:
        return None


def _optional_date(value: str | None) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


@router.get("/", include_in_schema=False)
def queue(
    request: Request,
    desk: DeskDep,
    session: ReadSessionDep,
    settings: SettingsDep,
    tenant: Annotated[str | None, Query(max_length=40)] = None,
    style: Annotated[str | None, Query(max_length=40)] = None,
    platform: Annotated[str | None, Query(max_length=40)] = None,
    model: Annotated[str | None, Query(max_length=300)] = None,
    min_score: Annotated[str | None, Query(max_length=10)] = None,
    max_score: Annotated[str | None, Query(max_length=10)] = None,
    flagged: Annotated[str | None, Query(pattern="^(|yes|no)$")] = None,
    since: Annotated[str | None, Query(max_length=10)] = None,
    until: Annotated[str | None, Query(max_length=10)] = None,
    order: Annotated[str, Query(pattern="^(oldest|newest)$")] = "oldest",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    """Jobs waiting for review, oldest first, with their waiting variants."""
    filters = QueueFilter(
        tenant_id=tenant or None,
        style=style or None,
        platform=platform or None,
        model_id=model or None,
        min_score=_optional_float(min_score),
        max_score=_optional_float(max_score),
        flagged={"yes": True, "no": False}.get(flagged or ""),
        since=_optional_date(since),
        until=_optional_date(until),
        newest_first=order == "newest",
    )
    try:
        page = review_queue(
            session=session,
            tenant_ids=list(desk.tenants),
            filters=filters,
            limit=settings.review_page_size,
            cursor=cursor,
        )
    except RequestError as exc:
        raise Refused(422, exc.code.value, exc.message) from exc
    chosen = {k: v for k, v in request.query_params.items() if k != "cursor" and v}
    return _page(
        request,
        "queue.html",
        desk,
        page=page,
        jobs=[(job, [views.card(v) for v in page.pending[job.id]]) for job in page.jobs],
        filters=chosen,
        first_page=cursor is None,
        styles=sorted(STYLES),
        platforms=sorted(PLATFORMS),
        models=pending_models(session=session, tenant_ids=list(desk.tenants)),
    )


@router.get("/jobs/{job_id}", include_in_schema=False)
def job_page(request: Request, job_id: str, desk: DeskDep, session: ReadSessionDep) -> Response:
    """One job: its image, caption, variants by platform and style, and its history."""
    job = _owned_job(session, desk, job_id)
    variants = session.exec(select(Variant).where(Variant.job_id == job.id)).all()
    decisions = history(session=session, tenant_ids=list(desk.tenants), job_id=job.id)
    labels = {v.id: f"{v.platform} · {v.style} #{v.index + 1}" for v in variants}
    return _page(
        request,
        "job.html",
        desk,
        job=job,
        tenant=desk.tenants[job.tenant_id],
        groups=views.grouped(variants),
        waiting=sum(v.review_state == "pending_review" for v in variants),
        history=[
            (
                d,
                labels.get(d.variant_id, d.variant_id),
                views.word_diff(d.text_before, d.text_after),
            )
            for d in decisions
        ],
    )


@router.get("/jobs/{job_id}/thumbnail", include_in_schema=False)
def thumbnail(
    job_id: str, desk: DeskDep, session: ReadSessionDep, settings: SettingsDep
) -> Response:
    """The job's image, decoded and re-encoded as a small JPEG (never the stored bytes)."""
    job = _owned_job(session, desk, job_id)
    if not job.image_sha256:
        raise Refused(404, "not_found", "this job's image is not stored")
    data = get_blobs(session=session, store=settings.blob_store, sha256s=[job.image_sha256])
    if job.image_sha256 not in data:
        raise Refused(404, "not_found", "this job's image is gone")
    try:
        image = decode_image(
            data[job.image_sha256],
            max_pixels=settings.image_max_pixels,
            max_bytes=settings.image_max_bytes,
        )
    except ImageError as exc:
        raise Refused(404, "not_found", f"this job's image cannot be shown: {exc.code}") from exc
    body = thumbnail_jpeg(image, max_side=settings.review_thumbnail_px)
    return Response(
        body,
        media_type="image/jpeg",
        headers={"cache-control": "private, max-age=86400", "x-content-type-options": "nosniff"},
    )


def _relabel(tally: Tally, key: str) -> Tally:
    return Tally(key=key, approved=tally.approved, edited=tally.edited, rejected=tally.rejected)


@router.get("/stats", include_in_schema=False)
def stats(
    request: Request,
    desk: DeskDep,
    session: ReadSessionDep,
    days: Annotated[int, Query(ge=7, le=365)] = 30,
) -> Response:
    """Acceptance and edit rate over time, and per style, platform, model (and tenant,
    for admins)."""
    ids = list(desk.tenants)

    def tallies(group: str) -> list[Any]:
        return decision_tallies(session=session, tenant_ids=ids, group=group, days=days)

    daily = tallies("day")
    total = sum(t.decided for t in daily)
    charts = [
        views.bar_chart("By style", tallies("style")),
        views.bar_chart("By platform", tallies("platform")),
        views.bar_chart(
            "By model", [_relabel(t, views.model_label(t.key)) for t in tallies("model_id")]
        ),
    ]
    if desk.admin:
        names = {t.id: t.name for t in desk.tenants.values()}
        by_tenant = [_relabel(t, names.get(t.key, t.key)) for t in tallies("tenant_id")]
        charts.append(views.bar_chart("By tenant", by_tenant))
    accepted = sum(t.approved + t.edited for t in daily)
    edited = sum(t.edited for t in daily)
    waiting = session.exec(
        select(func.count())
        .select_from(Variant)
        .join(Job, col(Job.id) == col(Variant.job_id))
        .where(col(Job.tenant_id).in_(ids), Variant.review_state == "pending_review")
    ).one()
    return _page(
        request,
        "stats.html",
        desk,
        days=days,
        total=total,
        acceptance=accepted / total if total else None,
        edit_rate=edited / total if total else None,
        waiting=waiting,
        line=views.line_chart(daily),
        charts=charts,
    )
