"""Commands on jobs: submit (one, a folder or a JSONL file), read, cancel, delete, purge."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import typer

from producers.cli.errors import EXIT_BAD_INPUT, fail, stderr
from producers.cli.output import JsonOpt, as_json, console
from producers.cli.remote import ApiKeyOpt, ApiUrlOpt, api_client
from producers.cli.tenants import TenantOpt, require_tenant
from schemas.errors import ErrorCode
from schemas.names import PRIORITY_DEFAULT

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif")
CHUNK = 50  # jobs per submission call in a bulk submit


def submit(
    source: Annotated[
        str, typer.Argument(help="An image file, an http(s) URL, a folder of images, or a .jsonl")
    ],
    style: Annotated[list[str], typer.Option("--style", "-s", help="Style (repeatable)")],
    platform: Annotated[list[str], typer.Option("--platform", "-p", help="Platform (repeatable)")],
    variants: Annotated[int, typer.Option(help="Variants per style and platform")] = 3,
    tenant: TenantOpt = "default",
    callback_url: Annotated[str | None, typer.Option(help="Where to POST the result")] = None,
    idempotency_key: Annotated[str | None, typer.Option(help="One submission, once")] = None,
    priority: Annotated[
        int, typer.Option(min=0, max=9, help="9 is the most urgent")
    ] = PRIORITY_DEFAULT,
    brand_voice: Annotated[str | None, typer.Option(help="Up to 200 characters")] = None,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the result (0: don't)")] = 0,
    json_out: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Submit jobs through the API; prints each job's id and status (--json: the record).

    A folder submits each image in it; a .jsonl file submits one job per line (an object
    with image and any job field; the options fill what a line leaves out)."""
    client = api_client(tenant, api_url, api_key)
    defaults = {
        "styles": style,
        "platforms": platform,
        "variants": variants,
        "callback_url": callback_url,
        "priority": priority,
        "brand_voice": brand_voice,
    }
    path = Path(source)
    if path.is_dir() or path.suffix == ".jsonl":
        if wait or idempotency_key:
            fail("--wait and --idempotency-key apply to one job", code=ErrorCode.invalid_request)
        raise typer.Exit(_submit_bulk(client, _sources(path, defaults), json_out=json_out))
    outcome = client.submit(**{**defaults, "image": source, "idempotency_key": idempotency_key})
    if wait <= 0:
        typer.echo(
            as_json(client.get(outcome).model_dump(mode="json"))
            if json_out
            else f"{outcome.id} {outcome.status.value}"
        )
        return
    job = client.wait(outcome, timeout_s=wait)
    if json_out:
        typer.echo(job.model_dump_json(indent=2))
        return
    typer.echo(f"{job.id} {job.status}")
    if job.error is not None:
        typer.echo(f"  error[{job.error.code}]: {job.error.message}")
    if job.caption is not None:
        typer.echo(f"  caption: {job.caption}")
    for v in job.variants:
        typer.echo(f"  {v.style}/{v.platform} #{v.index} ({v.review_state}): {v.text}")


def _sources(
    path: Path, defaults: Mapping[str, Any]
) -> list[tuple[str, Mapping[str, Any] | Exception]]:
    """(where, job) for each job of a folder or a JSONL file; a bad line is its error."""
    if path.is_dir():
        images = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            fail(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}", code=ErrorCode.image_missing)
        return [(str(p), {**defaults, "image": str(p)}) for p in images]
    return list(_jsonl(path, defaults))


def _jsonl(
    path: Path, defaults: Mapping[str, Any]
) -> Iterator[tuple[str, Mapping[str, Any] | Exception]]:
    from schemas.errors import RequestError

    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{number}"
        try:
            job = json.loads(line)
        except json.JSONDecodeError as exc:
            yield where, RequestError(f"not JSON: {exc.msg}", code=ErrorCode.invalid_request)
            continue
        if not isinstance(job, dict) or not isinstance(job.get("image"), str):
            yield (
                where,
                RequestError("a line is an object with an 'image'", code=ErrorCode.invalid_request),
            )
            continue
        image = job["image"]
        if not image.startswith(("http://", "https://")):
            image = str((path.parent / image).resolve())
        yield where, {**defaults, **job, "image": image}


def _submit_bulk(
    client: Any, sources: Sequence[tuple[str, Mapping[str, Any] | Exception]], *, json_out: bool
) -> int:
    from rich.progress import Progress

    results: list[dict[str, object]] = []
    with Progress(
        console=stderr, transient=True, disable=json_out or not stderr.is_terminal
    ) as progress:
        task = progress.add_task("submitting", total=len(sources))
        for start in range(0, len(sources), CHUNK):
            chunk = sources[start : start + CHUNK]
            jobs = [job for _, job in chunk if not isinstance(job, Exception)]
            outcomes = iter(_submitted(client, jobs))
            for where, job in chunk:
                outcome = job if isinstance(job, Exception) else next(outcomes)
                results.append(_result(where, outcome))
            progress.advance(task, len(chunk))
    refused = [r for r in results if "error" in r]
    if json_out:
        typer.echo(as_json(results))
    else:
        for r in results:
            if "error" in r:
                error: dict[str, str] = r["error"]  # type: ignore[assignment]
                stderr.print(
                    f"{r['source']} error[{error['code']}]: {error['message']}", markup=False
                )
            else:
                typer.echo(f"{r['id']} {r['status']}  {r['source']}")
        stderr.print(
            f"submitted {len(results) - len(refused)}, refused {len(refused)}", markup=False
        )
    return EXIT_BAD_INPUT if refused else 0


