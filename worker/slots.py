"""Fetches in flight, capped per tenant and per image host across every fetch worker.

Each cap is a Redis sorted set (``schemas.keys``): one member per fetch in flight (its
job id), scored by when its slot lapses, on Redis's own clock. Taking a slot drops the
lapsed members first, so a slot held by a fetch worker that was killed frees itself
after ``ttl_s`` (the fetch's lease) and no counter can drift. Both slots are taken
together or not at all, in one script.
"""

from __future__ import annotations

from typing import Final

import redis

from schemas import keys

# KEYS: the caps' sets; ARGV: the member, its lifetime (ms), then each set's cap.
_TAKE: Final = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local ttl_ms = tonumber(ARGV[2])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now_ms)
  if not redis.call('ZSCORE', key, ARGV[1]) and
     redis.call('ZCARD', key) >= tonumber(ARGV[2 + i]) then
    return 0
  end
end
for _, key in ipairs(KEYS) do
  redis.call('ZADD', key, now_ms + ttl_ms, ARGV[1])
  redis.call('PEXPIRE', key, ttl_ms)
end
return 1
"""


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

    def take(self, *, job_id: str, tenant_id: str, host: str) -> bool:
        """A slot of the tenant's and of the host's, for ``job_id``; False when either
        cap is full (taking a slot the job already holds again renews it)."""
        taken = self._take(
            keys=[keys.fetch_slots_tenant(tenant_id), keys.fetch_slots_host(host)],
            args=[job_id, self._ttl_ms, self._tenant_max, self._host_max],
        )
        return bool(taken)

    def give_back(self, *, job_id: str, tenant_id: str, host: str) -> None:
        pipe = self._client.pipeline(transaction=False)
        pipe.zrem(keys.fetch_slots_tenant(tenant_id), job_id)
        pipe.zrem(keys.fetch_slots_host(host), job_id)
        pipe.execute()

    def in_flight(self, *, tenant_id: str | None = None, host: str | None = None) -> int:
        """Slots held now (lapsed ones included until the next take drops them)."""
        key = keys.fetch_slots_tenant(tenant_id) if tenant_id else keys.fetch_slots_host(host or "")
        return int(self._client.zcard(key))
