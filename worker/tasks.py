"""Celery tasks: thin. Parse the message, call the batch processor, publish what follows."""

from __future__ import annotations

import logging

from celery import Task
from celery_batches import Batches, SimpleRequest
from pydantic import ValidationError

from schemas.db import session_scope
from schemas.messages import CaptionMessage, DeliverMessage
from schemas.names import QUEUE_GPU, QUEUE_IO, TASK_CAPTION, TASK_DELIVER, celery_priority
from schemas.tables import Delivery, DeliveryStatus
from worker import batch, callbacks
from worker.app import app, engine, settings

log = logging.getLogger("captionq.worker")


@app.task(
    name=TASK_CAPTION,
    base=Batches,
    flush_every=settings.batch_size,
    flush_interval=settings.batch_interval_s,
    acks_late=True,
)
def caption(requests: list[SimpleRequest]) -> None:
    job_ids = []
    for request in requests:
        try:
            job_ids.append(CaptionMessage.model_validate(request.args[0]).job_id)
        except (ValidationError, IndexError, TypeError) as exc:
            log.error("dropping malformed caption message %s: %s", request.id, exc)
    report = batch.process(job_ids, settings=settings, engine=engine())
    for delivery_id in report.deliveries:
        send_delivery(delivery_id)
    for job_id, priority in report.retry:
        app.send_task(
            TASK_CAPTION,
            args=[CaptionMessage(job_id=job_id).model_dump()],
            queue=QUEUE_GPU,
            priority=celery_priority(priority),
            countdown=min(2.0 ** len(report.retry), 60.0),
        )
    log.info(
        "batch of %d: %d succeeded, %d failed, %d to retry",
        len(requests),
        report.succeeded,
        report.failed,
        len(report.retry),
    )


def send_delivery(delivery_id: str, *, countdown: float = 0.0) -> None:
    app.send_task(
        TASK_DELIVER,
        args=[DeliverMessage(delivery_id=delivery_id).model_dump()],
        queue=QUEUE_IO,
        countdown=countdown or None,
    )


@app.task(name=TASK_DELIVER, bind=True, acks_late=True)
def deliver(self: Task, message: dict[str, object]) -> None:
    delivery_id = DeliverMessage.model_validate(message).delivery_id
    with session_scope(settings.database_url) as session:
        delivery = session.get(Delivery, delivery_id)
        if delivery is None or delivery.status != DeliveryStatus.pending:
            return
        secret = callbacks.tenant_secret(session, delivery)
    result = callbacks.post(delivery=delivery, secret=secret, timeout_s=settings.callback_timeout_s)
    with session_scope(settings.database_url) as session:
        delivery = session.get(Delivery, delivery_id)
        assert delivery is not None
        delay = callbacks.record(
            session=session,
            delivery=delivery,
            result=result,
            max_attempts=settings.callback_max_attempts,
        )
    if delay is not None:
        send_delivery(delivery_id, countdown=delay)
