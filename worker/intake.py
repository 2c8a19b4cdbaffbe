"""Getting a batch's inputs: its stored image bytes, its tenants' settings and its
callback endpoints' subscriptions, in one read (outside the claim's write transaction).
The subscriptions are read before the model runs, so a batch's outbox rows follow the
subscriptions as they were when it began; the sender checks them again when it sends.

A GPU worker reads stored bytes only and never fetches: an image URL is fetched by
the fetch workers before its caption task is published (``worker.fetching``), and the
claim takes only jobs whose bytes are stored. A job that reaches here without them
fails with ``image_not_fetched``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

from PIL import Image
from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from schemas.checks.images import decode_image
from schemas.errors import CaptionError, ErrorCode, PermanentError
from schemas.settings import WorkerSettings
from schemas.store.blobs import get_blobs
from schemas.store.outbox import Subscriptions
from schemas.store.results import job_subscriptions
from schemas.store.sessions import read_scope
from schemas.tables import Job, Tenant


class Intake(NamedTuple):
    """Each job's image bytes (or the error that stands in their place), in job order,
    the jobs' tenants by id, and their endpoints' subscriptions."""

    data: list[bytes | CaptionError]
    tenants: dict[str, Tenant]
    subscribed_to: Subscriptions


def load_all(jobs: Sequence[Job], *, settings: WorkerSettings) -> Intake:
    digests = {job.image_sha256 for job in jobs if job.image_sha256 is not None}
    stored: dict[str, bytes] = {}
    with read_scope(settings.database_url) as session:
        if digests:
            stored = get_blobs(session=session, store=settings.blob_store, sha256s=digests)
        tenants = _tenants(session, jobs)
        subscribed_to = job_subscriptions(session, jobs)
    return Intake([_one(job, stored, settings) for job in jobs], tenants, subscribed_to)


def _tenants(session: Session, jobs: Sequence[Job]) -> dict[str, Tenant]:
    if not jobs:
        return {}
    rows = session.exec(_TENANTS, params={"ids": list({job.tenant_id for job in jobs})}).all()
    return {tenant.id: tenant for tenant in rows}


# Built once: building a statement costs about as much CPU as running it.
_TENANTS = select(Tenant).where(col(Tenant.id).in_(bindparam("ids", expanding=True)))


def _one(job: Job, stored: dict[str, bytes], settings: WorkerSettings) -> bytes | CaptionError:
    if job.image_sha256 is not None:
        data = stored.get(job.image_sha256)
        if data is None:
            return PermanentError(
                f"image {job.image_sha256} is not in the blob store", code=ErrorCode.image_missing
            )
        return data
    return PermanentError(
        "the job reached a GPU worker without stored image bytes", code=ErrorCode.image_not_fetched
    )


def decoder(settings: WorkerSettings) -> Callable[[bytes], Image.Image]:
    def decode(data: bytes) -> Image.Image:
        return decode_image(
            data, max_pixels=settings.image_max_pixels, max_bytes=settings.image_max_bytes
        )

    return decode
