"""Worker heartbeats as workers write them and status, the API and alerts read them.

Each worker process keeps one Redis key (``schemas.keys.heartbeat``) alive for three
heartbeat intervals; a key that is gone is a worker that is not alive.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, ConfigDict

from schemas import keys
from schemas.names import QUEUE_FETCH, QUEUE_GPU, QUEUE_IO


def pool_name(queues: Iterable[str]) -> str:
    """A worker's pool, named for the queues it consumes: ``gpu``, ``io``, ``fetch``, or
    their names sorted and joined (``fetch+gpu+io``: one process on all three, as the
    demo runs it)."""
    return "+".join(sorted(q.removeprefix("captionq.") for q in queues)) or "worker"


# The pools as deployed (one per queue) and as the demo runs them (one for all three).
POOLS = ("gpu", "io", "fetch", pool_name((QUEUE_GPU, QUEUE_IO, QUEUE_FETCH)))


class WorkerBeat(BaseModel):
    """What a worker says of itself in its heartbeat."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    worker: str  # pool@host:pid
    pool: str  # pool_name of its queues
    pid: int
    model: str
    in_flight: int  # jobs claimed, not finished
    started_at: float  # Unix seconds
    at: float  # Unix seconds of this beat


def alive(client: Any) -> list[WorkerBeat]:
    """Every worker whose heartbeat still lives (``client``: a ``redis.Redis``)."""
    names = sorted(client.scan_iter(match=f"{keys.HEARTBEAT_PREFIX}*", count=500))
    values = client.mget(names) if names else []
    return [WorkerBeat.model_validate_json(v) for v in values if v is not None]
