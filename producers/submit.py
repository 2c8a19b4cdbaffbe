"""Submission: validate, store the image, write the job row, publish, mark queued.

The database is the source of truth: a job row (and its image) is committed
before anything is published. The API, the Python client and the CLI all
submit through here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from producers.limits import in_flight
from producers.publish import publish_captions
from schemas.api import JobRequest, catalogue_problem
from schemas.checks.images import decode_base64_image, probe_image
from schemas.checks.policy import clean_brand_voice
from schemas.checks.urls import check_url
from schemas.errors import ImageError, PermanentError, RequestError
from schemas.messages import JobRef
from schemas.names import PRIORITY_MIN
from schemas.settings import CoreSettings
from schemas.store.blobs import put_blob, put_blobs
from schemas.store.jobs import create_job, create_jobs, mark_queued
from schemas.tables import Job, JobStatus, Tenant

log = logging.getLogger("captionq.submit")
Checked = tuple[JobRequest, bytes | None]  # a request that passed its checks, its image bytes


@dataclass(frozen=True)
class Submitted:
    job_id: str
    status: JobStatus
    created: bool


def inline_image(request: JobRequest, *, settings: CoreSettings) -> bytes | None:
    """Decode inline bytes and check them up to the header (the worker decodes fully)."""
    if request.image_base64 is None:
        return None
    try:
        data = decode_base64_image(request.image_base64, max_bytes=settings.image_max_bytes)
        probe_image(
            data, max_pixels=settings.image_max_pixels, max_bytes=settings.image_max_bytes
        ).close()
    except ImageError as exc:
        raise RequestError(exc.message, code=exc.code) from exc
    return data


def validate(request: JobRequest, settings: CoreSettings) -> None:
    problem = catalogue_problem(
        styles=request.styles, platforms=request.platforms, variants=request.variants
    )
    if problem is not None:
        code, message = problem
        raise RequestError(message, code=code)
    if request.brand_voice is not None:
        try:
            clean_brand_voice(request.brand_voice)
        except PermanentError as exc:
            raise RequestError(f"brand_voice: {exc.message}", code=exc.code) from exc
    if request.image_url is not None:
        # Syntax, scheme, port and literal addresses now; the worker checks every
        # address the host resolves to when it fetches.
        try:
            check_url(
                request.image_url,
                allowed_ports=settings.url_allowed_ports,
                allow_networks=settings.url_allow_cidrs,
            )
        except PermanentError as exc:
            raise RequestError(f"image_url: {exc.message}", code=exc.code) from exc


def _create(
    session: Session, tenant: Tenant, settings: CoreSettings, checked: Sequence[Checked]
) -> list[tuple[Job, bool] | RequestError]:
    """Store the images and insert the jobs, all at once; job by job, each in its own
    savepoint, if a concurrent request took one of the idempotency keys meanwhile."""
    if not checked:
        return []
    try:
        with session.begin_nested():
            inline = [data for _, data in checked if data is not None]
            digests = iter(put_blobs(session=session, store=settings.blob_store, items=inline))
            pairs = [
                (request, next(digests) if data is not None else None) for request, data in checked
            ]
            return create_jobs(session=session, tenant=tenant, requests=pairs)
    except IntegrityError as exc:
        log.info("a concurrent insert conflicted (%s); creating job by job", exc.orig)
    outcomes: list[tuple[Job, bool] | RequestError] = []
    for request, data in checked:
        try:
            with session.begin_nested():
                digest = None
                if data is not None:
                    digest = put_blob(session=session, store=settings.blob_store, data=data)
                outcomes.append(
                    create_job(session=session, tenant=tenant, request=request, image_sha256=digest)
                )
        except RequestError as exc:
            outcomes.append(exc)
    return outcomes


def fair_priority(priority: int, *, backlog: int, steps: Sequence[int]) -> int:
    """The priority a job is published with: one step lower for each fair-share step
    its tenant's backlog has reached (never below the lowest)."""
    return max(PRIORITY_MIN, priority - sum(backlog >= step for step in steps))


def submit_many(
    *, session: Session, settings: CoreSettings, tenant: Tenant, requests: Sequence[JobRequest]
) -> list[Submitted | RequestError]:
    """Submit a batch: one transaction for the rows, one broker connection for the messages.

    A request that is refused gets its ``RequestError`` in its place; the others go on.
    Commits ``session`` twice: the rows before anything is published, then their
    ``queued`` state.
    """
    checked: list[Checked] = []
    refused: dict[int, RequestError] = {}
    for at, request in enumerate(requests):
        try:
            validate(request, settings)
            checked.append((request, inline_image(request, settings=settings)))
        except RequestError as exc:
            refused[at] = exc
    created = iter(_create(session, tenant, settings, checked))
    outcomes: list[Submitted | RequestError] = []
    to_publish: list[JobRef] = []
    publishing: set[str] = set()
    backlog = in_flight(session=session, tenant_id=tenant.id)
    for at in range(len(requests)):
        outcome = refused.get(at) or next(created)
        if isinstance(outcome, RequestError):
            outcomes.append(outcome)
            continue
        job, was_created = outcome
        outcomes.append(Submitted(job.id, JobStatus(job.status), was_created))
        # A replayed key whose job never reached the broker is published again.
        if job.status == JobStatus.received and job.id not in publishing:
            priority = fair_priority(job.priority, backlog=backlog, steps=settings.fair_share_steps)
            to_publish.append(JobRef(job.id, priority))
            publishing.add(job.id)
            backlog += 1
    session.commit()
    if to_publish:
        # Rows are committed: if publishing fails here, the jobs stay ``received``
        # and the reaper publishes them later. Nothing is lost.
        publish_captions(redis_url=settings.redis_url, jobs=to_publish)
        mark_queued(session=session, job_ids=[job.id for job in to_publish])
        session.commit()
    queued = {job.id for job in to_publish}
    return [
        Submitted(o.job_id, JobStatus.queued, o.created)
        if isinstance(o, Submitted) and o.job_id in queued
        else o
        for o in outcomes
    ]
