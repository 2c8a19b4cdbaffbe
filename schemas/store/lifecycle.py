"""Data lifecycle: deleting a job with everything it owns, and purging by age.

A job owns its variants (and the decisions on them), its deliveries (and their
attempts), and its image when no other job points at the same bytes.

An image in the ``db`` store goes with the transaction. One in a ``file://`` store is
unlinked only once that transaction has committed: a commit that fails (or a rollback)
leaves the file, so no job that survives points at bytes that are gone.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from sqlalchemy import delete, distinct, event, func
from sqlalchemy.orm import SessionTransaction
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
    unused = [digest for digest in images - still_used if digest is not None]
    if not unused:
        return
    if store == "db":
        session.execute(delete(Blob).where(col(Blob.sha256).in_(unused)))
    elif urlparse(store).scheme == "file":
        _unlink_after_commit(session, [file_path(store, digest) for digest in unused])


_UNLINK = "captionq_unlink_after_commit"
_COMMITTED = "captionq_committed"


def _unlink_after_commit(session: Session, paths: Sequence[Path]) -> None:
    """Unlink ``paths`` once the session's outermost transaction commits; forget them if
    the transaction they were deleted in rolls back (a failed commit, a savepoint's
    rollback)."""
    if _UNLINK not in session.info:
        session.info[_UNLINK] = []
        event.listen(session, "after_commit", _mark_committed)
        event.listen(session, "after_transaction_end", _settle)
    transaction = session.get_nested_transaction() or session.get_transaction()
    session.info[_UNLINK].extend((transaction, path) for path in paths)


def _mark_committed(session: Session) -> None:
    session.info[_COMMITTED] = True  # the transaction ending next committed


def _settle(session: Session, transaction: SessionTransaction) -> None:
    """A savepoint that commits hands its files to its parent; the outermost transaction
    that commits unlinks them; a rollback at any level forgets its own."""
    committed = session.info.pop(_COMMITTED, False)
    pending: list[tuple[SessionTransaction, Path]] = session.info[_UNLINK]
    mine = [path for owner, path in pending if owner is transaction]
    rest = [(owner, path) for owner, path in pending if owner is not transaction]
    if committed and transaction.parent is not None:
        rest.extend((transaction.parent, path) for path in mine)
    elif committed:
        for path in mine:
            path.unlink(missing_ok=True)
    session.info[_UNLINK] = rest
