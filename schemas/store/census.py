"""Figures of the whole store for operators: how old the oldest waiting work is, dead
callbacks, jobs by state. Read by the API's metrics and by ``captionq status``; each is
one aggregate query. (Review decisions are events, counted where they are made.)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func
from sqlmodel import Session, col, select

from schemas.names import QUEUE_FETCH, QUEUE_GPU, QUEUE_IO
from schemas.store.fetches import fetch_waiting
from schemas.tables import (
    Delivery,
    DeliveryStatus,
    Job,
    JobStatus,
    ReviewState,
    Variant,
    utcnow,
)


def _age_s(oldest: datetime | None, now: datetime) -> float:
    if oldest is None:
        return 0.0
    oldest = oldest if oldest.tzinfo is not None else oldest.replace(tzinfo=UTC)
    return max(0.0, (now - oldest).total_seconds())


def oldest_queued_s(*, session: Session) -> float:
    """Age of the oldest job waiting for a GPU worker (queued, or received with its
    bytes stored and not yet published); 0 when none waits."""
    oldest = session.exec(
        select(func.min(func.coalesce(col(Job.queued_at), col(Job.created_at)))).where(
            (col(Job.status) == JobStatus.queued.value)
            | ((col(Job.status) == JobStatus.received.value) & col(Job.image_sha256).is_not(None))
        )
    ).one()
    return _age_s(oldest, utcnow())


def oldest_fetch_s(*, session: Session) -> float:
    """Age of the oldest URL job waiting for a fetch worker to fetch its image (fetching,
    no fetch in flight); 0 when none waits."""
    oldest = session.exec(select(func.min(col(Job.created_at))).where(fetch_waiting())).one()
    return _age_s(oldest, utcnow())


def oldest_due_delivery_s(*, session: Session) -> float:
    """How late the most overdue pending callback is; 0 when none is due."""
    now = utcnow()
    oldest = session.exec(
        select(func.min(Delivery.next_attempt_at)).where(
            Delivery.status == DeliveryStatus.pending.value, Delivery.next_attempt_at <= now
        )
    ).one()
    return _age_s(oldest, now)


def oldest_pending_review_s(*, session: Session) -> float:
    oldest = session.exec(
        select(func.min(Variant.created_at)).where(
            Variant.review_state == ReviewState.pending_review.value
        )
    ).one()
    return _age_s(oldest, utcnow())


def dead_deliveries(*, session: Session) -> int:
    return session.exec(
        select(func.count()).where(Delivery.status == DeliveryStatus.dead.value)
    ).one()


def jobs_by_status(*, session: Session) -> dict[str, int]:
    rows = session.exec(select(Job.status, func.count()).group_by(Job.status)).all()
    return {str(status): int(count) for status, count in rows}


@dataclass(frozen=True)
class Census:
    """Every figure above, read in one session."""

    oldest_waiting_s: dict[str, float]  # queue -> age of its oldest waiting work
    oldest_pending_review_s: float
    dead_deliveries: int
    jobs: dict[str, int]


def take_census(*, session: Session) -> Census:
    return Census(
        oldest_waiting_s={
            QUEUE_GPU: oldest_queued_s(session=session),
            QUEUE_IO: oldest_due_delivery_s(session=session),
            QUEUE_FETCH: oldest_fetch_s(session=session),
        },
        oldest_pending_review_s=oldest_pending_review_s(session=session),
        dead_deliveries=dead_deliveries(session=session),
        jobs=jobs_by_status(session=session),
    )
