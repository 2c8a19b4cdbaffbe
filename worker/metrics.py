"""A worker or beat process's Prometheus metrics (prometheus-client), and the server that
exports them on ``METRICS_PORT``.

Every name is ``captionq_``-prefixed, in base units, and carries no per-job label.
GPU, IO and fetch workers are one process each (threads), so each process is one
target of its own; a prefork worker is one target too, its parent serving the sum of
its children (``worker.multiprocess``; each gauge says how its processes combine).
What only the store or Redis knows (queue depth and age, dead deliveries, workers
alive) is exported by the API (``producers.api.metrics``). The README's "Operations"
section lists every metric with its labels.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from schemas.store.outbox import Sent
from worker import multiprocess

log = logging.getLogger("captionq.worker")

JOBS_FINISHED = Counter(
    "captionq_jobs_finished_total",
    "Jobs a worker finished, by outcome (succeeded, failed) and error code ('' on success)",
    ["outcome", "error_code"],
)
JOBS_RETRIED = Counter(
    "captionq_jobs_retried_total", "Jobs put back after a transient failure", ["error_code"]
)
IN_FLIGHT = Gauge(
    "captionq_jobs_in_flight",
    "Jobs this worker has claimed and not finished",
    multiprocess_mode="livesum",
)
BATCH_SIZE = Histogram(
    "captionq_batch_size", "Jobs per model batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256)
)
MODEL_SECONDS = Histogram(
    "captionq_model_seconds",
    "Seconds one batch spent in model calls (in the process: holding the device; served: "
    "waiting on the server)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
JOB_SECONDS = Histogram(
    "captionq_job_duration_seconds",
    "Seconds from a job's submission to its result, for jobs finished by this worker",
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
REVIEW_DECISIONS = Counter(
    "captionq_review_decisions",
    "Variants this worker auto-approved (action auto_approved; people decide at the review "
    "desk and through the API, which count their own)",
    ["action"],
)
REVIEW_DECISIONS.labels(action="auto_approved")  # the series exists from zero
IMAGES = Counter("captionq_images_processed_total", "Images that went through the model")
DELIVERIES = Counter(
    "captionq_deliveries_total",
    "Callback attempts, by outcome (delivered, failed, refused) and HTTP status class",
    ["outcome", "status_class"],
)
DELIVERY_LAG = Histogram(
    "captionq_delivery_lag_seconds",
    "Seconds from a callback's outbox row being written to its 2xx being recorded",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 1800, 3600),
)
REAPED = Counter(
    "captionq_reaper_actions_total",
    "Jobs the reaper acted on, by reason (received, broker_lost, stranded, lease_expired, "
    "vanished, exhausted)",
    ["reason"],
)
REAPER_LAST_RUN = Gauge(
    "captionq_reaper_last_run_timestamp_seconds",
    "When the reaper last finished a pass",
    multiprocess_mode="max",
)
START_TIME = Gauge(
    "captionq_process_start_time_seconds",
    "When this process started",
    ["role"],
    multiprocess_mode="max",
)
MODEL_LOAD_SECONDS = Gauge(
    "captionq_model_load_seconds",
    "Seconds this process took to load its models (a prefork worker: its slowest live child)",
    multiprocess_mode="livemax",
)
GPU_MEMORY = Gauge(
    "captionq_gpu_memory_bytes",
    "Accelerator memory this process holds: reserved by torch's allocator (CUDA only)",
    ["device"],
    multiprocess_mode="livesum",
)
FETCHES = Counter(
    "captionq_fetches_total",
    "Image URL fetches by a fetch worker, by outcome (fetched, retried, failed, capped: over "
    "a cap of fetches in flight, skipped: nothing to do)",
    ["outcome"],
)
FETCH_SECONDS = Histogram(
    "captionq_fetch_seconds",
    "Seconds one image URL fetch took (whether or not it succeeded)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60),
)
HEARTBEAT = Gauge(
    "captionq_worker_heartbeat_timestamp_seconds",
    "When this worker last beat its heartbeat",
    multiprocess_mode="max",
)
_children: multiprocess.Children | None = None
_sampler = multiprocess.Sampler()


def serve(port: int | None, *, role: str, folder: str | None = None) -> None:
    """Export this process's metrics on ``port`` (none when unset); with ``folder``
    (``PROMETHEUS_MULTIPROC_DIR``), those of every process of this worker, summed."""
    global _children
    START_TIME.labels(role=role).set(time.time())
    served = None
    if folder is not None:
        served, _children = multiprocess.registry(folder)
    if port is None:
        return
    if served is None:
        start_http_server(port)
    else:
        start_http_server(port, registry=served)
    log.info("metrics on :%d/metrics%s", port, " (multiprocess)" if folder else "")


def held_by_children() -> int:
    """Jobs a prefork worker's live children hold, as their files say."""
    return int(_children.value("captionq_jobs_in_flight")) if _children is not None else 0


def watch(gauge: Gauge, read: Callable[[], float], *, sampled: bool = False) -> None:
    """Report ``read()`` at every scrape, or, ``sampled`` (a prefork child, whose parent
    cannot call it), every ``multiprocess.SAMPLE_S``."""
    if sampled:
        _sampler.add(gauge, read)
    else:
        gauge.set_function(read)


def watch_gpu_memory(read: Callable[[], dict[str, int]], *, sampled: bool = False) -> None:
    """Report ``read()`` (device name → bytes in use) at every scrape (or sampled)."""
    for device in read():

        def held(d: str = device) -> float:
            return read().get(d, 0)

        watch(GPU_MEMORY.labels(device=device), held, sampled=sampled)


def batch_done(*, size: int, model_s: float, failed_codes: list[str], succeeded: int,
               retried_codes: list[str], durations_s: list[float],
               auto_approved: int = 0) -> None:  # fmt: skip
    BATCH_SIZE.observe(size)
    REVIEW_DECISIONS.labels(action="auto_approved").inc(auto_approved)
    MODEL_SECONDS.observe(model_s)
    IMAGES.inc(size)
    JOBS_FINISHED.labels(outcome="succeeded", error_code="").inc(succeeded)
    for code in failed_codes:
        JOBS_FINISHED.labels(outcome="failed", error_code=code).inc()
    for code in retried_codes:
        JOBS_RETRIED.labels(error_code=code).inc()
    for seconds in durations_s:
        JOB_SECONDS.observe(seconds)


def deliveries_sent(sent: Sent) -> None:
    for _, result in sent.attempts.values():
        code = result.status_code
        status_class = f"{code // 100}xx" if code is not None else "none"
        outcome = "delivered" if result.ok else "refused" if result.refused else "failed"
        DELIVERIES.labels(outcome=outcome, status_class=status_class).inc()


def deliveries_acknowledged(lags_s: list[float]) -> None:
    for seconds in lags_s:
        DELIVERY_LAG.observe(max(0.0, seconds))


def fetch_done(outcome: str, *, seconds: float | None) -> None:
    FETCHES.labels(outcome=outcome).inc()
    if seconds is not None:
        FETCH_SECONDS.observe(seconds)


def reaped(counts: dict[str, int]) -> None:
    for reason, count in counts.items():
        REAPED.labels(reason=reason).inc(count)
    REAPER_LAST_RUN.set(time.time())
