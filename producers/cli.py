"""The ``captionq`` command line."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer
from rich.console import Console

from producers.review_cli import app as review_app
from producers.webhooks_cli import app as webhooks_app
from schemas.errors import ErrorCode
from schemas.names import PRIORITY_DEFAULT, QUEUE_GPU, QUEUE_IO

app = typer.Typer(help="captionq: images in, captions and ad copy out.", no_args_is_help=True)
tenant_app = typer.Typer(help="Tenants and their API keys.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema (Alembic migrations).", no_args_is_help=True)
app.add_typer(tenant_app, name="tenant")
app.add_typer(db_app, name="db")
app.add_typer(webhooks_app, name="webhooks")
app.add_typer(review_app, name="review")
console = Console()


@app.command()
def submit(
    image: Annotated[str, typer.Argument(help="Image file or http(s) URL")],
    style: Annotated[list[str], typer.Option("--style", "-s", help="Style (repeatable)")],
    platform: Annotated[list[str], typer.Option("--platform", "-p", help="Platform (repeatable)")],
    variants: Annotated[int, typer.Option(help="Variants per style and platform")] = 3,
    tenant: Annotated[str, typer.Option(help="Tenant name")] = "default",
    callback_url: Annotated[str | None, typer.Option(help="Where to POST the result")] = None,
    idempotency_key: Annotated[str | None, typer.Option()] = None,
    priority: Annotated[int, typer.Option(min=0, max=9)] = PRIORITY_DEFAULT,
    brand_voice: Annotated[str | None, typer.Option(help="Up to 200 characters")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the result (0: don't)")] = 0,
) -> None:
    """Submit one job and print its id (and, with --wait, its result)."""
    from producers.client import CaptionClient
    from schemas.errors import RequestError

    client = CaptionClient(tenant=tenant)
    try:
        job_id = client.submit(
            image=image,
            styles=style,
            platforms=platform,
            variants=variants,
            callback_url=callback_url,
            idempotency_key=idempotency_key,
            priority=priority,
            brand_voice=brand_voice,
        )
    except RequestError as exc:
        console.print(f"[red]refused[/red] {exc.code.value}: {exc.message}")
        raise typer.Exit(2) from exc
    except FileNotFoundError as exc:
        console.print(f"[red]refused[/red] image_missing: no such file {image}")
        raise typer.Exit(2) from exc
    if wait <= 0:
        typer.echo(job_id)
        return
    typer.echo(client.wait(job_id, timeout_s=wait).model_dump_json(indent=2))


@app.command()
def job(job_id: str, tenant: Annotated[str, typer.Option(help="Tenant name")] = "default") -> None:
    """Print a job as JSON."""
    from producers.client import CaptionClient
    from schemas.errors import RequestError

    try:
        typer.echo(CaptionClient(tenant=tenant).get(job_id).model_dump_json(indent=2))
    except RequestError as exc:
        console.print(f"[red]{exc.code.value}[/red]: {exc.message}")
        raise typer.Exit(1) from exc


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(
    ctx: typer.Context,
    queues: Annotated[str, typer.Option(help="gpu, io, or gpu,io")] = "gpu,io",
    concurrency: Annotated[int, typer.Option(help="Processes (gpu) or threads (io)")] = 1,
) -> None:
    """Run a Celery worker: gpu queues use the solo pool (one process per GPU), io uses threads.
    Extra options go to ``celery worker``."""
    names = {"gpu": QUEUE_GPU, "io": QUEUE_IO}
    wanted = [q.strip() for q in queues.split(",") if q.strip()]
    unknown = [q for q in wanted if q not in names]
    if unknown or not wanted:
        raise typer.BadParameter(f"unknown queue(s) {unknown}; use gpu, io or gpu,io")
    pool = ["--pool", "solo"] if "gpu" in wanted else ["--pool", "threads", "-c", str(concurrency)]
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.app",
        "worker",
        "-l",
        "INFO",
        "-Q",
        ",".join(names[q] for q in wanted),
        *pool,
        *ctx.args,
    ]
    os.execv(sys.executable, argv)


@app.command()
def api(
    host: Annotated[str | None, typer.Option()] = None,
    port: Annotated[int | None, typer.Option()] = None,
) -> None:
    """Serve the HTTP ingestion API (OpenAPI at /docs and /openapi.json)."""
    import uvicorn

    from producers.api import create_app
    from schemas.settings import api_settings

    settings = api_settings()
    uvicorn.run(
        create_app(settings), host=host or settings.api_host, port=port or settings.api_port
    )


@app.command()
def demo(
    model: Annotated[
        str | None, typer.Option(help="Hub id or local folder (default: a tiny random BLIP)")
    ] = None,
    images: Annotated[int, typer.Option(min=1, max=32, help="Sample images to submit")] = 4,
    review: Annotated[
        bool, typer.Option(help="Then keep the review desk up on the demo's data")
    ] = False,
) -> None:
    """Run the whole path offline: Redis, a worker, the database, signed callbacks."""
    from producers.demo import run_demo

    raise typer.Exit(run_demo(model=model, n_images=images, console=console, review=review))


@review_app.callback(invoke_without_command=True)
def review(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Default: REVIEW_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="Default: REVIEW_PORT")] = None,
) -> None:
    """Serve the review desk (``captionq review``), or manage its accounts (``user``)."""
    if ctx.invoked_subcommand is not None:
        return
    import uvicorn

    from review.app import create_app
    from schemas.settings import review_settings

    settings = review_settings()
    host, port = host or settings.review_host, port or settings.review_port
    console.print(f"Review desk on http://{host}:{port}/ (accounts: captionq review user add)")
    uvicorn.run(create_app(settings), host=host, port=port)


@app.command()
def cancel(
    job_id: str, tenant: Annotated[str, typer.Option(help="Tenant name")] = "default"
) -> None:
    """Cancel a job that has not started; it is then never run nor called back as succeeded."""
    from schemas.errors import RequestError
    from schemas.settings import core_settings
    from schemas.store.jobs import cancel_job
    from schemas.store.sessions import session_scope
    from schemas.store.tenants import tenant_by_name

    with session_scope(core_settings().database_url) as session:
        owner = tenant_by_name(session=session, name=tenant)
        try:
            if owner is None:
                raise RequestError(f"no tenant {tenant!r}", code=ErrorCode.not_found, status=404)
            job = cancel_job(session=session, tenant_id=owner.id, job_id=job_id)
        except RequestError as exc:
            console.print(f"[red]{exc.code.value}[/red]: {exc.message}")
            raise typer.Exit(1) from exc
        console.print(f"{job.id} {job.status}")


@app.command()
def delete(
    job_id: str, tenant: Annotated[str, typer.Option(help="Tenant name")] = "default"
) -> None:
    """Delete a job with its image, variants and deliveries."""
    from schemas.settings import core_settings
    from schemas.store.lifecycle import delete_job
    from schemas.store.sessions import session_scope
    from schemas.store.tenants import tenant_by_name

    settings = core_settings()
    with session_scope(settings.database_url) as session:
        owner = tenant_by_name(session=session, name=tenant)
        if owner is None or not delete_job(
            session=session, tenant_id=owner.id, job_id=job_id, store=settings.blob_store
        ):
            console.print(f"[red]not_found[/red]: no job {job_id} for tenant {tenant!r}")
            raise typer.Exit(1)
    console.print(f"deleted {job_id}")


@app.command()
def purge(
    older_than_days: Annotated[float, typer.Option(min=0, help="Delete jobs older than this")],
) -> None:
    """Delete every job (all tenants) created before the cut-off, with what it owns."""
    from datetime import timedelta

    from schemas.settings import core_settings
    from schemas.store.lifecycle import purge_all
    from schemas.tables import utcnow

    settings = core_settings()
    cutoff = utcnow() - timedelta(days=older_than_days)
    total = purge_all(
        database_url=settings.database_url, older_than=cutoff, store=settings.blob_store
    )
    console.print(f"purged {total} jobs created before {cutoff.isoformat()}")


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations to DATABASE_URL."""
    from schemas.settings import core_settings
    from schemas.store.sessions import migrate

    migrate(core_settings().database_url, revision)
    console.print(f"database at {revision}")


