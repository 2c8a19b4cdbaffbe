"""Production settings fail fast: with ``CAPTIONQ_ENV=production`` the API and a worker
refuse to start without an explicit ``DATABASE_URL``, ``REDIS_URL`` and
``WEBHOOK_SECRETS_KEY``, naming what is missing; the embedded defaults stay for
development."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from pydantic import ValidationError

from schemas.settings import PRODUCTION_REQUIRED, ApiSettings, CoreSettings, WorkerSettings
from tests.support.processes import REPO
from tests.support.services import SECRETS_KEY

NAMES = [name.upper() for name in PRODUCTION_REQUIRED]


def environment(**values: str) -> dict[str, str]:
    """This process's environment without any captionq setting of those, plus ``values``."""
    kept = {k: v for k, v in os.environ.items() if k not in NAMES and k != "CAPTIONQ_ENV"}
    return {**kept, **values}


@pytest.mark.parametrize("settings_class", [CoreSettings, ApiSettings, WorkerSettings])
def test_production_names_each_missing_setting(
    settings_class: type[CoreSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CAPTIONQ_ENV", "production")
    monkeypatch.setenv("REDIS_URL", "redis://redis:6379/0")
    with pytest.raises(ValidationError, match="needs DATABASE_URL, WEBHOOK_SECRETS_KEY set"):
        settings_class()
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://captionq@db/captionq")
    monkeypatch.setenv("WEBHOOK_SECRETS_KEY", SECRETS_KEY)
    assert settings_class().captionq_env == "production"
    monkeypatch.setenv("WEBHOOK_SECRETS_KEY", "")
    with pytest.raises(ValidationError, match="needs WEBHOOK_SECRETS_KEY set"):
        settings_class()


def test_development_keeps_the_embedded_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*NAMES, "CAPTIONQ_ENV"]:
        monkeypatch.delenv(name, raising=False)
    settings = CoreSettings()
    assert settings.database_url.startswith("sqlite:///")
    assert settings.webhook_secrets_key is None


@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "producers.cli", "api"],
        [sys.executable, "-m", "celery", "-A", "worker.app", "worker", "--pool", "solo"],
    ],
    ids=["api", "worker"],
)
def test_processes_refuse_to_start(argv: list[str]) -> None:
    started = subprocess.run(
        argv,
        cwd=REPO,
        env=environment(CAPTIONQ_ENV="production", REDIS_URL="redis://127.0.0.1:9/0"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = started.stdout + started.stderr
    assert started.returncode != 0, output
    assert "CAPTIONQ_ENV=production needs DATABASE_URL, WEBHOOK_SECRETS_KEY set" in output
    assert "REDIS_URL" not in output.split("needs", 1)[1].split("\n", 1)[0]
