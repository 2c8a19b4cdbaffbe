"""Getting a batch's image bytes: stored blobs, in one read.

A GPU worker reads stored bytes only and never fetches: an image URL is fetched by
the fetch workers before its caption task is published (``worker.fetching``), and the
claim takes only jobs whose bytes are stored. A job that reaches here without them
fails with ``image_not_fetched``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PIL import Image

from schemas.checks.images import decode_image
from schemas.errors import CaptionError, ErrorCode, PermanentError
from schemas.settings import WorkerSettings
from schemas.store.blobs import get_blobs
from schemas.store.sessions import read_scope
from schemas.tables import Job


def load_all(jobs: Sequence[Job], *, settings: WorkerSettings) -> list[bytes | CaptionError]:
    """Each job's image bytes, or the error that stands in their place."""
    digests = {job.image_sha256 for job in jobs if job.image_sha256 is not None}
    stored: dict[str, bytes] = {}
    if digests:
        with read_scope(settings.database_url) as session:
            stored = get_blobs(session=session, store=settings.blob_store, sha256s=digests)
    return [_one(job, stored, settings) for job in jobs]


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
