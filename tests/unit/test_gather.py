"""A GPU worker's batches, counted in jobs: a caption message carries several. The
buffer is flushed once it holds a batch's jobs, a flush is cut into batches of whole
messages, and a message of k jobs holds k - 1 of the consumer's prefetch until it is
acknowledged. In a pipelined worker a partial buffer waits while the pipeline has work
(its consumer keeps receiving), and is flushed once the pipeline would wait. A GPU
worker whose batch is smaller than the messages it is configured to receive says so.

An IO worker's deliver messages, counted in outbox rows: flushed once they hold
``CALLBACK_BATCH_MAX`` rows, and a flush cut by endpoint into batches of whole
messages."""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from celery_batches import Batches
from kombu.common import QoS

from worker.gather import CallbackBatches, PipelinedBatches, cut, jobs_in, rows_in

pytestmark = pytest.mark.unit


def message(jobs: int) -> SimpleNamespace:
    """A caption request (or its message) for ``jobs`` jobs."""
    arguments = ({"schema_version": 2, "job_ids": [f"job_{i}" for i in range(jobs)]},)
    return SimpleNamespace(args=arguments, payload=[arguments, {}, {}], eta=None)


def deliver(rows: int, endpoint: str | None) -> SimpleNamespace:
    """A deliver request (or its message) for ``rows`` outbox rows to ``endpoint``."""
    body = {"schema_version": 3, "delivery_ids": [f"msg_{i}" for i in range(rows)]}
    arguments = ({**body, "endpoint": endpoint} if endpoint else body,)
    return SimpleNamespace(args=arguments, payload=[arguments, {}, {}], eta=None)


def _buffering_only(
    monkeypatch: pytest.MonkeyPatch, size: Callable[[Any], int]
) -> list[list[int]]:
    """celery-batches' own strategy reduced to buffering each request; what is flushed
    (each request's size, as ``size`` counts its arguments) goes to the list returned."""
    flushed: list[list[int]] = []
    monkeypatch.setattr(Batches, "flush", lambda self, requests: flushed.append(
        [size(r.args) for r in requests]))  # fmt: skip

    def strategy(self: Batches, task: Any, app: Any, consumer: Any) -> Any:
        def receive(message: Any, body: Any, ack: Any, reject: Any, *args: Any) -> None:
            self._buffer.put(message)  # celery-batches' own: buffer the request

        return receive

    monkeypatch.setattr(Batches, "Strategy", strategy)
    return flushed


def sizes(batches: list[list[Any]]) -> list[list[int]]:
    return [[jobs_in(request.args) for request in batch] for batch in batches]


def test_a_partial_batch_waits_while_the_pipeline_has_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flushed: list[int] = []
    monkeypatch.setattr(Batches, "_do_flush", lambda self: flushed.append(self._buffer.count))
    monkeypatch.setattr(Batches, "flush", lambda self, requests: None)
    task = PipelinedBatches()
    task.flush_every, task.waiting_limit = 8, 2
    task._buffer.put(message(1)), task._buffer.put(message(2))
    task._do_flush()
    assert flushed == [3]  # nothing in hand: the partial batch goes now
    task.flush([message(8)]), task.flush([message(8)])  # two batches in hand
    task._do_flush()
    assert flushed == [3]  # the timer's tick: it waits to fill
    task._buffer.put(message(5))
    task._do_flush()
    assert flushed == [3, 8]  # full: flushed at once
    task.batch_done()
    task._do_flush()
    assert flushed == [3, 8, 8]  # one left in hand: the next turn needs a batch
    task.batch_done(), task.batch_done()
    assert task._in_hand == 0  # never below zero


def test_the_buffer_counts_jobs_and_a_flush_is_cut_into_batches_of_whole_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches: list[list[Any]] = []
    monkeypatch.setattr(Batches, "flush", lambda self, requests: batches.append(list(requests)))
    task = PipelinedBatches()
    task.flush_every = 8
    for jobs in (8, 1, 1, 8, 3, 20, 2):
        task._buffer.put(message(jobs))
    assert task._buffer.count == 43
    task._do_flush()
    assert task._buffer.count == 0
    # A message is acknowledged whole, so it is never split between batches; one of more
    # jobs than a batch is a batch of its own (the task runs it as consecutive batches).
    assert sizes(batches) == [[8], [1, 1], [8], [3], [20], [2]]
    assert task._in_hand == 6
    assert sizes(list(cut([message(1)] * 9, 4))) == [[1] * 4, [1] * 4, [1]]
    # What is not a caption message of version 2 counts as one job.
    odd = (None, (), ({"job_id": "j"},), ({"job_ids": []},), ({"job_ids": "job_1"},))
    assert [jobs_in(arguments) for arguments in odd] == [1] * 5


