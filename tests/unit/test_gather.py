"""A pipelined GPU worker's batches: a partial buffer waits while the pipeline has
work (its consumer keeps receiving), and is flushed once the pipeline would wait."""

from __future__ import annotations

import pytest
from celery_batches import Batches

from worker.gather import PipelinedBatches

pytestmark = pytest.mark.unit


def test_a_partial_batch_waits_while_the_pipeline_has_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    flushed: list[int] = []
    monkeypatch.setattr(Batches, "_do_flush", lambda self: flushed.append(self._buffer.qsize()))
    monkeypatch.setattr(Batches, "flush", lambda self, requests: None)
    task = PipelinedBatches()
    task.flush_every, task.waiting_limit = 8, 2
    for _ in range(3):
        task._buffer.put(object())
    task._do_flush()
    assert flushed == [3]  # nothing in hand: the partial batch goes now
    task.flush([]), task.flush([])  # two batches in hand
    task._do_flush()
    assert flushed == [3]  # the timer's tick: it waits to fill
    for _ in range(5):
        task._buffer.put(object())
    task._do_flush()
    assert flushed == [3, 8]  # full: flushed at once
    task.batch_done()
    task._do_flush()
    assert flushed == [3, 8, 8]  # one left in hand: the next turn needs a batch
    task.batch_done(), task.batch_done()
    assert task._in_hand == 0  # never below zero
