"""Settings: the only module that reads the environment.

One class per deployable. Names carry their units. The embedded defaults
(SQLite file, Redis on localhost) make a development machine work with no
configuration; production sets ``DATABASE_URL`` and ``REDIS_URL``.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_HOME = Path.home() / ".local" / "share" / "captionq"


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
    image_max_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    sentry_dsn: str | None = None


class ApiSettings(CoreSettings):
    """The ingestion API and the Python client."""

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    bulk_max_jobs: int = Field(default=500, ge=1)
    request_max_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    public_base_url: str = "http://127.0.0.1:8000"


class WorkerSettings(CoreSettings):
    """A caption or delivery worker."""

    captioner_model: str = Field(
        default="Salesforce/blip-image-captioning-base",
        description="Hub id or local folder of the captioning model",
    )
    captioner_revision: str | None = None
    copywriter_model: str | None = Field(
        default=None, description="Optional instruct LM (hub id or folder) that writes variants"
    )
    copywriter_revision: str | None = None
    model_device: str = Field(default="auto", description="auto, cpu, cuda, cuda:N")
    model_dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    max_new_tokens: int = Field(default=40, ge=1, le=512)
    num_beams: int = Field(default=1, ge=1, le=16)
    callback_timeout_s: float = Field(default=15.0, gt=0)
    callback_max_attempts: int = Field(default=8, ge=1)
    fetch_timeout_s: float = Field(default=20.0, gt=0)
    image_max_pixels: int = Field(default=40_000_000, ge=1)
    url_allow_cidrs: list[str] = Field(
        default_factory=list,
        description="Networks that image and callback URLs may reach although not public, "
        'as JSON: ["127.0.0.0/8"] (tests, private deployments)',
    )
    url_allowed_ports: list[int] = Field(default_factory=lambda: [80, 443])
    batch_size: int = Field(default=8, ge=1, le=256, description="Jobs per model batch")
    batch_interval_s: float = Field(
        default=0.05, gt=0, description="Longest wait to fill a batch before running it"
    )
    job_max_attempts: int = Field(default=5, ge=1)


@lru_cache
def core_settings() -> CoreSettings:
    return CoreSettings()


@lru_cache
def api_settings() -> ApiSettings:
    return ApiSettings()


@lru_cache
def worker_settings() -> WorkerSettings:
    return WorkerSettings()
