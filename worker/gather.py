"""How workers gather their batches: celery-batches, counted in what a message carries.

**A GPU worker** (:class:`PipelinedBatches`), counted in jobs, with one change for a
pipelined worker.

A caption message carries up to ``CAPTION_MESSAGE_JOBS`` jobs (a bulk submission's
share messages), so :class:`PipelinedBatches` counts what it holds in jobs, not in
messages, everywhere that counts:

- **Flushing.** The buffer is flushed as soon as it holds ``flush_every``
  (``BATCH_SIZE``) jobs, and a flush is cut into batches of whole messages of at most
  ``BATCH_SIZE`` jobs each (a message is acknowledged as a whole, when its batch
  returns); a message of more jobs than that is a batch of its own, which the task
  runs as consecutive batches.
- **Prefetch.** Celery's prefetch counts messages. A message of k jobs lowers the
  consumer's prefetch by k - 1 until it is acknowledged or rejected, so that a worker
  holds about as many jobs (not k times as many) as its prefetch says: jobs it holds
  are jobs no other worker can take, and a job of a higher priority published later
  waits behind them.
- **The timer.** celery-batches also flushes on a timer every ``BATCH_INTERVAL_S``,
  whatever is in. A solo worker cannot receive while a batch runs, so its buffer fills
  meanwhile; a pipelined worker's consumer keeps receiving, and the timer would flush
  every trickle as a batch of one or two, each paying a claim, a transaction and a
  publish of its own. So a partial buffer is flushed on the timer only while fewer
  than ``waiting_limit`` batches are in hand (the next turn on the GPU would otherwise
  have nothing ready). At low load nothing changes: a lone job is flushed within
  ``BATCH_INTERVAL_S``.

**An IO worker** (:class:`CallbackBatches`) gathers deliver messages, counted in
outbox rows: a GPU worker publishes one per batch, and taking, sending and recording
the rows of several together costs one pair of transactions and one connection
instead of one per message. The buffer is flushed once it holds
``CALLBACK_BATCH_MAX`` rows, or on the timer every ``CALLBACK_BATCH_INTERVAL_S``
(what a callback may wait at low load). A flush is cut by endpoint (the message's
``endpoint``; a message that names none is sent alone) into batches of whole messages
of at most ``CALLBACK_BATCH_MAX`` rows, each run by a thread of its own, so that one
slow receiver holds up only its own callbacks. An endpoint that answers slowly gets
smaller batches, sized by how long its recent ones took per callback: a batch starts
its POSTs only within its rows' lease (``worker.sender``), and an endpoint's batches
run side by side on the pool's threads, as its messages did.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from queue import Queue
from typing import Any

from celery_batches import Batches

from worker.sender import LEASE_MARGIN_S


def jobs_in(arguments: Any) -> int:
    """How many jobs a caption task's arguments name: its message's ``job_ids`` (one
    for a message of version 1, or one that is not a caption message's; a malformed
    one is dropped by the task)."""
    return _count(arguments, "job_ids")


def rows_in(arguments: Any) -> int:
    """How many outbox rows a deliver task's arguments name (one for a malformed
    message, which the task drops)."""
    return _count(arguments, "delivery_ids")


def _count(arguments: Any, field: str) -> int:
    items = _field(arguments, field)
    return max(1, len(items)) if isinstance(items, list) else 1


def _field(arguments: Any, field: str) -> Any:
    """A field of a task's one message, from its positional arguments (None if there
    is none, or the arguments are not a message's)."""
    try:
        return arguments[0][field]
    except (KeyError, IndexError, TypeError):
        return None


def _request_jobs(request: Any) -> int:
    return jobs_in(getattr(request, "args", None))


def _request_rows(request: Any) -> int:
    return rows_in(getattr(request, "args", None))


class _CountedBuffer(Queue):  # type: ignore[type-arg]
    """celery-batches' buffer of requests, keeping count (``count``) of what they carry,
    as ``size`` counts it."""

    def __init__(self, size: Callable[[Any], int]) -> None:
        self._size = size
        super().__init__()

    def _init(self, maxsize: int) -> None:
        super()._init(maxsize)
        self.count = 0

    def _put(self, item: Any) -> None:
        super()._put(item)
        self.count += self._size(item)

    def _get(self) -> Any:
        item = super()._get()
        self.count -= self._size(item)
        return item


def cut(
    requests: Sequence[Any], limit: int, size: Callable[[Any], int] = _request_jobs
) -> Iterator[list[Any]]:
    """Whole requests, in order, in batches of at most ``limit`` (jobs, or what ``size``
    counts; a request of more than that alone)."""
    batch: list[Any] = []
    counted = 0
    for request in requests:
        n = size(request)
        if batch and counted + n > limit:
            yield batch
            batch, counted = [], 0
        batch.append(request)
        counted += n
    if batch:
        yield batch