def test_a_message_flushes_the_buffer_once_it_holds_a_batch_of_jobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flushed = _buffering_only(monkeypatch, jobs_in)
    task = PipelinedBatches()
    task.flush_every = 8
    consumer = SimpleNamespace(qos=QoS(lambda prefetch_count: None, 0))
    on_message = task.Strategy(task, None, consumer)
    for jobs in (3, 4):
        on_message(message(jobs), None, None, None, set())
    assert flushed == []  # 7 jobs: not a batch yet (the timer sees to a partial one)
    on_message(message(2), None, None, None, set())
    assert flushed == [[3, 4], [2]]  # 9 jobs: flushed at once, cut at 8 jobs a batch


def test_a_message_of_several_jobs_holds_that_much_more_prefetch_until_acknowledged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    received: list[tuple[Any, Any]] = []

    def strategy(self: PipelinedBatches, task: Any, app: Any, consumer: Any) -> Any:
        def receive(message: Any, body: Any, ack: Any, reject: Any, *args: Any) -> None:
            received.append((ack, reject))

        return receive

    monkeypatch.setattr(Batches, "Strategy", strategy)
    task = PipelinedBatches()
    task.flush_every = 1000
    qos = QoS(lambda prefetch_count: None, 32)
    on_message = task.Strategy(task, None, SimpleNamespace(qos=qos))
    done: list[str] = []
    for jobs in (8, 8, 1, 8):
        on_message(message(jobs), None, lambda *a: done.append("ack"),
                   lambda *a: done.append("reject"), set())  # fmt: skip
    assert qos.value == 32 - 7 * 3  # three messages of 8 jobs held, and one of 1
    (ack1, _), (_, reject2), (ack3, _), (ack4, _) = received
    ack1("logger", ())
    ack1("logger", ())  # given back once only
    assert qos.value == 32 - 7 * 2
    reject2("logger", ())
    ack3("logger", ())
    ack4("logger", ())
    assert qos.value == 32
    assert done == ["ack", "ack", "reject", "ack", "ack"]  # Celery's own callbacks still run

    # Never below one message, and given back exactly what was taken.
    small = QoS(lambda prefetch_count: None, 4)
    on_message = task.Strategy(task, None, SimpleNamespace(qos=small))
    on_message(message(8), None, lambda *a: None, lambda *a: None, set())
    assert small.value == 1
    received[-1][0]("logger", ())
    assert small.value == 4
    # Unlimited prefetch (0) stays unlimited.
    unlimited = QoS(lambda prefetch_count: None, 0)
    on_message = task.Strategy(task, None, SimpleNamespace(qos=unlimited))
    on_message(message(8), None, lambda *a: None, lambda *a: None, set())
    received[-1][0]("logger", ())
    assert unlimited.value == 0


def test_a_message_celery_refuses_gives_its_prefetch_back() -> None:
    """A message of 8 jobs with a malformed ``eta`` header: celery-batches' strategy
    raises, and Celery rejects the message itself (not through the ``reject`` it was
    given), so the prefetch the message took must come back then, or every such message
    would lower the worker's prefetch for good."""
    from celery import Celery
    from celery.exceptions import InvalidTaskError

    app = Celery("gather-test", set_as_current=False)

    @app.task(name="captionq.caption", base=PipelinedBatches, flush_every=8,
              flush_interval=60, acks_late=True, shared=False)  # fmt: skip
    def caption(requests: list[Any]) -> None:
        return None

    qos = QoS(lambda prefetch_count: None, 33)
    consumer = SimpleNamespace(
        qos=qos, hostname="test", connection_errors=(), pool=SimpleNamespace(apply_async=None),
        event_dispatcher=SimpleNamespace(enabled=False),
        timer=SimpleNamespace(call_repeatedly=lambda *args: None),
    )  # fmt: skip
    on_message = caption.Strategy(caption, app, consumer)
    refused = message(8)
    refused.headers = {"id": "m1", "task": "captionq.caption", "eta": "not a time", "lang": "py"}
    refused.body, refused.content_type = b"{}", "application/json"
    refused.content_encoding, refused.delivery_info, refused.properties = "utf-8", {}, {}
    with pytest.raises(InvalidTaskError):
        on_message(refused, None, lambda *a: None, lambda *a: None, set())
    assert qos.value == 33


