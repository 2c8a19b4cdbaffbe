"""Commands that run captionq's processes (API, worker, demo) or set up its database."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from producers.cli.errors import fail
from producers.cli.output import console, group
from schemas.errors import ErrorCode
from schemas.names import QUEUE_FETCH, QUEUE_GPU, QUEUE_IO
from schemas.settings import worker_settings

QUEUES = {"gpu": QUEUE_GPU, "io": QUEUE_IO, "fetch": QUEUE_FETCH}
# A GPU worker's threads spend minutes inside their batches: Celery's heartbeats, gossip
# and mingle would only log clock drift and missed heartbeats there.
QUIET_WORKER = ("--without-heartbeat", "--without-mingle", "--without-gossip")


def worker_argv(queues: str, concurrency: int, extra: list[str]) -> list[str]:
    """The ``celery worker`` command line of ``captionq worker``.

    A node is named for its queues on this host (``gpu@host``, ``fetch@host``) unless
    ``-n``/``--hostname`` is given, so ``celery inspect ping`` sees every node."""
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in wanted if q not in QUEUES]
    if unknown or not wanted:
        fail(f"unknown queue(s) {unknown}; use gpu, io, fetch, or a list of them such as "
             "gpu,io,fetch", code=ErrorCode.invalid_request)  # fmt: skip
    gpu = "gpu" in wanted
    # A GPU worker's threads are PIPELINE_BATCHES, and its prefetch fills their batches
    # (worker.app sets both). An IO worker gathers deliver messages into batches
    # (worker.gather): it holds enough of them to give each thread a batch. Threads that
    # fetch take one message each at a time: the rest wait on the broker, in priority
    # order, for whichever worker is free (so does a worker of both io and fetch).
    prefetch = worker_settings().io_prefetch_multiplier if wanted == ["io"] else 1
    pool = (
        ["--pool", "threads", *QUIET_WORKER]
        if gpu
        else ["--pool", "threads", "-c", str(concurrency), "--prefetch-multiplier",
              str(prefetch)]  # fmt: skip
    )
    named = any(a in ("-n", "--hostname") or a.startswith("--hostname=") for a in extra)
    name = [] if named else ["-n", f"{'-'.join(wanted)}@%h"]
    queue_names = ",".join(QUEUES[q] for q in wanted)
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.app",
        "worker",
        "-l",
        "INFO",
        "-Q",
        queue_names,
        *pool,
        *name,
        *extra,
    ]


def worker(
    ctx: typer.Context,
    queues: Annotated[
        str, typer.Option(help="gpu (captions), io (callbacks, beat's ticks), fetch (image "
                          "URLs), or a list: gpu,io,fetch")  # fmt: skip
    ] = "gpu,io,fetch",
    concurrency: Annotated[
        int, typer.Option(min=1, help="Threads of a worker without the gpu queue")
    ] = 1,
) -> None:
    """Run a Celery worker: on the gpu queue one process per GPU with PIPELINE_BATCHES
    threads (pipelined batches); io and fetch use threads (--concurrency). In production
    each queue has a pool of its own. Other options go to celery worker."""
    argv = worker_argv(queues, concurrency, list(ctx.args))
    os.execv(sys.executable, argv)


def api(
    host: Annotated[str | None, typer.Option(help="Default: API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: API_PORT")] = None,
) -> None:
    """Serve the HTTP ingestion API (OpenAPI at /openapi.json, docs at /docs)."""
    import uvicorn
    from uvicorn.config import LOGGING_CONFIG

    from producers.api import create_app
    from schemas.logs import uvicorn_config
    from schemas.settings import api_settings

    settings = api_settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_config=uvicorn_config(settings.log_format) or LOGGING_CONFIG,
    )


def demo(
    model: Annotated[
        str | None, typer.Option(help="Hub id or local folder (default: a tiny random BLIP)")
    ] = None,
    images: Annotated[int, typer.Option(min=1, max=32, help="Sample images to submit")] = 4,
    review: Annotated[
        bool, typer.Option("--review", help="Then keep the review desk up on the demo's data")
    ] = False,
) -> None:
    """Run the whole path offline: Redis, a worker, the database, signed callbacks."""
    from producers.demo import run_demo

    raise typer.Exit(run_demo(model=model, n_images=images, console=console, review=review))


db_app = group("The database schema (Alembic migrations).")


@db_app.command("upgrade")
def db_upgrade(
    revision: Annotated[str, typer.Argument(help="Target revision")] = "head",
) -> None:
    """Apply the migrations to DATABASE_URL."""
    from schemas.settings import core_settings
    from schemas.store.sessions import migrate

    migrate(core_settings().database_url, revision)
    console.print(f"database at {revision}")


def register(app: typer.Typer) -> None:
    extra = {"allow_extra_args": True, "ignore_unknown_options": True}
    app.command(context_settings=extra)(worker)
    app.command()(api)
    app.command()(demo)
    app.add_typer(db_app, name="db")
