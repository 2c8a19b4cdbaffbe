"""Settings: with ``schemas.model_settings``, the only modules that read the environment.

One class per deployable. Names carry their units. The embedded defaults
(SQLite file, Redis on localhost, a generated secrets key file) make a development
machine work with no configuration; with ``CAPTIONQ_ENV=production`` every process
refuses to start unless ``DATABASE_URL``, ``REDIS_URL`` and ``WEBHOOK_SECRETS_KEY`` are
set explicitly, naming those that are missing.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.checks.urls import Ports, parse_ports
from schemas.messages import CAPTION_MESSAGE_JOBS, CAPTION_READ_MAX, DELIVER_BATCH_MAX
from schemas.model_settings import ModelSettings

DEFAULT_HOME = Path.home() / ".local" / "share" / "captionq"
# What a production process must be given: no embedded default is right there.
PRODUCTION_REQUIRED = ("database_url", "redis_url", "webhook_secrets_key")


class CoreSettings(BaseSettings):
    """What every side needs: where the database, the broker and the blobs are."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    database_url: str = Field(
        default=f"sqlite:///{DEFAULT_HOME / 'captionq.db'}",
        description="SQLAlchemy URL; sqlite:///path (embedded) or postgresql+psycopg://...",
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Celery broker")
    blob_store: str = Field(
        default="db",
        description="Where submitted image bytes live: 'db' (in the database) or file:///dir",
    )
    caption_message_jobs: int = Field(
        default=CAPTION_MESSAGE_JOBS,
        ge=1,
        le=CAPTION_READ_MAX,
        description="Jobs published together (a bulk submission's, a batch's retries) per "
        "caption message. 1 publishes message version 1, which GPU workers of a release "
        "before version 2 also read: set it while such workers run (an upgrade's roll, a "
        "roll back). At most the GPU workers' BATCH_SIZE: a larger message runs as "
        "consecutive batches in one worker",
    )
    image_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    image_max_pixels: int = Field(default=40_000_000, ge=1)
    sentry_dsn: str | None = None
    url_allow_cidrs: list[str] = Field(
        default_factory=list,
        description="Networks that image and callback URLs may reach although not public, "
        'as JSON: ["127.0.0.0/8"] (tests, private deployments)',
    )
    url_allowed_ports: list[int | str] = Field(
        default_factory=lambda: [80, 443],
        description="Ports that image and callback URLs may use (one rule for both), as "
        'JSON: ports and "low-high" ranges, e.g. [80, 443, "8000-8100"]',
    )

    @field_validator("url_allowed_ports")
    @classmethod
    def _ports(cls, value: list[int | str]) -> list[int | str]:
        parse_ports(value)  # refuses what is neither a port nor a range, at start
        return value

    @property
    def allowed_ports(self) -> Ports:
        """``url_allowed_ports`` as the URL checks take it."""
        return parse_ports(self.url_allowed_ports)

    fair_share_steps: list[int] = Field(
        default_factory=lambda: [32, 128, 512, 2048],
        description="Jobs in flight at which a tenant's new jobs drop one more priority "
        "step, so that one tenant's flood does not starve the others",
    )
    webhook_secrets_key: str | None = Field(
        default=None,
        description="Fernet key (urlsafe base64, 32 bytes) that encrypts webhook endpoint "
        "secrets at rest. Set it in production (the same on every API and worker host); "
        "unset, a key file is created next to the default home (one-host development).",
    )
    webhook_rotation_grace_s: float = Field(
        default=86400.0,
        ge=0,
        description="After a secret rotation, how long the old secret also signs callbacks",
    )
    captionq_env: Literal["development", "production"] = Field(
        default="development",
        description="production: refuse to start on the embedded defaults of DATABASE_URL, "
        "REDIS_URL and WEBHOOK_SECRETS_KEY",
    )

    log_format: Literal["auto", "json", "text"] = Field(
        default="auto",
        description="Log lines: json (one object per line, README 'Operations'), text, or "
        "auto: text on a terminal, json elsewhere",
    )

    @model_validator(mode="after")
    def _production_is_explicit(self) -> CoreSettings:
        if self.captionq_env != "production":
            return self
        missing = [name.upper() for name in PRODUCTION_REQUIRED if name not in self.model_fields_set
                   or not getattr(self, name)]  # fmt: skip
        if missing:
            raise ValueError(
                f"CAPTIONQ_ENV=production needs {', '.join(missing)} set explicitly "
                "(the embedded defaults are for development and the demo)"
            )
        return self