def test_a_gpu_worker_says_at_start_when_a_message_holds_more_than_its_batch(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from worker import app as worker_app

    def start(**sizes: int) -> str:
        monkeypatch.setattr(worker_app, "settings", worker_app.settings.model_copy(update=sizes))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="captionq.worker"):
            worker_app._check_message_size()
        return caplog.text

    said = start(batch_size=4, caption_message_jobs=8)
    assert "CAPTION_MESSAGE_JOBS (8) is above BATCH_SIZE (4)" in said
    assert start(batch_size=8, caption_message_jobs=8) == ""
    assert start(batch_size=4, caption_message_jobs=4) == ""


def test_deliver_messages_are_counted_in_rows_and_a_flush_is_cut_by_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batches: list[list[Any]] = []
    monkeypatch.setattr(Batches, "flush", lambda self, requests: batches.append(list(requests)))
    task = CallbackBatches()
    task.flush_every = 32
    for rows, endpoint in ((8, "a"), (8, "b"), (8, "a"), (1, None), (20, "a"), (8, "b"),
                           (1, None), (40, "b")):  # fmt: skip
        task._buffer.put(deliver(rows, endpoint))
    assert task._buffer.count == 94
    task._do_flush()
    assert task._buffer.count == 0
    shape = [[(rows_in(r.args), r.args[0].get("endpoint")) for r in batch] for batch in batches]
    # One endpoint's messages together, whole, up to 32 rows a batch (a larger message
    # alone); a message that names no endpoint is a batch of its own.
    assert shape == [
        [(8, "a"), (8, "a")], [(20, "a")],
        [(8, "b"), (8, "b")], [(40, "b")],
        [(1, None)], [(1, None)],
    ]  # fmt: skip
    odd = (None, (), ({"job_ids": ["j"]},), ({"delivery_ids": "msg_1"},))
    assert [rows_in(arguments) for arguments in odd] == [1] * 4


def test_a_deliver_message_flushes_the_buffer_once_it_holds_a_batch_of_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flushed = _buffering_only(monkeypatch, rows_in)
    task = CallbackBatches()
    task.flush_every = 32
    on_message = task.Strategy(task, None, SimpleNamespace())
    for _ in range(3):
        on_message(deliver(8, "a"), None, None, None, set())
    assert flushed == []  # 24 rows: the timer sees to them if no more come
    on_message(deliver(8, "a"), None, None, None, set())
    assert flushed == [[8, 8, 8, 8]]  # 32 rows: flushed at once, one batch


def test_a_slow_endpoints_batches_are_cut_to_what_starts_within_their_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Batches to one endpoint run side by side on the pool's threads; a batch starts a
    POST only within its rows' lease, so a slow endpoint gets smaller batches (more of
    them, side by side), as its messages went before they were gathered."""
    from worker.gather import BATCH_BUDGET_S

    batches: list[list[Any]] = []
    monkeypatch.setattr(Batches, "flush", lambda self, requests: batches.append(list(requests)))
    task = CallbackBatches()
    task.flush_every = 32

    def cut_for(endpoint: str) -> list[int]:
        batches.clear()
        task.flush([deliver(8, endpoint) for _ in range(4)] + [deliver(1, endpoint)] * 8)
        return [sum(rows_in(r.args) for r in batch) for batch in batches]

    assert cut_for("never-seen") == [32, 8]  # no account of it yet: a whole batch
    task.pace("fast", posted=32, seconds=0.05)
    assert cut_for("fast") == [32, 8]
    task.pace("slow", posted=20, seconds=4.0)  # 0.2 s a callback
    rows = int(BATCH_BUDGET_S / 0.2)
    assert max(cut_for("slow")) <= rows < 32
    assert sum(cut_for("slow")) == 40  # every row in some batch
    task.pace("hangs", posted=1, seconds=15.0)
    assert set(cut_for("hangs")) == {8, 1}  # one message a batch
    task.pace("slow", posted=32, seconds=0.05)  # it got fast: the average follows
    task.pace("slow", posted=32, seconds=0.05)
    task.pace("slow", posted=32, seconds=0.05)
    assert max(cut_for("slow")) > rows
    task.pace("ignored", posted=0, seconds=3.0)  # nothing POSTed: nothing learnt
    assert cut_for("ignored") == [32, 8]
