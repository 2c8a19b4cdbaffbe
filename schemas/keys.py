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
