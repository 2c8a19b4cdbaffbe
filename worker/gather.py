"""How a GPU worker gathers its batches: celery-batches, with one change for a
pipelined worker.

celery-batches flushes its buffer when ``BATCH_SIZE`` messages are in, and on a timer
every ``BATCH_INTERVAL_S`` whatever is in. A solo worker cannot receive while a batch
runs, so its buffer fills meanwhile; a pipelined worker's consumer keeps receiving,
and the timer would flush every trickle as a batch of one or two, each paying a
claim, a transaction and a publish of its own. So :class:`PipelinedBatches` flushes a
partial buffer on the timer only while fewer than ``waiting_limit`` batches are in
hand (the next turn on the GPU would otherwise have nothing ready); a full buffer is
flushed at once, as before. At low load nothing changes: a lone job is flushed within
``BATCH_INTERVAL_S``.
"""

from __future__ import annotations

import threading
from collections.abc import Collection
from typing import Any

from celery_batches import Batches


class PipelinedBatches(Batches):
    abstract = True
    #: partial batches are flushed only while fewer batches than this are in hand
    waiting_limit = 1

    def __init__(self) -> None:
        super().__init__()
        self._in_hand = 0
        self._in_hand_lock = threading.Lock()

    def _do_flush(self) -> None:
        with self._in_hand_lock:
            busy = self._in_hand >= self.waiting_limit
        if busy and self._buffer.qsize() < self.flush_every:
            return  # the timer's tick: the pipeline has work; let the buffer fill
        super()._do_flush()

    def flush(self, requests: Collection[Any]) -> Any:
        with self._in_hand_lock:
            self._in_hand += 1
        return super().flush(requests)

    def batch_done(self) -> None:
        """Called by the batch function when it returns (stored, or handed back)."""
        with self._in_hand_lock:
            self._in_hand = max(0, self._in_hand - 1)