@tenant_app.command("create")
def tenant_create(name: str) -> None:
    """Create a tenant; prints its id and webhook secret."""
    from schemas.settings import core_settings
    from schemas.store.sessions import session_scope
    from schemas.store.tenants import create_tenant, webhook_secret

    settings = core_settings()
    with session_scope(settings.database_url) as session:
        tenant = create_tenant(session=session, name=name, key=settings.webhook_secrets_key)
        secret = webhook_secret(tenant, key=settings.webhook_secrets_key)
        typer.echo(json.dumps({"id": tenant.id, "name": tenant.name, "webhook_secret": secret}))


@tenant_app.command("key")
def tenant_key(
    name: str,
    scope: Annotated[
        list[str] | None, typer.Option(help="submit, read, review, admin (default: submit, read)")
    ] = None,
) -> None:
    """Create an API key for a tenant; the key is printed once and stored hashed."""
    from schemas.settings import core_settings
    from schemas.store.sessions import session_scope
    from schemas.store.tenants import create_api_key, tenant_by_name

    with session_scope(core_settings().database_url) as session:
        tenant = tenant_by_name(session=session, name=name)
        if tenant is None:
            console.print(f"[red]not_found[/red]: no tenant {name!r}")
            raise typer.Exit(1)
        try:
            key, plaintext = create_api_key(
                session=session, tenant=tenant, scopes=scope or ("submit", "read")
            )
        except ValueError as exc:
            raise typer.BadParameter(str(exc)) from exc
        typer.echo(json.dumps({"key": plaintext, "prefix": key.prefix, "scopes": key.scopes}))


