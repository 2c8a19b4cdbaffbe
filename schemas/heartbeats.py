"""Worker heartbeats as workers write them and status, the API and alerts read them.

Each worker process keeps one Redis key (``schemas.keys.heartbeat``) alive for three
heartbeat intervals; a key that is gone is a worker that is not alive.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from schemas import keys


class WorkerBeat(BaseModel):
    """What a worker says of itself in its heartbeat."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    worker: str  # pool@host:pid
    pool: str  # gpu, io or gpu+io
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
