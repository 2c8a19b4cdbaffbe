"""Celery configuration that producers and workers must agree on (plain settings, no Celery)."""

from __future__ import annotations

from typing import Any

from schemas.names import PRIORITY_MAX


def celery_config(redis_url: str) -> dict[str, Any]:
    return {
        "broker_url": redis_url,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "task_default_priority": PRIORITY_MAX // 2,
        "broker_transport_options": {
            # One Redis list per priority step; served strictly by priority.
            "priority_steps": list(range(PRIORITY_MAX + 1)),
            "sep": ":",
            "queue_order_strategy": "priority",
            "visibility_timeout": 3600,
        },
    }
