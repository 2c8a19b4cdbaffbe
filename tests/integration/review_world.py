"""Reviewable jobs made directly in the store: a tenant, jobs that succeeded with
variants waiting for review, as the worker leaves them (``prepare_succeeded``, then
``store_prepared``)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session

from schemas.api import VariantBase
from schemas.store.blobs import put_blob
from schemas.store.jobs import claim
from schemas.store.results import (
    Completed,
    job_subscriptions,
    prepare_succeeded,
    store_prepared,
)
from schemas.tables import QUALITY_SCORE_VERSION, Job, ReviewState, Tenant
from tests.support.images import png

TEXTS = {
    "x": "Sunlit shoes for long city walks.",
    "instagram": "A bright pair of shoes, ready for the weekend #shoes",
}


def reviewable_job(
    session: Session,
    tenant: Tenant,
    *,
    styles: Sequence[str] = ("playful",),
    platforms: Sequence[str] = ("x", "instagram"),
    callback_url: str | None = "https://hooks.example.com/review",
    flags: Sequence[str] = (),
    score: float = 0.8,
    review_state: str = ReviewState.pending_review,
    model_id: str = "tiny-writer",
    text: str | None = None,
) -> Job:
    """A succeeded job of ``tenant`` with one variant per style and platform."""
    job = Job(
        tenant_id=tenant.id,
        styles=list(styles),
        platforms=list(platforms),
        variants=1,
        request_hash="0" * 64,
        callback_url=callback_url,
        # its image stored, as every job is before a caption claim takes it
        image_sha256=put_blob(session=session, store="db", data=png()),
    )
    session.add(job)
    session.flush()
    claimed = claim(session=session, job_ids=[job.id])
    rows = [
        VariantBase(
            style=style,
            platform=platform,
            index=0,
            text=text or TEXTS.get(platform, "Plain words for a plain picture."),
            quality_score=score,
            quality_parts={"compliance": 1.0, "policy": 1.0, "repetition": 1.0},
            flags=tuple(flags),
            review_state=review_state,
            provenance={"model_id": model_id, "limit": 280,
                        "quality_score_version": QUALITY_SCORE_VERSION},
        )
        for style in styles
        for platform in platforms
    ]
    done = Completed(job_id=job.id, caption="a pair of shoes", model_id="tiny-captioner",
                     model_revision=None, variants=rows)  # fmt: skip
    prepared = prepare_succeeded(results=[done], jobs=claimed,
                                 subscribed_to=job_subscriptions(session, claimed))
    store_prepared(session=session, prepared=prepared)
    session.refresh(job)
    return job