def _submitted(client: Any, jobs: Sequence[Mapping[str, Any]]) -> list[Any]:
    """One bulk request for readable jobs; a file that cannot be read is refused here, on
    its own, with ``image_missing``."""
    from schemas.errors import RequestError

    readable: list[Mapping[str, Any]] = []
    outcomes: list[Any] = []
    for job in jobs:
        image = job["image"]
        if image.startswith(("http://", "https://")) or Path(image).is_file():
            readable.append(job)
            outcomes.append(None)
        else:
            outcomes.append(RequestError(f"no such file: {image}", code=ErrorCode.image_missing))
    sent = iter(client.submit_bulk(readable) if readable else [])
    return [next(sent) if o is None else o for o in outcomes]


def _result(where: str, outcome: Any) -> dict[str, object]:
    if isinstance(outcome, Exception):
        code = getattr(outcome, "code", ErrorCode.invalid_request)
        message = getattr(outcome, "message", str(outcome))
        return {"source": where, "error": {"code": str(code), "message": message}}
    return {"source": where, "id": outcome.id, "status": outcome.status.value}


def job(
    job_id: str, tenant: TenantOpt = "default", api_url: ApiUrlOpt = None, api_key: ApiKeyOpt = None
) -> None:
    """Print a job (its caption, variants, or error) as JSON, read through the API."""
    with api_client(tenant, api_url, api_key) as client:
        typer.echo(client.get(job_id).model_dump_json(indent=2))


def cancel(job_id: str, tenant: TenantOpt = "default") -> None:
    """Cancel a job that has not started; it is then never run nor called back as succeeded."""
    from schemas.settings import core_settings
    from schemas.store.jobs import cancel_job
    from schemas.store.sessions import session_scope

    with session_scope(core_settings().database_url) as session:
        owner = require_tenant(tenant, session=session)
        found = cancel_job(session=session, tenant_id=owner.id, job_id=job_id)
        typer.echo(f"{found.id} {found.status}")


def delete(job_id: str, tenant: TenantOpt = "default") -> None:
    """Delete a job with its image, variants and deliveries."""
    from schemas.settings import core_settings
    from schemas.store.lifecycle import delete_job
    from schemas.store.sessions import session_scope

    settings = core_settings()
    with session_scope(settings.database_url) as session:
        owner = require_tenant(tenant, session=session)
        if not delete_job(
            session=session, tenant_id=owner.id, job_id=job_id, store=settings.blob_store
        ):
            fail(f"no job {job_id} for tenant {tenant!r}", code=ErrorCode.not_found)
    typer.echo(f"deleted {job_id}")


def purge(
    older_than_days: Annotated[float, typer.Option(min=0, help="Delete jobs older than this")],
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only say what would go")] = False,
    json_out: JsonOpt = False,
) -> None:
    """Delete every job (all tenants) created before the cut-off, with what it owns.

    Says what it will delete and asks first, unless --yes."""
    from datetime import timedelta

    from schemas.settings import core_settings
    from schemas.store.lifecycle import purge_all, purge_preview
    from schemas.store.sessions import read_scope
    from schemas.tables import utcnow

    settings = core_settings()
    cutoff = utcnow() - timedelta(days=older_than_days)
    with read_scope(settings.database_url) as session:
        preview = purge_preview(session=session, older_than=cutoff)
    summary = {"older_than": cutoff, **preview}
    if dry_run or preview["jobs"] == 0:
        typer.echo(as_json({**summary, "deleted": 0}) if json_out else _describe(summary))
        return
    if not yes:
        if not typer.get_text_stream("stdin").isatty():
            fail(
                "purge asks before it deletes",
                code=ErrorCode.invalid_request,
                hint="add --yes to delete without asking, or --dry-run to look first",
            )
        typer.confirm(_describe(summary) + "; delete them?", abort=True, err=True)
    total = purge_all(
        database_url=settings.database_url, older_than=cutoff, store=settings.blob_store
    )
    typer.echo(
        as_json({**summary, "deleted": total})
        if json_out
        else f"purged {total} jobs created before {cutoff.isoformat()}"
    )


def _describe(summary: Mapping[str, Any]) -> str:
    if not summary["jobs"]:
        return f"no job was created before {summary['older_than'].isoformat()}"
    return (
        f"{summary['jobs']} jobs of {summary['tenants']} tenants created before "
        f"{summary['older_than'].isoformat()} (oldest {summary['oldest'].isoformat()}), "
        f"with {summary['variants']} variants and {summary['deliveries']} deliveries"
    )


def register(app: typer.Typer) -> None:
    for command in (submit, job, cancel, delete, purge):
        app.command()(command)


__all__ = ["console", "register"]
