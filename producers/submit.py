"""Submission: validate, store the image, write the job row, publish, mark queued (or
fetching: a job whose image is a URL goes to the fetch workers' fetch stage first).

The database is the source of truth: a job row (and its image) is committed
before anything is published. The API, the Python client and the CLI all
submit through here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from kombu.exceptions import OperationalError as BrokerError
from prometheus_client import Counter
from redis.exceptions import RedisError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from producers.limits import in_flight
from producers.publish import publish_jobs
from schemas.api import JobRequest, catalogue_problem
from schemas.checks.images import decode_base64_image, probe_image
from schemas.checks.policy import clean_brand_voice
from schemas.checks.urls import CheckedURL, check_url, parse_networks
from schemas.checks.values import check_storable
from schemas.errors import ImageError, PermanentError, RequestError
from schemas.messages import JobRef
from schemas.names import PRIORITY_MIN
from schemas.settings import CoreSettings
from schemas.store.blobs import put_blob, put_blobs
from schemas.store.endpoints import ensure_endpoint
from schemas.store.fetches import mark_fetching
from schemas.store.jobs import JobRecord, create_job, create_jobs, mark_queued
from schemas.store.usage import Used, add_usage
from schemas.tables import JobStatus, Tenant

log = logging.getLogger("captionq.submit")
Checked = tuple[JobRequest, bytes | None]  # a request that passed its checks, its image bytes
SUBMITTED = Counter(
    "captionq_jobs_submitted_total",
    "Jobs submitted, by outcome (accepted, refused) and the refusal's error code",
    ["outcome", "error_code"],
)


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


def validate(
    request: JobRequest, settings: CoreSettings, *, callbacks: dict[str, str] | None = None
) -> JobRequest:
    """``request`` if it may be stored as asked (with its callback URL in canonical
    form), else the ``RequestError`` that refuses it: the same checks on every
    database, for every way in. ``callbacks``: callback URLs already accepted, each in
    its canonical form (the jobs of one bulk request share one as a rule)."""
    problem = catalogue_problem(
        styles=request.styles, platforms=request.platforms, variants=request.variants
    )
    if problem is not None:
        code, message = problem
        raise RequestError(message, code=code)
    try:
        check_storable(request.brand_voice, field="brand_voice")
        check_storable(request.metadata, field="metadata")
    except PermanentError as exc:
        raise RequestError(exc.message, code=exc.code) from exc
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
                allowed_ports=settings.allowed_ports,
                allow_networks=settings.url_allow_cidrs,
            )
        except PermanentError as exc:
            raise RequestError(f"image_url: {exc.message}", code=exc.code) from exc
    if request.callback_url is None:
        return request
    known = {} if callbacks is None else callbacks
    canonical = known.get(request.callback_url)
    if canonical is None:
        canonical = known[request.callback_url] = callback_target(
            request.callback_url, settings=settings
        ).url
    if canonical == request.callback_url:
        return request
    return request.model_copy(update={"callback_url": canonical})


def callback_target(url: str, *, settings: CoreSettings, field: str = "callback_url") -> CheckedURL:
    """A callback URL as every way in checks it (job submission and endpoint creation
    alike); the sender checks it again, address by address, when it sends."""
    try:
        return check_url(
            url,
            allowed_ports=settings.allowed_ports,
            allow_networks=parse_networks(settings.url_allow_cidrs),
        )
    except PermanentError as exc:
        raise RequestError(f"{field}: {exc.message}", code=exc.code) from exc


def _create(
    session: Session, tenant: Tenant, settings: CoreSettings, checked: Sequence[Checked]
) -> list[tuple[JobRecord, bool] | RequestError]:
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
    outcomes: list[tuple[JobRecord, bool] | RequestError] = []
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


def check_all(
    requests: Sequence[JobRequest], settings: CoreSettings
) -> list[Checked | RequestError]:
    """Each request checked, its inline image decoded and probed, or the ``RequestError``
    that refuses it, in order. No database: a caller runs this before its transaction,
    so that on SQLite nobody waits for the write lock while a bulk request's images are
    decoded."""
    out: list[Checked | RequestError] = []
    callbacks: dict[str, str] = {}
    for request in requests:
        try:
            request = validate(request, settings, callbacks=callbacks)
            out.append((request, inline_image(request, settings=settings)))
        except RequestError as exc:
            out.append(exc)
    return out


def submit_many(
    *, session: Session, settings: CoreSettings, tenant: Tenant, requests: Sequence[JobRequest]
) -> list[Submitted | RequestError]:
    """:func:`check_all`, then :func:`submit_checked`."""
    checked = check_all(requests, settings)
    return submit_checked(session=session, settings=settings, tenant=tenant, checked=checked)


def submit_checked(
    *,
    session: Session,
    settings: CoreSettings,
    tenant: Tenant,
    checked: Sequence[Checked | RequestError],
) -> list[Submitted | RequestError]:
    """Submit a batch that :func:`check_all` checked: one transaction for the rows, one
    broker connection for the messages.

    A request that is refused gets its ``RequestError`` in its place; the others go on.
    Commits ``session`` twice: the rows before anything is published, then their
    ``queued`` state.
    """
    refused = {at: c for at, c in enumerate(checked) if isinstance(c, RequestError)}
    accepted = [c for c in checked if not isinstance(c, RequestError)]
    _register_endpoints(session, tenant, settings, accepted)
    created = iter(_create(session, tenant, settings, accepted))
    outcomes: list[Submitted | RequestError] = []
    to_publish: list[JobRef] = []
    publishing: set[str] = set()
    backlog = in_flight(session=session, tenant_id=tenant.id)
    for at in range(len(checked)):
        outcome = refused.get(at) or next(created)
        if isinstance(outcome, RequestError):
            outcomes.append(outcome)
            continue
        job, was_created = outcome
        outcomes.append(Submitted(job.id, JobStatus(job.status), was_created))
        # A replayed key whose job never reached the broker is published again.
        if job.status == JobStatus.received and job.id not in publishing:
            priority = fair_priority(job.priority, backlog=backlog, steps=settings.fair_share_steps)
            to_publish.append(JobRef(job.id, priority, fetch=job.image_sha256 is None))
            publishing.add(job.id)
            backlog += 1
    created_now = sum(1 for o in outcomes if isinstance(o, Submitted) and o.created)
    add_usage(session=session, used={tenant.id: Used(jobs=created_now)})
    session.commit()
    moved: dict[str, JobStatus] = {}
    if to_publish and _published(settings, to_publish):
        captions = [job.id for job in to_publish if not job.fetch]
        fetches = [job.id for job in to_publish if job.fetch]
        mark_queued(session=session, job_ids=captions)
        mark_fetching(session=session, job_ids=fetches)
        session.commit()
        moved = dict.fromkeys(captions, JobStatus.queued)
        moved.update(dict.fromkeys(fetches, JobStatus.fetching))
    for outcome in outcomes:
        if isinstance(outcome, RequestError):
            SUBMITTED.labels(outcome="refused", error_code=outcome.code.value).inc()
        else:
            SUBMITTED.labels(outcome="accepted", error_code="").inc()
    return [
        Submitted(o.job_id, moved[o.job_id], o.created)
        if isinstance(o, Submitted) and o.job_id in moved
        else o
        for o in outcomes
    ]


def _register_endpoints(
    session: Session, tenant: Tenant, settings: CoreSettings, checked: Sequence[Checked]
) -> None:
    """Each callback URL becomes one of the tenant's endpoints (signed with the tenant's
    secret) when first used: tenant configuration is written here, never by a worker."""
    for url in dict.fromkeys(r.callback_url for r, _ in checked if r.callback_url is not None):
        ensure_endpoint(
            session=session, tenant_id=tenant.id, url=url, key=settings.webhook_secrets_key
        )


def _published(settings: CoreSettings, jobs: Sequence[JobRef]) -> bool:
    """Publish; False if the broker cannot be reached. The rows are committed, so the
    jobs stay ``received`` and are accepted all the same: the reaper publishes them
    when the broker is back. Nothing is lost, and a retry with the same idempotency
    key finds the same jobs."""
    try:
        publish_jobs(redis_url=settings.redis_url, jobs=jobs,
                     per_message=settings.caption_message_jobs)  # fmt: skip
    except (BrokerError, RedisError, OSError) as exc:
        log.warning("broker unreachable (%s): %d jobs stay received", type(exc).__name__, len(jobs))
        return False
    return True