class PipelinedBatches(Batches):
    abstract = True
    #: partial batches are flushed only while fewer batches than this are in hand
    waiting_limit = 1

    def __init__(self) -> None:
        super().__init__()
        self._buffer = _CountedBuffer(_request_jobs)
        self._in_hand = 0
        self._in_hand_lock = threading.Lock()

    def Strategy(self, task: Any, app: Any, consumer: Any) -> Callable[..., None]:  # noqa: N802
        receive = super().Strategy(task, app, consumer)

        def on_message(message: Any, body: Any, ack: Any, reject: Any, *args: Any,
                       **kwargs: Any) -> None:  # fmt: skip
            give_back = None
            extra = jobs_in(_arguments(message)) - 1
            if extra > 0:
                ack, reject, give_back = _holding(consumer.qos, extra, ack, reject)
            try:
                receive(message, body, ack, reject, *args, **kwargs)
            except BaseException:
                # Refused before it was buffered (an invalid task message: Celery rejects
                # it itself, not through ``reject``): its prefetch comes back now.
                if give_back is not None:
                    give_back()
                raise
            if self._buffer.count >= self.flush_every:
                self._do_flush()

        return on_message

    def _do_flush(self) -> None:
        with self._in_hand_lock:
            busy = self._in_hand >= self.waiting_limit
        if busy and self._buffer.count < self.flush_every:
            return  # the timer's tick: the pipeline has work; let the buffer fill
        super()._do_flush()

    def flush(self, requests: Collection[Any]) -> Any:
        for batch in cut(list(requests), self.flush_every):
            with self._in_hand_lock:
                self._in_hand += 1
            super().flush(batch)

    def batch_done(self) -> None:
        """Called by the batch function when it returns (stored, or handed back)."""
        with self._in_hand_lock:
            self._in_hand = max(0, self._in_hand - 1)


class CallbackBatches(Batches):
    abstract = True

    def __init__(self) -> None:
        super().__init__()
        self._buffer = _CountedBuffer(_request_rows)
        self._pace = _Pace()

    def Strategy(self, task: Any, app: Any, consumer: Any) -> Callable[..., None]:  # noqa: N802
        receive = super().Strategy(task, app, consumer)

        def on_message(*args: Any, **kwargs: Any) -> None:
            receive(*args, **kwargs)
            if self._buffer.count >= self.flush_every:
                self._do_flush()

        return on_message

    def flush(self, requests: Collection[Any]) -> Any:
        by_endpoint: dict[str, list[Any]] = {}
        alone: list[Any] = []  # messages that name no endpoint
        for request in requests:
            endpoint = _endpoint(request)
            if endpoint is None:
                alone.append(request)
            else:
                by_endpoint.setdefault(endpoint, []).append(request)
        for endpoint, group in by_endpoint.items():
            rows = self._pace.rows(endpoint, most=self.flush_every)
            for batch in cut(group, rows, size=_request_rows):
                super().flush(batch)
        for request in alone:
            super().flush([request])

    def pace(self, endpoint: str | None, *, posted: int, seconds: float) -> None:
        """A batch to ``endpoint`` POSTed ``posted`` callbacks in ``seconds`` (taken and
        recorded included): its next batches are cut to what starts in time."""
        self._pace.observe(endpoint, posted=posted, seconds=seconds)


# A batch starts a POST only while the lease on its rows leaves time for it (``worker.
# sender``): batches to a slow endpoint are cut to what takes about half that window.
BATCH_BUDGET_S = LEASE_MARGIN_S * 0.8 / 2
_PACE_ENDPOINTS = 4096  # endpoints remembered per process; the oldest is forgotten first


class _Pace:
    """Seconds per callback of each endpoint's recent batches (an average that forgets
    a third each batch), and the rows of its next batch: all of ``most`` for an endpoint
    that answers fast or was never seen, fewer for a slow one, one for one that hangs."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    def observe(self, endpoint: str | None, *, posted: int, seconds: float) -> None:
        if endpoint is None or posted <= 0:
            return
        each = seconds / posted
        before = self._seconds.pop(endpoint, None)
        self._seconds[endpoint] = each if before is None else before + (each - before) / 3
        while len(self._seconds) > _PACE_ENDPOINTS:
            self._seconds.pop(next(iter(self._seconds)))

    def rows(self, endpoint: str, *, most: int) -> int:
        each = self._seconds.get(endpoint)
        if not each:
            return most
        return max(1, min(most, int(BATCH_BUDGET_S / each)))


def _endpoint(request: Any) -> str | None:
    """The endpoint a deliver request's message names, if it names one."""
    endpoint = _field(getattr(request, "args", None), "endpoint")
    return endpoint if isinstance(endpoint, str) and endpoint else None


def _arguments(message: Any) -> Any:
    """A task message's positional arguments (protocol 2: ``[args, kwargs, embed]``);
    None for one that does not decode (the task drops it)."""
    try:
        return message.payload[0]
    except Exception:  # noqa: BLE001 - any decoding error: counted as one job
        return None


def _holding(qos: Any, extra: int, ack: Any, reject: Any) -> tuple[Any, Any, Any]:
    """Lower ``qos`` (the consumer's prefetch) by ``extra`` (never below one, and not
    at all when prefetch is unlimited) until the message is acknowledged or rejected,
    whichever comes first; the returned ``ack`` and ``reject`` give it back, and so does
    the returned ``give_back`` (None if nothing was taken), once in all."""
    taken = min(extra, qos.value - 1) if qos.value else 0
    if taken <= 0:
        return ack, reject, None
    qos.decrement_eventually(taken)
    given_back = threading.Event()

    def give_back() -> None:
        if not given_back.is_set():
            given_back.set()
            qos.increment_eventually(taken)

    def acked(*args: Any, **kwargs: Any) -> Any:
        give_back()
        return ack(*args, **kwargs)

    def rejected(*args: Any, **kwargs: Any) -> Any:
        give_back()
        return reject(*args, **kwargs)

    return acked, rejected, give_back