class ApiSettings(CoreSettings):
    """The ingestion API (and the in-cluster producer, which admits jobs as it does)."""

    api_host: str = Field(default="127.0.0.1", description="Where `captionq api` listens")
    api_port: int = Field(default=8000, ge=1, le=65535)
    bulk_max_jobs: int = Field(
        default=500, ge=1, description="Jobs in one bulk request, at most (the OpenAPI says it)"
    )
    rate_limit_jobs_per_s: float = Field(
        default=50.0, gt=0, description="Sustained submissions per second, per tenant"
    )
    rate_limit_burst: int = Field(default=1000, ge=1, description="Submissions allowed at once")
    max_in_flight: int = Field(
        default=20_000, ge=1, description="Jobs per tenant not yet finished, at most"
    )
    request_max_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1, description="Request bodies over this are 413"
    )
    public_base_url: str = Field(
        default="http://127.0.0.1:8000",
        description="How clients reach this API (behind a proxy, its public https URL): "
        "the base of each accepted job's status_url and Location header",
    )


class WorkerSettings(ModelSettings, CoreSettings):
    """A caption or delivery worker (its models' settings: ``ModelSettings``)."""

    callback_timeout_s: float = Field(
        default=15.0, gt=0, description="Whole-attempt deadline of one callback POST"
    )
    callback_retry_schedule_s: list[float] = Field(
        default_factory=lambda: [0, 5, 300, 1800, 7200, 18000, 36000, 36000],
        min_length=1,
        description="Delay before attempt 1, 2, ... of a callback (as JSON); its length is the "
        "number of attempts, after the last the delivery is dead (listed, replayable)",
    )
    callback_max_attempts: int | None = Field(
        default=None, ge=1, description="Cut the schedule short (None: its whole length)"
    )
    callback_batch_max: int = Field(
        default=32,
        ge=1,
        le=DELIVER_BATCH_MAX,
        description="Callbacks to one URL sent by one deliver task, over one connection; an "
        "IO worker gathers deliver messages until it holds this many callbacks",
    )
    callback_batch_interval_s: float = Field(
        default=0.1,
        gt=0,
        description="The longest an IO worker gathers deliver messages before it sends what "
        "it holds (what a callback may wait at low load)",
    )
    delivery_dispatch_interval_s: float = Field(
        default=5.0, gt=0, description="How often beat sends the callbacks that are due"
    )
    delivery_dispatch_limit: int = Field(default=500, ge=1, description="Per dispatch tick")
    delivery_lock_s: float = Field(
        default=300.0,
        gt=0,
        description="A dispatched callback is reserved this long for the worker that sends "
        "it; past it (worker killed, message lost) beat dispatches it again",
    )
    job_lease_s: float = Field(
        default=120.0,
        gt=0,
        description="A running job whose worker has not renewed its lease for this long is "
        "re-published by the reaper (the worker renews every third of it)",
    )
    job_received_grace_s: float = Field(
        default=30.0, gt=0, description="A job still 'received' after this is published again"
    )
    job_queued_stale_s: float = Field(
        default=120.0,
        gt=0,
        description="A queued job's message held unacknowledged this long by a worker that "
        "never claimed it (killed with a full batch buffer) is put back on the queue; a job "
        "waiting this long with no message in the broker at all is published again",
    )
    reaper_interval_s: float = Field(default=15.0, gt=0, description="Beat period of the reaper")
    batch_time_limit_s: float = Field(
        default=600.0,
        gt=0,
        description="A batch running longer is abandoned: its jobs are re-published and the "
        "worker process exits so that its supervisor starts a fresh one",
    )
    shutdown_grace_s: float = Field(
        default=60.0,
        gt=0,
        description="After SIGTERM, how long the current batch may take before its jobs are "
        "handed back and the worker exits",
    )
    fetch_timeout_s: float = Field(
        default=20.0, gt=0, description="Whole deadline of fetching one image URL"
    )
    fetch_max_attempts: int = Field(
        default=3,
        ge=1,
        description="Fetches of one image URL (timeouts, 408/429/5xx, network errors); past "
        "it the job fails fetch_attempts_exhausted. Separate from JOB_MAX_ATTEMPTS",
    )
    fetch_lease_s: float = Field(
        default=60.0,
        gt=0,
        description="A fetch's lease: past it (its fetch worker killed) the reaper publishes the "
        "fetch again. Must exceed FETCH_TIMEOUT_S",
    )
    fetch_tenant_max: int = Field(
        default=16, ge=1, description="One tenant's fetches in flight across every fetch worker"
    )
    fetch_host_max: int = Field(
        default=8, ge=1, description="Fetches in flight to one image host across every fetch worker"
    )
    batch_size: int = Field(
        default=8, ge=1, le=CAPTION_READ_MAX, description="Jobs per model batch"
    )
    batch_interval_s: float = Field(
        default=0.05, gt=0, description="Longest wait to fill a batch before running it"
    )
    pipeline_batches: int = Field(
        default=3,
        ge=1,
        le=4,
        description="Batches a GPU worker holds at once, one per thread of its pool: the "
        "next is prepared while one generates and the last is stored; 1 runs them serially",
    )
    retention_days: float | None = Field(
        default=None,
        gt=0,
        description="Purge jobs (images, variants, deliveries) older than this, hourly; "
        "unset keeps everything",
    )
    job_max_attempts: int = Field(
        default=5, ge=1, description="Claims of one job; past it the job fails attempts_exhausted"
    )
    metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port on which this worker or beat process serves its Prometheus metrics "
        "(/metrics); unset, none is served",
    )
    prometheus_multiproc_dir: str | None = Field(
        default=None,
        description="An empty folder of this worker's own where each process of a prefork "
        "worker writes its metrics and the parent serves their sum on METRICS_PORT "
        "(prometheus-client's multiprocess mode; read by prometheus-client too); unset for "
        "the solo and threads pools",
    )

    @field_validator("prometheus_multiproc_dir")
    @classmethod
    def _multiproc_dir(cls, value: str | None) -> str | None:
        if value is not None and not Path(value).is_dir():
            raise ValueError(f"PROMETHEUS_MULTIPROC_DIR {value!r} is not a folder")
        return value

    heartbeat_interval_s: float = Field(
        default=10.0,
        gt=0,
        description="How often a worker refreshes its heartbeat (a Redis key that lives three "
        "intervals, and the heartbeat file); status and the no-worker alert read it",
    )
    heartbeat_file: str | None = Field(
        default=None,
        description="A file the worker touches with each heartbeat once its models are "
        "loaded and its consumer runs (the Kubernetes liveness probe reads its age)",
    )

    @model_validator(mode="after")
    def _fetch_lease_outlasts_the_fetch(self) -> WorkerSettings:
        if self.fetch_lease_s <= self.fetch_timeout_s:
            raise ValueError(
                f"FETCH_LEASE_S ({self.fetch_lease_s}) must exceed FETCH_TIMEOUT_S "
                f"({self.fetch_timeout_s}), or a slow fetch would be published twice"
            )
        return self

    @property
    def io_prefetch_multiplier(self) -> int:
        """Deliver messages an IO worker holds per thread: a GPU batch publishes one of
        ``BATCH_SIZE`` callbacks as a rule, and gathering fills ``CALLBACK_BATCH_MAX``
        from several, so that each thread has a whole batch to send."""
        return max(1, math.ceil(self.callback_batch_max / self.batch_size))

    @property
    def callback_schedule_s(self) -> list[float]:
        """The retry schedule, cut to ``callback_max_attempts`` when that is set."""
        schedule = list(self.callback_retry_schedule_s)
        if self.callback_max_attempts is not None:
            schedule = (schedule + schedule[-1:] * self.callback_max_attempts)[
                : self.callback_max_attempts
            ]
        return schedule