@tenant_app.command("policy")
def tenant_policy(
    name: str,
    ban: Annotated[list[str] | None, typer.Option(help="Banned term (repeatable)")] = None,
    allow_domain: Annotated[list[str] | None, typer.Option(help="Domain copy may name")] = None,
    allow_handle: Annotated[list[str] | None, typer.Option(help="@handle copy may name")] = None,
    threshold: Annotated[
        float | None, typer.Option(min=0, max=1, help="Auto-approve at or above this score")
    ] = None,
    never: Annotated[bool, typer.Option(help="Never auto-approve (the default)")] = False,
) -> None:
    """Set a tenant's copy policy (replacing the lists given) and auto-approve threshold.

    The threshold is normally fitted by ``captionq eval calibrate``."""
    from schemas.settings import core_settings
    from schemas.store.sessions import session_scope
    from schemas.store.tenants import tenant_by_name

    with session_scope(core_settings().database_url) as session:
        tenant = tenant_by_name(session=session, name=name)
        if tenant is None:
            console.print(f"[red]not_found[/red]: no tenant {name!r}")
            raise typer.Exit(1)
        if ban is not None:
            tenant.banned_terms = sorted(set(ban))
        if allow_domain is not None:
            tenant.allow_domains = sorted(set(allow_domain))
        if allow_handle is not None:
            tenant.allow_handles = sorted(set(allow_handle))
        if never:
            tenant.auto_approve_threshold = None
        elif threshold is not None:
            tenant.auto_approve_threshold = threshold
        session.add(tenant)
        typer.echo(
            json.dumps(
                {
                    "tenant": tenant.name,
                    "banned_terms": tenant.banned_terms,
                    "allow_domains": tenant.allow_domains,
                    "allow_handles": tenant.allow_handles,
                    "auto_approve_threshold": tenant.auto_approve_threshold,
                }
            )
        )


def _mount_eval() -> None:
    try:
        from evaluation.cli import app as eval_app
    except ImportError:  # the evaluation extra is not installed
        return
    app.add_typer(eval_app, name="eval", help="Evaluate caption quality offline.")


def main() -> None:
    _mount_eval()
    app()


if __name__ == "__main__":
    main()
