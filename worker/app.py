"""The Celery application: configuration, queues, beat's schedule, and the signals
that set up and wind down a worker process.

GPU workers consume ``captionq.gpu`` with one process per GPU (threads for pipelined
batches); IO workers consume ``captionq.io`` (callbacks, beat's ticks) and fetch
workers ``captionq.fetch`` (image URLs), each with threads, so a worker fetches as
many URLs side by side as it has threads, and slow image servers never hold a thread
that sends callbacks. The model is loaded
once per process in ``worker_process_init`` (after a prefork fork, never
before CUDA initialises; the solo pool sends it too); a worker that cannot load
its models exits instead of failing every job. Each process has one publisher
(``worker.publish``) and one lease keeper (``worker.lease``), which hands a batch
back through the publisher; ``worker.tasks`` imports this module, never the other
way round.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from datetime import timedelta

from celery import Celery, signals
from celery.beat import SchedulingError
from kombu import Exchange, Queue

from schemas import broker, heartbeats, logs
from schemas.errors import CaptionError
from schemas.names import (
    QUEUE_FETCH,
    QUEUE_GPU,
    QUEUE_IO,
    TASK_CAPTION,
    TASK_DELIVER,
    TASK_DISPATCH,
    TASK_FETCH,
    TASK_PURGE,
    TASK_REAP,
)
from schemas.settings import worker_settings
from worker import metrics, multiprocess
from worker.heartbeat import Heartbeat
from worker.lease import LeaseKeeper
from worker.models import Engine, load_engine
from worker.publish import Publisher

log = logging.getLogger("captionq.worker")

settings = worker_settings()

app = Celery("captionq", include=["worker.tasks"])
app.conf.update(broker.celery_config(settings.redis_url))
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    # A GPU worker runs one batch per thread; celery-batches needs more messages in hand
    # than it flushes, or batches never fill: a batch per thread, and one more filling.
    worker_concurrency=settings.pipeline_batches,
    worker_prefetch_multiplier=max(
        1, math.ceil((settings.pipeline_batches + 1) * settings.batch_size
                     / settings.pipeline_batches)
    ),
    task_queues=[
        Queue(q, Exchange(q), routing_key=q) for q in (QUEUE_GPU, QUEUE_IO, QUEUE_FETCH)
    ],
    task_default_queue=QUEUE_IO,
    task_routes={
        TASK_CAPTION: {"queue": QUEUE_GPU},
        TASK_DELIVER: {"queue": QUEUE_IO},
        TASK_FETCH: {"queue": QUEUE_FETCH},
        TASK_REAP: {"queue": QUEUE_IO},
        TASK_DISPATCH: {"queue": QUEUE_IO},
        TASK_PURGE: {"queue": QUEUE_IO},
    },
    worker_hijack_root_logger=False,
    # A prefork child loads its models before it reports up: give it the time that takes.
    worker_proc_alive_timeout=600.0,
    # Run exactly one beat (``celery -A worker.app beat``): the reaper and the outbox
    # dispatcher. Each tick expires by the next one, so a stopped IO pool never piles
    # up ticks.
    beat_schedule={
        "reap-lost-jobs": {
            "task": TASK_REAP,
            "schedule": timedelta(seconds=settings.reaper_interval_s),
            "options": {"queue": QUEUE_IO, "expires": settings.reaper_interval_s},
        },
        "dispatch-callbacks": {
            "task": TASK_DISPATCH,
            "schedule": timedelta(seconds=settings.delivery_dispatch_interval_s),
            "options": {"queue": QUEUE_IO, "expires": settings.delivery_dispatch_interval_s},
        },
        **(
            {
                "purge-expired-jobs": {
                    "task": TASK_PURGE,
                    "schedule": timedelta(hours=1),
                    "options": {"queue": QUEUE_IO, "expires": 3600},
                }
            }
            if settings.retention_days is not None
            else {}
        ),
    },
)

_engine: Engine | None = None
_engine_lock = threading.Lock()


def engine() -> Engine:
    """This process's models, loaded on first use."""
    global _engine
    with _engine_lock:
        if _engine is None:
            log.info("loading models: captioner=%s", settings.captioner_model)
            started = time.perf_counter()
            _engine = load_engine(settings)
            metrics.MODEL_LOAD_SECONDS.set(time.perf_counter() - started)
            log.info("models ready: %s", _engine.captioner.info)
        return _engine


@signals.worker_init.connect
def _load_models_before_threads(sender: object = None, **_: object) -> None:
    """A thread pool sends no ``worker_process_init``: a pipelined GPU worker loads its
    models here, in the one process, before it consumes."""
    pool = getattr(sender, "pool_cls", "")
    name = pool if isinstance(pool, str) else getattr(pool, "__module__", "")
    if "thread" in name and QUEUE_GPU in (app.amqp.queues.consume_from or {}):
        _load_models()


@signals.worker_init.connect
def _check_message_size(**_: object) -> None:
    """A caption message of more jobs than a batch runs as consecutive batches in one
    worker, its later jobs held unclaimed behind the first: say so at a GPU worker's
    start (publishers read ``CAPTION_MESSAGE_JOBS`` from the same configuration)."""
    if QUEUE_GPU not in (app.amqp.queues.consume_from or {}):
        return
    if settings.caption_message_jobs > settings.batch_size:
        log.warning(
            "CAPTION_MESSAGE_JOBS (%d) is above BATCH_SIZE (%d): each caption message runs "
            "as consecutive batches in one worker; set CAPTION_MESSAGE_JOBS to at most "
            "BATCH_SIZE for every process", settings.caption_message_jobs, settings.batch_size,
        )