class ClientSettings(BaseSettings):
    """Where the command line's API calls go (``captionq submit``, ``captionq job``): the
    API's URL and a key. Needs no database or Redis."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", frozen=True)

    api_url: str = Field(default="http://127.0.0.1:8000", description="The ingestion API")
    api_key: str | None = Field(
        default=None, description="An API key (cq_...); unset, the key saved for --tenant"
    )
    api_keys_file: Path = Field(
        default=DEFAULT_HOME / "api-keys.json",
        description="Keys saved by `captionq tenant key NAME --save`, one per tenant",
    )


@lru_cache
def client_settings() -> ClientSettings:
    return ClientSettings()


@lru_cache
def core_settings() -> CoreSettings:
    return CoreSettings()


@lru_cache
def api_settings() -> ApiSettings:
    return ApiSettings()


@lru_cache
def worker_settings() -> WorkerSettings:
    return WorkerSettings()


class ReviewSettings(CoreSettings):
    """The review desk (``captionq review``): the content team's web page."""

    review_host: str = "127.0.0.1"
    review_port: int = 8100
    review_session_ttl_s: float = Field(
        default=12 * 3600.0, gt=0, description="A sign-in lasts this long (a working day)"
    )
    review_cookie_secure: bool | None = Field(
        default=None,
        description="Mark the session cookie Secure; unset, it is Secure whenever the page "
        "was asked for over https (set true behind a proxy that terminates TLS)",
    )
    review_login_max_failures: int = Field(
        default=5, ge=1, description="Wrong passwords in a row before an account waits"
    )
    review_login_lockout_s: float = Field(
        default=300.0, gt=0, description="How long an account waits after too many failures"
    )
    review_login_ip_failures: int = Field(
        default=20, ge=1, description="Failed sign-ins per client address per lockout window"
    )
    review_page_size: int = Field(default=20, ge=1, le=200, description="Jobs per queue page")
    review_thumbnail_px: int = Field(default=640, ge=32, le=2048)


@lru_cache
def review_settings() -> ReviewSettings:
    return ReviewSettings()
