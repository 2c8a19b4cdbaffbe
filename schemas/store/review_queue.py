"""The review queue: jobs with variants waiting for a decision, and the desk's numbers.

A job is in the queue while one of its variants is ``pending_review`` and matches the
filters; the queue is ordered by the job's creation (oldest first, or newest) and paged
by keyset on (created_at, id), so a page costs the same at the end of a long queue as at
its head. Counts cover everything that matches, not one page.

Stats count each variant's current decision (not the ones an admin's re-decision
replaced): acceptance is approved or edited over all decided, edit rate is edited over
all decided.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import String, cast, func
from sqlmodel import Session, col, select

from schemas.errors import ErrorCode, RequestError
from schemas.tables import Decision, Job, ReviewState, Variant, utcnow


@dataclass(frozen=True)
class QueueFilter:
    """What the queue shows. Empty fields filter nothing."""

    tenant_id: str | None = None
    style: str | None = None
    platform: str | None = None
    model_id: str | None = None
    min_score: float | None = None
    max_score: float | None = None
    flagged: bool | None = None
    since: date | None = None
    until: date | None = None  # inclusive
    newest_first: bool = False


@dataclass(frozen=True)
class QueuePage:
    jobs: list[Job]
    pending: dict[str, list[Variant]]  # job id → its matching pending variants
    total_jobs: int
    total_variants: int
    next_cursor: str | None


def _writer_model() -> Any:
    return Variant.__table__.c.provenance["model_id"].as_string()  # type: ignore[attr-defined]


def _variant_filters(f: QueueFilter) -> list[Any]:
    where: list[Any] = [Variant.review_state == ReviewState.pending_review]
    if f.style:
        where.append(Variant.style == f.style)
    if f.platform:
        where.append(Variant.platform == f.platform)
    if f.model_id:
        where.append(_writer_model() == f.model_id)
    if f.min_score is not None:
        where.append(col(Variant.quality_score) >= f.min_score)
    if f.max_score is not None:
        where.append(col(Variant.quality_score) <= f.max_score)
    if f.flagged is not None:
        no_flags = cast(Variant.__table__.c.flags, String) == "[]"  # type: ignore[attr-defined]
        where.append(~no_flags if f.flagged else no_flags)
    return where


def _job_filters(tenant_ids: Collection[str], f: QueueFilter) -> list[Any]:
    tenants = list(tenant_ids)
    if f.tenant_id:
        tenants = [f.tenant_id] if f.tenant_id in tenant_ids else []
    where: list[Any] = [col(Job.tenant_id).in_(tenants)]
    if f.since is not None:
        where.append(col(Job.created_at) >= _midnight(f.since))
    if f.until is not None:
        where.append(col(Job.created_at) < _midnight(f.until + timedelta(days=1)))
    return where


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def encode_cursor(job: Job) -> str:
    return f"{job.created_at.isoformat()}~{job.id}"


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    created, sep, job_id = cursor.partition("~")
    try:
        if not sep or not job_id:
            raise ValueError(cursor)
        return datetime.fromisoformat(created), job_id
    except ValueError as exc:
        raise RequestError("malformed cursor", code=ErrorCode.invalid_request) from exc


def review_queue(
    *,
    session: Session,
    tenant_ids: Collection[str],
    filters: QueueFilter,
    limit: int,
    cursor: str | None = None,
) -> QueuePage:
    """One page of the queue of ``tenant_ids``' jobs (a tenant outside them shows nothing)."""
    variant_where = _variant_filters(filters)
    job_where = _job_filters(tenant_ids, filters)
    waiting = select(Variant.job_id).where(*variant_where)
    query = select(Job).where(*job_where, col(Job.id).in_(waiting))
    created, job_id = col(Job.created_at), col(Job.id)
    if cursor:
        at, last = decode_cursor(cursor)
        if filters.newest_first:
            query = query.where((created < at) | ((created == at) & (job_id < last)))
        else:
            query = query.where((created > at) | ((created == at) & (job_id > last)))
    order = (created.desc(), job_id.desc()) if filters.newest_first else (created, job_id)
    jobs = list(session.exec(query.order_by(*order).limit(limit + 1)).all())
    page, more = jobs[:limit], len(jobs) > limit
    pending: dict[str, list[Variant]] = {job.id: [] for job in page}
    if page:
        rows = session.exec(
            select(Variant)
            .where(*variant_where, col(Variant.job_id).in_(list(pending)))
            .order_by(col(Variant.platform), col(Variant.style), col(Variant.index))
        ).all()
        for variant in rows:
            pending[variant.job_id].append(variant)
    counted = (
        select(func.count(func.distinct(Variant.job_id)), func.count(col(Variant.id)))
        .join(Job, col(Job.id) == col(Variant.job_id))
        .where(*variant_where, *job_where)
    )
    total_jobs, total_variants = session.exec(counted).one()
    return QueuePage(
        jobs=page,
        pending=pending,
        total_jobs=int(total_jobs),
        total_variants=int(total_variants),
        next_cursor=encode_cursor(page[-1]) if more else None,
    )


def pending_models(*, session: Session, tenant_ids: Collection[str]) -> list[str]:
    """The writer models of the variants waiting for review (the queue's model filter)."""
    model = _writer_model()
    query = (
        select(model)
        .join(Job, col(Job.id) == col(Variant.job_id))
        .where(
            Variant.review_state == ReviewState.pending_review,
            col(Job.tenant_id).in_(list(tenant_ids)),
        )
        .distinct()
    )
    return sorted(m for m in session.exec(query).all() if m)


@dataclass(frozen=True)
class Tally:
    """Current decisions in one group (a style, a platform, a model, a tenant, a day)."""

    key: str
    approved: int = 0
    edited: int = 0
    rejected: int = 0

    @property
    def decided(self) -> int:
        return self.approved + self.edited + self.rejected

    @property
    def acceptance(self) -> float:
        return (self.approved + self.edited) / self.decided if self.decided else 0.0

    @property
    def edit_rate(self) -> float:
        return self.edited / self.decided if self.decided else 0.0


GROUPS = ("style", "platform", "model_id", "tenant_id", "day")


def _utc_day(session: Session, column: Any) -> Any:
    """The UTC day of a timestamp, on both databases: PostgreSQL's ``date()`` of a
    ``timestamptz`` takes the server's time zone, SQLite stores UTC text."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone("UTC", column))
    return func.date(column)


def decision_tallies(
    *, session: Session, tenant_ids: Collection[str], group: str, days: int = 30
) -> list[Tally]:
    """Current decisions of the last ``days`` days, counted by ``group`` (one of
    :data:`GROUPS`); days come oldest first, every day of the window present."""
    if group not in GROUPS:
        raise ValueError(f"unknown group {group!r}; known: {GROUPS}")
    since = _midnight(utcnow().date() - timedelta(days=days - 1))
    key: Any = (
        _utc_day(session, col(Decision.decided_at)) if group == "day" else getattr(Decision, group)
    )
    rows = session.exec(
        select(key, Decision.action, func.count())
        .where(
            col(Decision.tenant_id).in_(list(tenant_ids)),
            col(Decision.superseded_by).is_(None),
            col(Decision.decided_at) >= since,
        )
        .group_by(key, Decision.action)
    ).all()
    counts: dict[str, dict[str, int]] = {}
    for value, action, count in rows:
        counts.setdefault(str(value or "unknown"), {})[action] = int(count)
    keys: Sequence[str] = sorted(counts)
    if group == "day":
        keys = [str(since.date() + timedelta(days=n)) for n in range(days)]
    return [Tally(key=k, **counts.get(k, {})) for k in keys]
