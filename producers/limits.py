"""Per-tenant admission control at the API: a rate limit kept in Redis, and a cap on
jobs in flight read from the database (the source of truth, so it cannot drift).

The rate limit is GCRA (a token bucket without a refill timer): one Redis key per
tenant holding the theoretical arrival time, updated atomically by a Lua script
on Redis's own clock, so every API host shares the same bucket.
"""

from __future__ import annotations

import math
from functools import lru_cache

import redis
from sqlalchemy import func
from sqlmodel import Session, col, select

from schemas import keys
from schemas.errors import ErrorCode, RequestError, UnavailableError
from schemas.settings import ApiSettings
from schemas.tables import Job, JobStatus, Tenant

IN_FLIGHT = (JobStatus.received, JobStatus.fetching, JobStatus.queued, JobStatus.running)

_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local interval, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + cost * interval
local wait = new_tat - burst * interval - now
if wait > 0 then return {0, tostring(wait)} end
redis.call('SET', KEYS[1], tostring(new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1000)
return {1, '0'}
"""


class RateLimitedError(RequestError):
    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message, code=ErrorCode.rate_limited)
        self.retry_after_s = retry_after_s


@lru_cache(maxsize=4)
def _client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def take(*, redis_url: str, tenant_id: str, cost: int, per_s: float, burst: int) -> None:
    """Spend ``cost`` submissions from the tenant's bucket, or raise ``RateLimitedError``
    (``UnavailableError`` when Redis, where the buckets live, cannot be reached)."""
    if cost > burst:
        raise RequestError(
            f"{cost} jobs in one request exceed the burst of {burst}",
            code=ErrorCode.payload_too_large,
        )
    try:
        allowed, wait = _client(redis_url).eval(
            _GCRA, 1, keys.rate_limit(tenant_id), 1.0 / per_s, burst, cost
        )
    except redis.RedisError as exc:  # admission cannot run: nothing is written
        raise UnavailableError(
            f"the rate limit cannot be checked (Redis: {type(exc).__name__}); retry shortly",
            code=ErrorCode.broker_unavailable,
        ) from exc
    if not int(allowed):
        retry = max(1, math.ceil(float(wait)))
        raise RateLimitedError(
            f"rate limit of {per_s:g} jobs/s (burst {burst}) reached; retry in {retry} s",
            retry_after_s=retry,
        )


def in_flight(*, session: Session, tenant_id: str) -> int:
    query = select(func.count()).where(
        Job.tenant_id == tenant_id, col(Job.status).in_([s.value for s in IN_FLIGHT])
    )
    return int(session.exec(query).one())


def check_in_flight(*, session: Session, tenant_id: str, adding: int, cap: int) -> int:
    """Jobs in flight for the tenant; ``RateLimitedError`` if ``adding`` more pass ``cap``."""
    current = in_flight(session=session, tenant_id=tenant_id)
    if current + adding > cap:
        raise RateLimitedError(
            f"{current} jobs in flight; the cap is {cap}. Retry when some have finished",
            retry_after_s=5,
        )
    return current


def admit(settings: ApiSettings, session: Session, tenant: Tenant, count: int) -> None:
    """Admission, for every way in: 429 with Retry-After when the tenant is over its
    jobs in flight or its rate."""
    check_in_flight(session=session, tenant_id=tenant.id, adding=count, cap=settings.max_in_flight)
    take(
        redis_url=settings.redis_url,
        tenant_id=tenant.id,
        cost=count,
        per_s=settings.rate_limit_jobs_per_s,
        burst=settings.rate_limit_burst,
    )
