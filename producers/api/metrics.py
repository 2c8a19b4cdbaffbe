"""``GET /metrics``: the API's own counters, and what only the store and Redis know,
read at each scrape (prometheus-client's text format).

Counted here as they happen: each request's latency (:class:`RequestTimer`, by method,
route template and status class; ``unmatched`` for a path no route knows, so the labels
stay bounded) and review decisions by action (:func:`decided`, after their commit; the
review desk counts its own, ``review.metrics``).

Read at scrape: queue depth per queue and priority step and the messages workers hold
(``schemas.queues``), the age of the oldest waiting job, callback and review variant
(``schemas.store.census``), dead deliveries, workers alive by pool (their heartbeats),
and whether the database and Redis answered; submissions are counted where they are
made (``producers.submit``). The README's "Operations" section lists
every metric with its labels. Run the API with one process per target (uvicorn's
default): counters are per process.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from functools import lru_cache

import redis
from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas import heartbeats, queues
from schemas.settings import CoreSettings
from schemas.store import census
from schemas.store.decisions import Decided
from schemas.store.sessions import read_scope
from schemas.tables import DecisionAction, JobStatus

log = logging.getLogger("captionq.api")

router = APIRouter(include_in_schema=False)

REQUEST_SECONDS = Histogram(
    "captionq_http_request_duration_seconds",
    "Seconds the API took to answer a request, by method, route template and status class",
    ["method", "route", "status_class"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# Its own registry, served beside the default one: a process may host the API and the
# review desk (the demo) or import the worker (tests), each with a counter of this name.
DECISIONS = CollectorRegistry()
REVIEW_DECISIONS = Counter(
    "captionq_review_decisions",
    "Review decisions made through the API's /v1/review routes, by action",
    ["action"],
    registry=DECISIONS,
)
for _action in DecisionAction:
    REVIEW_DECISIONS.labels(action=_action.value)  # every action's series, from zero
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def decided(made: Sequence[Decided]) -> None:
    """Count decisions once they are committed."""
    for one in made:
        REVIEW_DECISIONS.labels(action=one.decision.action).inc()


class RequestTimer:
    """Time every HTTP request from its arrival to the end of its answer (the outermost
    middleware: a body refused for its size is timed too); an answer never started is
    a 500, as the server then answers."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "other"
            REQUEST_SECONDS.labels(method, _route(scope), f"{status // 100}xx").observe(
                time.perf_counter() - started
            )


def _route(scope: Scope) -> str:
    """The path template of the route that answered, or that would have (a request
    refused before routing: the first full match, else the first partial one, as the
    router picks); ``unmatched`` when no route knows the path."""
    route = scope.get("route")
    if route is None:
        leaves = list(_leaves(scope["app"].router.routes))
        matches = [(leaf.matches(scope)[0], leaf) for leaf in leaves]
        route = next((leaf for m, leaf in matches if m == Match.FULL), None) or next(
            (leaf for m, leaf in matches if m == Match.PARTIAL), None
        )
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


def _leaves(routes: Sequence[BaseRoute]) -> Iterator[BaseRoute]:
    """Routes, with those of included routers in their place."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        yield from _leaves(inner.routes) if inner is not None else (route,)


@lru_cache(maxsize=8)
def _redis(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


class StoreCollector(Collector):
    """Figures of the database and the broker, read when Prometheus scrapes."""

    def __init__(self, settings: CoreSettings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "captionq_dependency_up", "Whether the dependency answered this scrape",
            labels=["dependency"],
        )  # fmt: skip
        try:
            yield from self._broker()
            up.add_metric(["redis"], 1)
        except redis.RedisError as exc:
            log.warning("metrics: Redis away: %s", exc)
            up.add_metric(["redis"], 0)
        try:
            yield from self._store()
            up.add_metric(["database"], 1)
        except Exception as exc:  # the database away: the other figures still go out
            log.warning("metrics: database away: %s", exc)
            up.add_metric(["database"], 0)
        yield up

    def _broker(self) -> Iterator[Metric]:
        client = _redis(self.settings.redis_url)
        depth = GaugeMetricFamily(
            "captionq_queue_depth", "Messages waiting in a queue, per priority step (0 first)",
            labels=["queue", "step"],
        )  # fmt: skip
        for row in queues.depths(client):
            depth.add_metric([row.queue, str(row.step)], row.waiting)
        held = GaugeMetricFamily(
            "captionq_queue_taken", "Messages workers have taken and not acknowledged "
            "(prefetched, batched or running)", labels=["queue"],
        )  # fmt: skip
        for queue, count in queues.taken(client).items():
            held.add_metric([queue], count)
        alive = GaugeMetricFamily(
            "captionq_workers_alive", "Workers whose heartbeat lives, by pool", labels=["pool"]
        )
        in_flight = GaugeMetricFamily(
            "captionq_workers_in_flight", "Jobs claimed and not finished, by pool, as the "
            "workers' heartbeats say", labels=["pool"],
        )  # fmt: skip
        pools: dict[str, list[int]] = {pool: [0, 0] for pool in heartbeats.POOLS}
        for beat in heartbeats.alive(client):
            counts = pools.setdefault(beat.pool, [0, 0])
            counts[0] += 1
            counts[1] += beat.in_flight
        for pool, (workers, jobs) in pools.items():
            alive.add_metric([pool], workers)
            in_flight.add_metric([pool], jobs)
        yield from (depth, held, alive, in_flight)

    def _store(self) -> Iterator[Metric]:
        with read_scope(self.settings.database_url) as session:
            found = census.take_census(session=session)
        age = GaugeMetricFamily(
            "captionq_queue_oldest_age_seconds",
            "Age of the oldest job waiting for a GPU worker (gpu) or a fetch (fetch), or "
            "of the most overdue callback (io)",
            labels=["queue"],
        )
        for queue, seconds in found.oldest_waiting_s.items():
            age.add_metric([queue], seconds)
        yield age
        yield GaugeMetricFamily(
            "captionq_review_oldest_pending_age_seconds",
            "Age of the oldest variant waiting for a reviewer",
            value=found.oldest_pending_review_s,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "captionq_deliveries_dead", "Callbacks dead-lettered (listed, replayable)",
            value=found.dead_deliveries,
        )
        by_status = GaugeMetricFamily("captionq_jobs", "Jobs stored, by state", labels=["status"])
        # Every state, none left out at 0: a query over a state (the autoscaler's over
        # queued and running) then answers 0, not nothing.
        states = [str(state) for state in JobStatus]
        for status in states + [s for s in found.jobs if s not in states]:
            by_status.add_metric([status], found.jobs.get(status, 0))
        yield by_status


_collector: StoreCollector | None = None


def watch(settings: CoreSettings) -> None:
    """Read the store and broker of ``settings`` at each scrape."""
    global _collector
    if _collector is None:
        _collector = StoreCollector(settings)
        REGISTRY.register(_collector)
    _collector.settings = settings


@router.get("/metrics")
def metrics(request: Request) -> Response:
    watch(request.app.state.settings)
    body = generate_latest(REGISTRY) + generate_latest(DECISIONS)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
