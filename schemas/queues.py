"""What the broker holds, read from Redis: each queue's waiting messages by priority
step, and the messages workers have taken and not yet acknowledged (prefetched or
running). The API's metrics, ``captionq status`` and the autoscaler's query read these.
``client`` is a ``redis.Redis``; nothing here imports Celery.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from schemas import keys
from schemas.names import QUEUE_GPU, QUEUE_IO

QUEUES = (QUEUE_GPU, QUEUE_IO)


class Depth(NamedTuple):
    queue: str
    step: int  # Celery's priority step on Redis: 0 is served first
    waiting: int


def depths(client: Any) -> list[Depth]:
    """Messages waiting on each of every queue's ten lists (one pipeline)."""
    lists = [(queue, step, name) for queue in QUEUES
             for step, name in enumerate(keys.queue_lists(queue))]  # fmt: skip
    pipe = client.pipeline(transaction=False)
    for _, _, name in lists:
        pipe.llen(name)
    counts = pipe.execute()
    return [Depth(q, step, int(n)) for (q, step, _), n in zip(lists, counts, strict=True)]


def taken(client: Any) -> dict[str, int]:
    """Messages held unacknowledged by workers, per queue (kombu's ``unacked`` table:
    prefetched, batched or running)."""
    held = dict.fromkeys(QUEUES, 0)
    for raw in client.hvals(keys.UNACKED):
        try:
            routing_key = json.loads(raw)[2]
        except (ValueError, IndexError, TypeError):
            continue
        if routing_key in held:
            held[routing_key] += 1
    return held
