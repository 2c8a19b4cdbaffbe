"""The caps of fetches in flight (``worker.slots``) on a real Redis: per tenant and per
host, both or neither, a slot that lapses on its own when its worker is gone, and each
fetch's slot its own (two fetches of one job from a duplicate message)."""

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
    first = slots.take(job_id="j1", tenant_id="t", host="a.example")
    assert first is not None
    assert slots.take(job_id="j2", tenant_id="t", host="b.example")
    assert slots.take(job_id="j3", tenant_id="t", host="c.example") is None
    assert slots.take(job_id="j4", tenant_id="other", host="c.example")  # its own cap
    assert slots.in_flight(host="c.example") == 1  # the refused one took no host slot
    slots.give_back(first)
    assert slots.take(job_id="j3", tenant_id="t", host="c.example")
    assert slots.in_flight(tenant_id="t") == 2


def test_a_host_cap_holds_across_tenants(client: redis.Redis) -> None:
    slots = FetchSlots(client, tenant_max=10, host_max=1, ttl_s=30)
    assert slots.take(job_id="j1", tenant_id="t1", host="images.example")
    assert slots.take(job_id="j2", tenant_id="t2", host="images.example") is None
    assert slots.in_flight(tenant_id="t2") == 0  # neither slot is taken alone


def test_two_fetches_of_one_job_each_give_back_their_own_slot(client: redis.Redis) -> None:
    """A duplicate message: two fetch workers take a slot for the same job, one of them
    is refused at the claim and gives its slot back; the other's still counts."""
    slots = FetchSlots(client, tenant_max=2, host_max=2, ttl_s=30)
    fetching = slots.take(job_id="j1", tenant_id="t", host="h")
    duplicate = slots.take(job_id="j1", tenant_id="t", host="h")
    assert fetching is not None
    assert duplicate is not None
    assert slots.take(job_id="j2", tenant_id="t", host="h") is None  # two fetches in flight
    slots.give_back(duplicate)
    assert slots.in_flight(tenant_id="t") == slots.in_flight(host="h") == 1
    slots.give_back(fetching)
    assert slots.in_flight(tenant_id="t") == 0


def test_a_slot_whose_worker_died_lapses_on_its_own(client: redis.Redis) -> None:
    slots = FetchSlots(client, tenant_max=1, host_max=1, ttl_s=0.3)
    assert slots.take(job_id="killed", tenant_id="t", host="h")  # never given back
    assert slots.take(job_id="next", tenant_id="t", host="h") is None
    time.sleep(0.4)
    assert slots.take(job_id="next", tenant_id="t", host="h")
