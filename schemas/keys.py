"""Every Redis key that captionq reads or writes, named in one place.

Redis holds nothing that the database cannot rebuild: the broker's queues, two
kombu structures that the reaper inspects, the reaper's epoch, and the API's rate
limits. The queues themselves are Celery's, one list per priority step, named
from ``schemas.names`` (``captionq.gpu``, ``captionq.gpu:3``, ...; see
``schemas.broker``).
"""

from __future__ import annotations

from typing import Final

# The reaper's broker epoch, kept in Redis and in the database: when Redis no longer
# has it, Redis lost its data (``worker.reaper``).
BROKER_EPOCH: Final = "captionq:broker-epoch"

# kombu's Redis transport, read by the reaper to find messages taken but never claimed.
UNACKED: Final = "unacked"  # delivery tag -> [message, exchange, routing key]
UNACKED_INDEX: Final = "unacked_index"  # delivery tag -> time it was delivered


def rate_limit(tenant_id: str) -> str:
    """The tenant's submission bucket at the API (GCRA: its theoretical arrival time)."""
    return f"captionq:ratelimit:{tenant_id}"


def fetch_slots_tenant(tenant_id: str) -> str:
    """The tenant's fetches in flight: a sorted set of fetches (a job id and a token each)
    scored by when each slot lapses (a killed fetch worker's slot lapses on its own;
    ``worker.slots``)."""
    return f"captionq:fetching:tenant:{tenant_id}"


def fetch_slots_host(host: str) -> str:
    """Fetches in flight to one image host (its name as the URL gives it, lower case)."""
    return f"captionq:fetching:host:{host}"


# Worker heartbeats: one key per worker process, refreshed by the worker itself (not by
# Celery's events), living three heartbeat intervals; its value says what it holds.
HEARTBEAT_PREFIX: Final = "captionq:heartbeat:"


def heartbeat(worker: str) -> str:
    """The heartbeat key of one worker process (``gpu@host:pid``)."""
    return f"{HEARTBEAT_PREFIX}{worker}"


def queue_lists(queue: str, steps: int = 10) -> list[str]:
    """The Redis lists of one Celery queue: one per priority step, the first under the
    queue's own name (``captionq.gpu``, ``captionq.gpu:1``, ... ``captionq.gpu:9``)."""
    return [queue, *(f"{queue}:{step}" for step in range(1, steps))]

# The reaper's last pass: when it ended and what it found (``captionq status`` reads it).
REAPER_LAST_RUN: Final = "captionq:reaper:last-run"
# The reaper's reads of the whole broker (``worker.reaper``, lost messages): a marker that
# spaces them out, and the waiting jobs the last read found no message for.
REAPER_BROKER_READ: Final = "captionq:reaper:broker-read"
REAPER_MISSING: Final = "captionq:reaper:missing"
