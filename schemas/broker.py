"""What producers and workers must agree on about the broker: Celery's configuration,
and how caption, fetch and deliver tasks are sent. No Celery import: the app is passed in.

A job whose image is a URL is published as a fetch task (``captionq.fetch``, on the
fetch queue); the fetch worker that stores its bytes publishes its caption task (gpu
queue). Callbacks go to the io queue.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from schemas.messages import (
    CAPTION_MESSAGE_JOBS,
    DELIVER_BATCH_MAX,
    CaptionMessage,
    CaptionMessageV1,
    DeliverMessage,
    DeliveryRef,
    FetchMessage,
    JobRef,
)
from schemas.names import (
    PRIORITY_MAX,
    QUEUE_FETCH,
    QUEUE_GPU,
    QUEUE_IO,
    TASK_CAPTION,
    TASK_DELIVER,
    TASK_FETCH,
    celery_priority,
)

log = logging.getLogger("captionq.broker")
ARGSREPR_MAX = 1024  # characters of a task's arguments that Celery's logs and events show


def _redis_errors(*names: str) -> tuple[type[BaseException], ...]:
    """redis-py's errors of these names, those its installed release has (not every
    release this project allows has all of them)."""
    return tuple(getattr(redis_errors, name) for name in names if hasattr(redis_errors, name))


# redis-py files these under its ConnectionError, but they are faults of this side (a
# password, a permission: :func:`refused`; a connection pool used up), not a broker away.
_REFUSALS = _redis_errors("AuthenticationError", "AuthorizationError", "ExternalAuthProviderError")
_NOT_OUTAGES = (*_REFUSALS, *_redis_errors("MaxConnectionsError"))


def _causes(error: BaseException) -> Iterator[BaseException]:
    """``error`` and what it was raised from, and so on (``raise ... from``)."""
    seen: BaseException | None = error
    while seen is not None:
        yield seen
        seen = seen.__cause__


def refused(error: BaseException) -> bool:
    """True when Redis refused this side's credentials or permissions (``REDIS_URL``'s
    user and password, its ACL): no retry mends that."""
    return any(isinstance(seen, _REFUSALS) for seen in _causes(error))


def is_outage(error: BaseException) -> bool:
    """True when ``error`` says the broker (Redis) cannot be reached now, not that what
    was sent is wrong: nothing can be published or read until it is back. That is
    redis-py's connection or timeout error (it wraps the socket's; not a refused
    password or a used-up pool), from direct use (fetch slots, the reaper's reads) or as
    the cause that Celery's transport raised its own error from (kombu's
    ``OperationalError``, once its retries are spent)."""
    for seen in _causes(error):
        if isinstance(seen, _NOT_OUTAGES):
            return False
        if isinstance(seen, RedisConnectionError | RedisTimeoutError):
            return True
    return False


def celery_config(redis_url: str) -> dict[str, Any]:
    return {
        "broker_url": redis_url,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_default_priority": PRIORITY_MAX // 2,
        "broker_transport_options": {
            # One Redis list per priority step; served strictly by priority.
            "priority_steps": list(range(PRIORITY_MAX + 1)),
            "sep": ":",
            "queue_order_strategy": "priority",
            "visibility_timeout": 3600,
        },
    }


def send_captions(
    app: Any,
    jobs: Sequence[JobRef],
    *,
    countdown: float | Sequence[float] = 0.0,
    per_message: int = CAPTION_MESSAGE_JOBS,
) -> None:
    """Publish the jobs' caption tasks, at each job's priority, over one broker
    connection and in one Redis pipeline, by task name, with ``app`` (a Celery
    application): jobs of equal priority and ``countdown`` share messages of up to
    ``per_message`` (the ``CAPTION_MESSAGE_JOBS`` setting), in the order given; with
    ``per_message`` 1, each is a message of version 1, which workers of any release
    read. ``countdown``: seconds before the tasks are due, one for all or one per job."""
    send_jobs(app, [job._replace(fetch=False) for job in jobs], countdown=countdown,
              per_message=per_message)  # fmt: skip


def send_jobs(
    app: Any,
    jobs: Sequence[JobRef],
    *,
    countdown: float | Sequence[float] = 0.0,
    per_message: int = CAPTION_MESSAGE_JOBS,
) -> None:
    """:func:`send_captions` for jobs of either stage: a ``fetch`` job gets a fetch task
    of its own on the fetch queue (each fetch is a request to some server), any other
    its caption task on the gpu queue, all in one Redis pipeline."""
    if not jobs:
        return
    delays = [countdown] * len(jobs) if isinstance(countdown, int | float) else countdown
    captions: dict[tuple[int, float], list[str]] = {}
    # One Redis pipeline for the lot (kombu's publish batch), not a round trip each.
    with app.producer_or_acquire() as producer, producer.batch():
        for job, delay in zip(jobs, delays, strict=True):
            if not job.fetch:
                captions.setdefault((job.priority, delay or 0.0), []).append(job.id)
                continue
            _send(app, producer, TASK_FETCH, QUEUE_FETCH, FetchMessage(job_id=job.id).model_dump(),
                  priority=celery_priority(job.priority), countdown=delay or None)  # fmt: skip
        for (priority, delay), ids in captions.items():
            for at in range(0, len(ids), per_message):
                message = _caption_message(ids[at : at + per_message], per_message)
                _send(app, producer, TASK_CAPTION, QUEUE_GPU, message,
                      priority=celery_priority(priority), countdown=delay or None)  # fmt: skip


def _caption_message(job_ids: list[str], per_message: int) -> dict[str, Any]:
    """A caption message of version 2; of version 1 when jobs are published one a
    message (``per_message`` 1), so that workers of a release before version 2 read it."""
    if per_message == 1:
        return CaptionMessageV1(job_id=job_ids[0]).model_dump()
    return CaptionMessage(job_ids=job_ids).model_dump()


def send_deliveries(app: Any, deliveries: Sequence[DeliveryRef], *, batch_max: int) -> None:
    """Publish deliver tasks for outbox rows: one task per URL (up to ``batch_max``
    rows each), named by its :func:`endpoint_key`, so that an IO worker sends each
    URL's rows over one connection and one slow receiver holds up only its own
    callbacks."""
    by_url: dict[str, list[str]] = {}
    for delivery in deliveries:
        by_url.setdefault(delivery.url, []).append(delivery.id)
    if not by_url:
        return
    with app.producer_or_acquire() as producer, producer.batch():
        for url, ids in by_url.items():
            for at in range(0, len(ids), batch_max):
                message = DeliverMessage(delivery_ids=ids[at : at + batch_max],
                                         endpoint=endpoint_key(url))  # fmt: skip
                _send(app, producer, TASK_DELIVER, QUEUE_IO, message.model_dump())


def endpoint_key(url: str) -> str:
    """A short digest that names a callback URL in deliver messages (the URL itself
    stays in the database: it may carry a tenant's token)."""
    return hashlib.blake2b(url.encode(), digest_size=8).hexdigest()


def _send(
    app: Any, producer: Any, task: str, queue: str, message: dict[str, Any], *,
    priority: int | None = None, countdown: float | None = None,
) -> None:  # fmt: skip
    """One task, by name, with its one argument. Celery describes a task's arguments for
    its logs and events with a size-bounded repr written in Python, which costs more
    than the rest of the publish; a message here is a small flat dict, whose built-in
    repr, cut to the same bound, is the same text."""
    args = [message]
    app.send_task(
        task, args=args, argsrepr=repr(args)[:ARGSREPR_MAX], kwargsrepr="{}", queue=queue,
        priority=priority, countdown=countdown, producer=producer,
    )  # fmt: skip


def offer_deliveries(app: Any, deliveries: Sequence[DeliveryRef]) -> bool:
    """:func:`send_deliveries` for committed outbox rows that beat would send anyway: a
    broker that cannot take them now loses nothing, so the failure is logged, not
    raised. Returns whether they were published."""
    try:
        send_deliveries(app, deliveries, batch_max=DELIVER_BATCH_MAX)
    except Exception as exc:  # the rows are committed: beat sends them when they are due
        log.warning("%d callbacks left for beat to send: %s", len(deliveries), exc)
        return False
    return True
