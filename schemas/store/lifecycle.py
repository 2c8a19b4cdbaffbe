"""Data lifecycle: deleting a job with everything it owns, and purging by age.

A job owns its variants (and the decisions on them), its deliveries (and their
attempts), and its image when no other job points at the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import delete, distinct, func
from sqlmodel import Session, col, select

from schemas.store.blobs import file_path
from schemas.tables import Blob, Decision, Delivery, DeliveryAttempt, Job, Variant


def delete_job(*, session: Session, tenant_id: str, job_id: str, store: str) -> bool:
    """Delete one of the tenant's jobs; False if it has no such job."""
    job = session.get(Job, job_id)
    if job is None or job.tenant_id != tenant_id:
        return False
    _delete(session, [job_id], store)
    return True


def purge(*, session: Session, older_than: datetime, store: str, limit: int = 1000) -> int:
    """Delete up to ``limit`` jobs created before ``older_than``; returns how many."""
    ids = list(
        session.exec(select(Job.id).where(col(Job.created_at) < older_than).limit(limit)).all()
    )
    _delete(session, ids, store)
    return len(ids)


def purge_preview(*, session: Session, older_than: datetime) -> dict[str, Any]:
    """What :func:`purge_all` would delete: jobs, their tenants, variants and deliveries,
    and the oldest job's creation time."""
    old = select(Job.id).where(col(Job.created_at) < older_than)
    jobs, tenants, oldest = session.exec(
        select(func.count(), func.count(distinct(Job.tenant_id)), func.min(Job.created_at)).where(
            col(Job.created_at) < older_than
        )
    ).one()
    variants = session.exec(
        select(func.count()).select_from(Variant).where(col(Variant.job_id).in_(old))
    ).one()
    deliveries = session.exec(
        select(func.count()).select_from(Delivery).where(col(Delivery.job_id).in_(old))
    ).one()
    return {
        "jobs": jobs,
        "tenants": tenants,
        "oldest": oldest,
        "variants": variants,
        "deliveries": deliveries,
    }


def purge_all(*, database_url: str, older_than: datetime, store: str) -> int:
    """Purge in chunks, one transaction each, until nothing older is left."""
    from schemas.store.sessions import session_scope

    total = 0
    while True:
        with session_scope(database_url) as session:
            deleted = purge(session=session, older_than=older_than, store=store)
        total += deleted
        if deleted == 0:
            return total


def _delete(session: Session, job_ids: Sequence[str], store: str) -> None:
    if not job_ids:
        return
    images = set(
        session.exec(
            select(Job.image_sha256).where(
                col(Job.id).in_(job_ids), col(Job.image_sha256).is_not(None)
            )
        ).all()
    )
    deliveries = select(Delivery.id).where(col(Delivery.job_id).in_(job_ids))
    session.execute(delete(DeliveryAttempt).where(col(DeliveryAttempt.delivery_id).in_(deliveries)))
    session.execute(delete(Delivery).where(col(Delivery.job_id).in_(job_ids)))
    session.execute(delete(Decision).where(col(Decision.job_id).in_(job_ids)))
    session.execute(delete(Variant).where(col(Variant.job_id).in_(job_ids)))
    session.execute(delete(Job).where(col(Job.id).in_(job_ids)))
    still_used = set(
        session.exec(select(Job.image_sha256).where(col(Job.image_sha256).in_(images))).all()
    )
    for digest in images - still_used:
        _delete_blob(session, digest, store)  # type: ignore[arg-type]


def _delete_blob(session: Session, digest: str, store: str) -> None:
    if store == "db":
        session.execute(delete(Blob).where(col(Blob.sha256) == digest))
    elif urlparse(store).scheme == "file":
        file_path(store, digest).unlink(missing_ok=True)
