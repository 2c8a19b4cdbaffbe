"""Getting a job's image bytes: from the blob store, or fetched from its URL."""

from __future__ import annotations

from sqlmodel import Session

from schemas.blobs import get_blob
from schemas.errors import CaptionError, ErrorCode, PermanentError
from schemas.settings import WorkerSettings
from schemas.tables import Job


def load_bytes(*, session: Session, job: Job, settings: WorkerSettings) -> bytes | CaptionError:
    try:
        if job.image_sha256 is not None:
            return get_blob(session=session, store=settings.blob_store, sha256=job.image_sha256)
        if job.image_url is not None:
            from worker.fetch import fetch_image

            return fetch_image(
                job.image_url,
                max_bytes=settings.image_max_bytes,
                timeout_s=settings.fetch_timeout_s,
                allowed_ports=tuple(settings.url_allowed_ports),
                allow_networks=tuple(settings.url_allow_cidrs),
            )
        return PermanentError("job has no image", code=ErrorCode.image_missing)
    except CaptionError as exc:
        return exc


def decoder(settings: WorkerSettings):  # type: ignore[no-untyped-def]
    from worker.images import decode_image

    def decode(data: bytes):  # type: ignore[no-untyped-def]
        return decode_image(
            data, max_pixels=settings.image_max_pixels, max_bytes=settings.image_max_bytes
        )

    return decode
