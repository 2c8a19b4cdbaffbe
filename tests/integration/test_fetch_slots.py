"""The caps of fetches in flight (``worker.slots``) on a real Redis: per tenant and per
host, both or neither, a slot that lapses on its own when its worker is gone."""

from __future__ import annotations

import time

import pytest
import redis

from worker.slots import FetchSlots

pytestmark = pytest.mark.integration


@pytest.fixture
def client(redis_db: str) -> redis.Redis:
    made = redis.Redis.from_url(redis_db)
    made.flushdb()
    return made


def test_a_tenant_cap_holds_across_hosts_and_a_slot_given_back_frees_it(
    client: redis.Redis,
) -> None:
    slots = FetchSlots(client, tenant_max=2, host_max=10, ttl_s=30)
    assert slots.take(job_id="j1", tenant_id="t", host="a.example")
    assert slots.take(job_id="j2", tenant_id="t", host="b.example")
    assert not slots.take(job_id="j3", tenant_id="t", host="c.example")
    assert slots.take(job_id="j4", tenant_id="other", host="c.example")  # its own cap
    assert slots.in_flight(host="c.example") == 1  # the refused one took no host slot
    slots.give_back(job_id="j1", tenant_id="t", host="a.example")
    assert slots.take(job_id="j3", tenant_id="t", host="c.example")
    assert slots.in_flight(tenant_id="t") == 2


def test_a_host_cap_holds_across_tenants(client: redis.Redis) -> None:
    slots = FetchSlots(client, tenant_max=10, host_max=1, ttl_s=30)
    assert slots.take(job_id="j1", tenant_id="t1", host="images.example")
    assert not slots.take(job_id="j2", tenant_id="t2", host="images.example")
    assert slots.in_flight(tenant_id="t2") == 0  # neither slot is taken alone
    assert slots.take(job_id="j1", tenant_id="t1", host="images.example")  # its own, renewed


def test_a_slot_whose_worker_died_lapses_on_its_own(client: redis.Redis) -> None:
    slots = FetchSlots(client, tenant_max=1, host_max=1, ttl_s=0.3)
    assert slots.take(job_id="killed", tenant_id="t", host="h")  # never given back
    assert not slots.take(job_id="next", tenant_id="t", host="h")
    time.sleep(0.4)
    assert slots.take(job_id="next", tenant_id="t", host="h")
