"""Sentry Crons check-ins for beat's periodic tasks.

The reaper and the outbox dispatcher run every few seconds, under Sentry Crons'
one-minute floor (the Celery integration skips such schedules): each checks in as a
heartbeat monitor, at most once a minute, with a one-minute interval and a margin, so
Sentry says when beat or the IO pool has stopped. Hourly tasks (retention) are
monitored by the Celery integration's own beat monitoring. Without ``SENTRY_DSN``
nothing is sent.
"""

from __future__ import annotations

import threading
import time

import sentry_sdk
from sentry_sdk.crons import capture_checkin
from sentry_sdk.crons.consts import MonitorStatus

EVERY_S = 60.0
_last: dict[str, float] = {}
_lock = threading.Lock()


def check_in(slug: str) -> None:
    """Tell Sentry Crons that ``slug`` ran (at most once a minute per process)."""
    if sentry_sdk.get_client().dsn is None:
        return
    now = time.monotonic()
    with _lock:
        if now - _last.get(slug, -EVERY_S) < EVERY_S:
            return
        _last[slug] = now
    capture_checkin(
        monitor_slug=slug,
        status=MonitorStatus.OK,
        monitor_config={
            "schedule": {"type": "interval", "value": 1, "unit": "minute"},
            "checkin_margin": 5,
            "max_runtime": 10,
        },
    )
