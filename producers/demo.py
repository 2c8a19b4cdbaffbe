"""``captionq demo``: the whole path on this machine, offline.

Redis (REDIS_URL, else localhost:6379, else a redis-server it starts), a SQLite
database (DATABASE_URL, else a fresh file), a real Celery worker process, the
ingestion API on a loopback port with the demo tenant's key, the HTTP SDK, and a
local receiver that verifies each signed callback.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

from PIL import Image, ImageDraw
from rich.console import Console
from rich.table import Table
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from producers.api import create_app
from producers.api.serve import Served, free_port
from producers.client import CaptionClient
from producers.redis_server import RedisServer, redis_answers
from schemas.settings import ApiSettings, CoreSettings
from schemas.store.sessions import migrate

# Runs in a child process: the producers never import the worker's model code.
_BUILD_TINY = (
    "import sys; from pathlib import Path; "
    "from worker.models.tiny import build_tiny_blip; build_tiny_blip(Path(sys.argv[1]))"
)
STYLES = ["playful", "luxury", "promotional"]
PLATFORMS = ["instagram", "x"]


def sample_images(n: int) -> list[bytes]:
    """Simple scenes drawn with Pillow: a sun, a sea, a house, a tree, in varying colours."""
    out = []
    for i in range(n):
        img = Image.new("RGB", (320, 240), (135 - 10 * i % 100, 206, 235))
        draw = ImageDraw.Draw(img)
        draw.rectangle((0, 160, 320, 240), fill=(30 + 20 * i % 200, 144, 255 - 15 * i % 200))
        draw.ellipse((230, 20, 290, 80), fill=(255, 215 - 5 * i % 100, 0))
        draw.rectangle((40 + 8 * i, 100, 120 + 8 * i, 170), fill=(178, 34, 34))
        draw.polygon([(30 + 8 * i, 100), (80 + 8 * i, 60), (130 + 8 * i, 100)], fill=(90, 40, 20))
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def _redis(stack: ExitStack, console: Console) -> str:
    if os.environ.get("REDIS_URL"):
        console.print(f"Redis: {os.environ['REDIS_URL']} (from REDIS_URL)")
        return os.environ["REDIS_URL"]
    local = "redis://127.0.0.1:6379/0"
    if redis_answers(local):
        console.print(f"Redis: {local} (answering on localhost)")
        return local
    server = RedisServer.start()
    stack.callback(server.stop)
    console.print(f"Redis: {server.url} (started an embedded redis-server for this demo)")
    return server.url


def _model(model: str | None, workdir: Path, console: Console) -> str:
    if model:
        console.print(f"Model: {model}")
        return model
    folder = workdir / "tiny-blip"
    subprocess.run(
        [sys.executable, "-c", _BUILD_TINY, str(folder)],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    console.print(
        f"Model: a tiny randomly initialised BLIP built offline at {folder}\n"
        "       [yellow]its weights are random, so its words are noise[/yellow];"
        " pass --model Salesforce/blip-image-captioning-base for real captions"
    )
    return str(folder)


def run_demo(*, model: str | None, n_images: int, console: Console, review: bool = False) -> int:
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="captionq-demo-")))
        redis_url = _redis(stack, console)
        database_url = os.environ.get("DATABASE_URL") or f"sqlite:///{workdir / 'demo.db'}"
        console.print(f"Database: {database_url}")
        migrate(database_url)
        settings = CoreSettings(database_url=database_url, redis_url=redis_url, blob_store="db")
        model_id = _model(model, workdir, console)

        tenant_id, secret, key = _tenant(settings)
        receiver = CallbackReceiver(secret=secret)
        stack.callback(receiver.stop)
        console.print(f"Callback receiver: {describe_url(receiver.url)}")
        # Callbacks may reach exactly that receiver, and nothing else on this machine.
        settings = settings.model_copy(update=_reach(receiver))
        api = Served(create_app(ApiSettings(**settings.model_dump())))
        stack.callback(api.stop)
        client = stack.enter_context(CaptionClient(api.url, api_key=key))
        console.print(f"API: {api.url} (docs at {api.url}/docs), tenant demo's key {key[:16]}…")

        worker = _start_worker(settings, model_id, workdir)
        stack.callback(_stop, worker)

        started = time.monotonic()
        job = {"styles": STYLES, "platforms": PLATFORMS, "variants": 1}
        accepted = client.submit_bulk(
            [
                {**job, "image": data, "callback_url": receiver.url, "metadata": {"sample": i}}
                for i, data in enumerate(sample_images(n_images))
            ]
        )
        job_ids = [a.id for a in accepted]
        console.print(f"Submitted {len(job_ids)} jobs; waiting for the worker…")
        jobs = [client.wait(job_id, timeout_s=300) for job_id in job_ids]
        _wait_for(lambda: len(receiver.received) >= len(job_ids), timeout_s=60)
        elapsed = time.monotonic() - started
        _print(console, jobs, receiver)
        ok = all(j.status == "succeeded" for j in jobs) and all(
            r.verified for r in receiver.received
        )
        console.print(
            f"\n{len(jobs)} jobs in {elapsed:.1f} s; "
            f"{sum(r.verified for r in receiver.received)}/{len(job_ids)} callbacks received and "
            "verified with the standardwebhooks library"
        )
        _review_desk(settings, tenant_id, console, receiver, keep_up=review)
        return 0 if ok and len(receiver.received) >= len(job_ids) else 1


def _review_desk(
    settings: CoreSettings,
    tenant_id: str,
    console: Console,
    receiver: CallbackReceiver,
    *,
    keep_up: bool,
) -> None:
    """A reviewer for the demo's tenant; with ``keep_up``, the review desk on the demo's
    data (a ``captionq review`` process) until Ctrl+C."""
    if not keep_up:
        console.print("Review these jobs in the browser: [bold]make demo ARGS=--review[/bold]")
        return
    from schemas.store.reviewers import create_reviewer
    from schemas.store.sessions import session_scope
    from schemas.tables import ReviewerRole, Tenant

    email, password = "reviewer@demo.example", secrets.token_urlsafe(12)
    with session_scope(settings.database_url) as session:
        tenant = session.get(Tenant, tenant_id)
        create_reviewer(session=session, email=email, password=password,
                        role=ReviewerRole.admin, tenants=[tenant] if tenant else [])  # fmt: skip
    port = free_port()
    env = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url,
           "BLOB_STORE": settings.blob_store}  # fmt: skip
    argv = [sys.executable, "-c", "from producers.cli import main; main()", "review", "--port",
            str(port)]  # fmt: skip
    desk = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    console.print(
        f"\n[bold]Review desk[/bold]: http://127.0.0.1:{port}/  e-mail {email}  "
        f"password {password}\nDecisions reach the receiver as signed callbacks. Ctrl+C stops."
    )
    try:
        desk.wait()
    except KeyboardInterrupt:
        decided = [r for r in receiver.received if r.event_type.startswith("caption.")]
        console.print(f"\n{len(decided)} decisions called back, "
                      f"{sum(r.verified for r in decided)} verified")  # fmt: skip
    finally:
        _stop(desk)


def _tenant(settings: CoreSettings) -> tuple[str, str, str]:
    """The demo tenant (made here, as an operator would with ``captionq tenant create``):
    its id, its webhook secret and a new API key."""
    from schemas.store.sessions import session_scope
    from schemas.store.tenants import create_api_key, ensure_tenant, webhook_secret

    with session_scope(settings.database_url) as session:
        tenant = ensure_tenant(session=session, name="demo", key=settings.webhook_secrets_key)
        key = create_api_key(session=session, tenant=tenant)[1]
        return tenant.id, webhook_secret(tenant, key=settings.webhook_secrets_key), key


def _reach(receiver: CallbackReceiver) -> dict[str, list[int | str]]:
    port = urlparse(receiver.url).port
    assert port is not None
    return {"url_allow_cidrs": ["127.0.0.1/32"], "url_allowed_ports": [port]}


def _start_worker(settings: CoreSettings, model_id: str, workdir: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "BLOB_STORE": settings.blob_store,
        "CAPTIONER_MODEL": model_id,
        "URL_ALLOW_CIDRS": json.dumps(settings.url_allow_cidrs),
        "URL_ALLOWED_PORTS": json.dumps(settings.url_allowed_ports),
    }
    with (workdir / "worker.log").open("wb") as log:
        return subprocess.Popen(
            worker_command("captionq.gpu,captionq.io,captionq.fetch"),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()


def _wait_for(predicate, *, timeout_s: float) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.1)


def _print(console: Console, jobs, receiver: CallbackReceiver) -> None:  # type: ignore[no-untyped-def]
    by_job = {r.job_id: r for r in receiver.received}
    for job in jobs:
        console.rule(f"[bold]{job.id}[/bold] {job.status}")
        if job.error:
            console.print(f"[red]{job.error.code}[/red]: {job.error.message}")
        console.print(f"caption: {job.caption!r}   model: {job.model_id}")
        table = Table("style", "platform", "variant", "score", "review")
        for v in job.variants:
            table.add_row(v.style, v.platform, v.text, f"{v.quality_score:.2f}", v.review_state)
        console.print(table)
        hook = by_job.get(job.id)
        if hook:
            mark = (
                "[green]signature verified[/green]" if hook.verified else "[red]BAD SIGNATURE[/red]"
            )
            console.print(f"callback: {hook.event_type} webhook-id={hook.webhook_id} {mark}")
        else:
            console.print("callback: [red]not received[/red]")


# Local services the demo runs on: Redis (found, or started by
# ``producers.redis_server``, as the tests and benchmarks start theirs) and a receiver
# that verifies the callbacks.


def worker_command(queues: str, *, name: str | None = None) -> list[str]:
    """The ``celery worker`` command line of the demo's worker: one solo process (a GPU
    worker's shape) on ``queues``; ``captionq worker`` is the production entry point."""
    argv = [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", "solo",
            "-Q", queues, "-l", "INFO", "--without-gossip", "--without-mingle",
            "--without-heartbeat"]  # fmt: skip
    return [*argv, "-n", name] if name else argv


def verified(secret: str, body: bytes, headers: dict[str, str]) -> bool:
    """Whether a callback's Standard Webhooks signature verifies with ``secret``."""
    try:
        Webhook(secret).verify(body, headers)
    except WebhookVerificationError:
        return False
    return True


@dataclass
class Received:
    webhook_id: str
    event_type: str
    job_id: str
    verified: bool
    body: dict[str, object]


@dataclass
class CallbackReceiver:
    """An HTTP endpoint on loopback that verifies Standard Webhooks signatures."""

    secret: str
    received: list[Received] = field(default_factory=list)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keeps the sender's connection alive

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                ok = verified(receiver.secret, body, dict(self.headers))
                event = json.loads(body)
                receiver.received.append(
                    Received(
                        webhook_id=self.headers.get("webhook-id", ""),
                        event_type=event.get("type", ""),
                        job_id=event.get("data", {}).get("id", ""),
                        verified=ok,
                        body=event,
                    )
                )
                self.send_response(204 if ok else 401)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}/hooks/captionq"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def describe_url(url: str) -> str:
    parsed = urlparse(url)
    return f"{parsed.scheme}://{parsed.hostname}:{parsed.port}{parsed.path}"
