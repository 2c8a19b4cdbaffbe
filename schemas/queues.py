"""What the broker holds, read from Redis: each queue's waiting messages by priority
step, and the messages workers have taken and not yet acknowledged (prefetched or
running). The API's metrics, ``captionq status`` and the autoscaler's query read these.
``client`` is a ``redis.Redis``; nothing here imports Celery.
"""

from __future__ import annotations

import base64
import json
from datetime import datetime
from typing import Any, NamedTuple

from schemas import keys
from schemas.names import QUEUE_FETCH, QUEUE_GPU, QUEUE_IO

QUEUES = (QUEUE_GPU, QUEUE_IO, QUEUE_FETCH)


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


# How many messages (waiting, and held unacknowledged) :func:`job_ids_held` reads at most
# in one pass: past that, a pass costs more than the loss it looks for, and it waits
# for a shorter backlog.
HELD_READ_MAX = 20_000


def job_ids_held(client: Any, *, tasks: frozenset[str]) -> set[str] | None:
    """The ids of the jobs that a message of one of ``tasks`` is for, waiting on any
    queue's lists or held unacknowledged by a worker, read in one transaction. A
    message between the two (kombu takes it off its list, then records it unacknowledged,
    in two steps) is in neither: a job missing once may be in flight. None when the
    broker holds more than ``HELD_READ_MAX`` messages."""
    lists = [name for queue in QUEUES for name in keys.queue_lists(queue)]
    pipe = client.pipeline(transaction=False)
    for name in lists:
        pipe.llen(name)
    pipe.hlen(keys.UNACKED)
    if sum(int(n) for n in pipe.execute()) > HELD_READ_MAX:
        return None
    pipe = client.pipeline(transaction=True)
    for name in lists:
        pipe.lrange(name, 0, -1)
    pipe.hvals(keys.UNACKED)
    *waiting, unacked = pipe.execute()
    messages = [_loads(raw) for listed in waiting for raw in listed]
    messages += [unacked_message(raw) for raw in unacked]
    return {job_id for message in messages for job_id in message_job_ids(message, tasks=tasks)}


def unacked_message(raw: bytes | None) -> Any:
    """The message of an entry of kombu's ``unacked`` table (``[message, exchange,
    routing key]``), or None."""
    row = _loads(raw) if raw is not None else None
    return row[0] if isinstance(row, list) and row else None


def message_due(message: Any) -> float:
    """When a Celery message (as kombu keeps it on Redis) is due, as a UNIX time: its
    ``eta`` (a task published with a countdown, which a worker holds unacknowledged until
    then); 0 for a message due at once, or one whose ``eta`` does not read."""
    try:
        eta = message.get("headers", {}).get("eta")
        return datetime.fromisoformat(eta).timestamp() if eta else 0.0
    except (ValueError, TypeError, AttributeError):
        return 0.0


def message_job_ids(message: Any, *, tasks: frozenset[str]) -> list[str]:
    """The job ids of a Celery message (as kombu keeps it on Redis) for one of
    ``tasks``, whose first argument carries ``job_ids`` (a caption message) or
    ``job_id`` (a fetch message, or a caption message of version 1); none for any other
    message."""
    try:
        if message.get("headers", {}).get("task") not in tasks:
            return []
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        argument = json.loads(body)[0][0]
        ids = argument["job_ids"] if "job_ids" in argument else [argument["job_id"]]
        return [str(job_id) for job_id in ids]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return []


def _loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None
