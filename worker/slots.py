"""Fetches in flight, capped per tenant and per image host across every fetch worker.

Each cap is a Redis sorted set (``schemas.keys``): one member per fetch in flight (its
job id and a token of its own, so that a duplicate message's fetch of the same job,
refused at the claim, gives back its own slot only), scored by when its slot lapses,
on Redis's own clock. Taking a slot drops the
lapsed members first, so a slot held by a fetch worker that was killed frees itself
after ``ttl_s`` (the fetch's lease) and no counter can drift. Both slots are taken
together or not at all, in one script.
"""

from __future__ import annotations

import uuid
from typing import Final, NamedTuple

import redis

from schemas import keys

# KEYS: the caps' sets; ARGV: the member, its lifetime (ms), then each set's cap.
_TAKE: Final = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ttl_ms = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
  if redis.call('ZCARD', key) >= tonumber(ARGV[2 + i]) then
    return 0
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now_ms + ttl_ms, ARGV[1])
  redis.call('PEXPIRE', key, ttl_ms)
end
return 1
"""


class Slot(NamedTuple):
    """One fetch's place under its tenant's cap and its host's."""

    member: str
    tenant_id: str
    host: str


class FetchSlots:
    """The caps of one fetch worker process's fetches (the counts live in Redis)."""

    def __init__(
        self, client: redis.Redis, *, tenant_max: int, host_max: int, ttl_s: float
    ) -> None:
        self._client = client
        self._take = client.register_script(_TAKE)
        self._tenant_max = tenant_max
        self._host_max = host_max
        self._ttl_ms = max(1, int(ttl_s * 1000))

    def take(self, *, job_id: str, tenant_id: str, host: str) -> Slot | None:
        """A slot of the tenant's and of the host's, for a fetch of ``job_id``; None when
        either cap is full."""
        slot = Slot(f"{job_id}:{uuid.uuid4().hex[:16]}", tenant_id, host)
        taken = self._take(
            keys=[keys.fetch_slots_tenant(tenant_id), keys.fetch_slots_host(host)],
            args=[slot.member, self._ttl_ms, self._tenant_max, self._host_max],
        )
        return slot if taken else None

    def give_back(self, slot: Slot) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.zrem(keys.fetch_slots_tenant(slot.tenant_id), slot.member)
        pipe.zrem(keys.fetch_slots_host(slot.host), slot.member)
        pipe.execute()

    def in_flight(self, *, tenant_id: str | None = None, host: str | None = None) -> int:
        """Slots held now (lapsed ones included until the next take drops them)."""
        key = keys.fetch_slots_tenant(tenant_id) if tenant_id else keys.fetch_slots_host(host or "")
        return int(self._client.zcard(key))
