"""``GET /metrics``: the review desk's own Prometheus metrics (prometheus-client's text
format), scraped like the API's.

Review decisions are events, counted in the process that commits them: here for the
desk, in ``producers.api.metrics`` for the API's ``/v1/review`` routes, in
``worker.metrics`` for the variants a worker auto-approves. Each process has its own
registry and exports ``captionq_review_decisions_total{action}``; Prometheus sums them
(``sum by (action)``).

The definition is not shared through ``schemas``: the contracts package carries no
Prometheus objects (a counter there would be registered in every process that reads a
contract, the CLI's included), and the store counts nothing. So each app keeps its own;
the desk's and the API's live in a registry of their own, served beside the default
one, because one process may host both apps (``captionq demo --review``) or import the
worker too (the tests), and a registry refuses a second metric of one name.
"""

from __future__ import annotations

from collections.abc import Sequence

from fastapi import APIRouter, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    generate_latest,
)

from schemas.store.decisions import Decided
from schemas.tables import DecisionAction

router = APIRouter(include_in_schema=False)

DECISIONS = CollectorRegistry()
REVIEW_DECISIONS = Counter(
    "captionq_review_decisions",
    "Review decisions made at the review desk, by action",
    ["action"],
    registry=DECISIONS,
)
for _action in DecisionAction:
    REVIEW_DECISIONS.labels(action=_action.value)  # every action's series, from zero


def decided(made: Sequence[Decided]) -> None:
    """Count decisions once they are committed."""
    for one in made:
        REVIEW_DECISIONS.labels(action=one.decision.action).inc()


@router.get("/metrics")
def metrics() -> Response:
    body = generate_latest(REGISTRY) + generate_latest(DECISIONS)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
