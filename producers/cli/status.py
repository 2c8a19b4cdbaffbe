"""``captionq status``: one screen of how captionq is doing, read from Redis and the
database (no worker is asked: the solo GPU worker answers no Celery control
messages while a batch runs).

Queues with their waiting and taken messages and the age of the oldest waiting job;
the workers alive by their own heartbeats (``schemas.heartbeats``) and what each holds;
dead deliveries; jobs by state; the reaper's last pass. ``--json`` prints the same as
one object for scripts.
"""

from __future__ import annotations

import json
import time
from typing import Any

import typer
from rich.table import Table

from producers.cli.output import JsonOpt, as_json, console
from schemas import heartbeats, keys, queues
from schemas.tables import JobStatus


def snapshot() -> dict[str, Any]:
    """Everything the screen shows, as plain values."""
    import redis

    from schemas.settings import core_settings
    from schemas.store import census
    from schemas.store.sessions import read_scope

    settings = core_settings()
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    depths = queues.depths(client)
    taken = queues.taken(client)
    now = time.time()
    with read_scope(settings.database_url) as session:
        found = census.take_census(session=session)
    raw = client.get(keys.REAPER_LAST_RUN)
    reaper = json.loads(raw) if raw else None
    if reaper is not None:
        reaper["age_s"] = round(now - reaper["at"], 1)
    return {
        "queues": [
            {
                "queue": queue,
                "waiting": sum(d.waiting for d in depths if d.queue == queue),
                "taken": taken[queue],
                "oldest_age_s": round(found.oldest_waiting_s[queue], 1),
            }
            for queue in queues.QUEUES
        ],
        "workers": [
            {**beat.model_dump(), "seen_s_ago": round(now - beat.at, 1)}
            for beat in heartbeats.alive(client)
        ],
        "dead_deliveries": found.dead_deliveries,
        "jobs": found.jobs,
        "review_oldest_pending_age_s": round(found.oldest_pending_review_s, 1),
        "reaper": reaper,
    }


def status(json_out: JsonOpt = False) -> None:
    """How captionq is doing: queues, workers alive, dead deliveries, the reaper."""
    found = snapshot()
    if json_out:
        typer.echo(as_json(found))
        return
    show(found)


def show(found: dict[str, Any]) -> None:
    table = Table("queue", "waiting", "taken", "oldest waiting", title="queues", box=None)
    for row in found["queues"]:
        table.add_row(row["queue"], str(row["waiting"]), str(row["taken"]),
                      _age(row["oldest_age_s"]))  # fmt: skip
    console.print(table)
    workers = Table("worker", "pool", "model", "holds", "seen", title="workers alive", box=None)
    for beat in found["workers"]:
        workers.add_row(beat["worker"], beat["pool"], beat["model"], str(beat["in_flight"]),
                        f"{beat['seen_s_ago']}s ago")  # fmt: skip
    console.print(workers if found["workers"] else "[red]no worker alive[/red]")
    order = {state.value: at for at, state in enumerate(JobStatus)}  # the lifecycle's order
    by_state = sorted(found["jobs"].items(), key=lambda item: (order.get(item[0], 99), item[0]))
    jobs = ", ".join(f"{state} {count}" for state, count in by_state)
    console.print(f"jobs: {jobs or 'none'}")
    dead = found["dead_deliveries"]
    console.print(f"dead deliveries: [red]{dead}[/red]" if dead else "dead deliveries: 0")
    review_age = _age(found["review_oldest_pending_age_s"])
    console.print(f"oldest variant waiting for review: {review_age}")
    reaper = found["reaper"]
    if reaper is None:
        console.print("reaper: no pass yet (is beat running?)")
    else:
        acted = ", ".join(f"{k} {v}" for k, v in reaper.items() if k not in ("at", "age_s") and v)
        console.print(f"reaper: last pass {_age(reaper['age_s'])} ago; {acted or 'nothing to do'}")


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"