@signals.worker_process_init.connect
def _load_models(**_: object) -> None:
    """Sent in each pool process (the solo pool's too): load the models, or stop the
    worker. A prefork child samples the gauges its parent cannot read."""
    try:
        engine()
    except CaptionError as exc:  # expected (a model server that does not serve the
        # configured model, or is away): its code and message, no traceback
        log.error("cannot load the models (%s): %s; this worker stops", exc.code.value,
                  exc.message)
        os._exit(3)
    except Exception:
        log.exception("cannot load the models; this worker stops")
        os._exit(3)
    if settings.prometheus_multiproc_dir is not None:
        metrics.watch(metrics.IN_FLIGHT, lambda: lease_keeper.held, sampled=True)
        from worker.models.device import memory_in_use

        metrics.watch_gpu_memory(memory_in_use, sampled=True)


@signals.worker_init.connect
def _metrics_mode(sender: object = None, **_: object) -> None:
    """Before the pool starts: a pool that forks needs the multiprocess folder, or its
    parent would export nothing its children did; what earlier processes left in the
    folder goes (``worker.multiprocess``)."""
    folder = settings.prometheus_multiproc_dir
    forks = "prefork" in str(getattr(sender, "pool_cls", ""))
    if forks and folder is None and settings.metrics_port is not None:
        log.error(
            "error[settings_invalid]: the prefork pool runs tasks in child processes; set "
            "PROMETHEUS_MULTIPROC_DIR to an empty folder of this worker's own (their "
            "metrics are summed on METRICS_PORT), or run --pool solo or threads"
        )
        os._exit(2)
    if folder is not None:
        multiprocess.clear_stale(folder)


@signals.worker_process_shutdown.connect
def _child_exits(pid: int | None = None, **_: object) -> None:
    """Sent in a prefork child as it exits: its live gauges leave the sum."""
    if settings.prometheus_multiproc_dir is not None:
        multiprocess.child_exited(settings.prometheus_multiproc_dir, pid=pid or os.getpid())


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **_: object) -> None:
    """JSON lines (``schemas.logs``) unless on a terminal or ``LOG_FORMAT=text``; and a
    broker that cannot be reached said in one line, by Celery as by the tasks: it is an
    outage every process waits out (Celery reconnects; ``worker.tasks`` says what brings
    each task's work back), not a fault to trace."""
    logs.use_format(logger, settings.log_format)
    logs.one_line(logger, _broker_outage)


def _broker_outage(error: BaseException) -> bool:
    """The broker away; or beat's error for a task it could not send, raised while
    handling that."""
    if isinstance(error, SchedulingError) and error.__context__ is not None:
        error = error.__context__
    return broker.is_outage(error)


@signals.task_prerun.connect
def _log_context(task_id: str | None = None, task: object = None, **_: object) -> None:
    logs.begin(task=getattr(task, "name", None), task_id=task_id)


@signals.worker_init.connect
@signals.beat_init.connect
def _init_sentry(**_: object) -> None:
    """Sentry's Celery integration in every worker process and in beat: beat's periodic
    tasks check in to Sentry Crons (its own monitors for schedules of a minute or more;
    ``worker.crons`` for the reaper and dispatcher, which run more often)."""
    if settings.sentry_dsn:
        from sentry_sdk.integrations.celery import CeleryIntegration

        from schemas.sentry import init_sentry

        init_sentry(
            settings.sentry_dsn,
            environment=settings.captionq_env,
            integrations=[CeleryIntegration(monitor_beat_tasks=True)],
        )


publisher = Publisher(app, settings)
lease_keeper = LeaseKeeper(settings, hand_back=publisher.hand_back)
gpu_turn = threading.Lock()  # held by one in-process model call at a time


_heartbeat: Heartbeat | None = None


@signals.worker_ready.connect
def _alive(sender: object = None, **_: object) -> None:
    """The consumer runs: export metrics and start the heartbeat (``worker.heartbeat``)."""
    global _heartbeat
    pool = heartbeats.pool_name(app.amqp.queues.consume_from or ())
    folder = settings.prometheus_multiproc_dir
    metrics.serve(settings.metrics_port, role=pool, folder=folder)
    held = metrics.held_by_children if folder is not None else lambda: lease_keeper.held
    if folder is None:  # one process: read at each scrape (a prefork child samples them)
        metrics.watch(metrics.IN_FLIGHT, held)
        from worker.models.device import memory_in_use

        metrics.watch_gpu_memory(memory_in_use)
    _heartbeat = Heartbeat(settings, pool=pool, held=held, model=settings.captioner_model)
    _heartbeat.start()


@signals.beat_init.connect
def _beat_metrics(**_: object) -> None:
    metrics.serve(settings.metrics_port, role="beat", folder=settings.prometheus_multiproc_dir)


@signals.worker_shutting_down.connect
def _bound_shutdown(**_: object) -> None:
    """SIGTERM: stop taking work (Celery does), and bound the batches in hand."""
    if _heartbeat is not None:
        _heartbeat.stop()
    log.info("shutting down: the batches in hand have %.0fs to finish", settings.shutdown_grace_s)
    lease_keeper.begin_shutdown()
