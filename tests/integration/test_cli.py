"""The CLI as a user types it, against a real database, Redis and worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.images import png
from tests.support.stack import Stack


def captionq(*args: str, stack: Stack, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": stack.settings.database_url,
        "REDIS_URL": stack.settings.redis_url,
        "COLUMNS": "200",
    }
    return subprocess.run(
        [sys.executable, "-m", "producers.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        check=check,
        timeout=120,
    )


def test_submit_a_file_then_read_the_job(stack: Stack, tmp_path: Path) -> None:
    image = tmp_path / "shoe.png"
    image.write_bytes(png())
    done = captionq(
        "submit",
        str(image),
        "--style",
        "playful",
        "--platform",
        "instagram",
        "--variants",
        "1",
        "--tenant",
        "acme",
        "--wait",
        "90",
        stack=stack,
    )
    job = json.loads(done.stdout)
    assert job["status"] == "succeeded", done.stdout
    assert len(job["variants"]) == 1
    shown = json.loads(captionq("job", job["id"], "--tenant", "acme", stack=stack).stdout)
    assert shown["id"] == job["id"]
    assert shown["caption"] == job["caption"]


def test_refusals_exit_non_zero_with_the_code(stack: Stack, tmp_path: Path) -> None:
    image = tmp_path / "x.png"
    image.write_bytes(png())
    refused = captionq("submit", str(image), "-s", "gothic", "-p", "x", stack=stack, check=False)
    assert refused.returncode == 2
    assert "unknown_style" in refused.stdout
    missing = captionq(
        "submit", str(tmp_path / "nope.png"), "-s", "playful", "-p", "x", stack=stack, check=False
    )
    assert missing.returncode == 2
    assert "image_missing" in missing.stdout
    unknown = captionq("job", "job_doesnotexist", stack=stack, check=False)
    assert unknown.returncode == 1
    assert "not_found" in unknown.stdout


def test_tenant_and_key_creation(stack: Stack) -> None:
    tenant = json.loads(captionq("tenant", "create", "cli-co", stack=stack).stdout)
    assert tenant["webhook_secret"].startswith("whsec_")
    key = json.loads(captionq("tenant", "key", "cli-co", "--scope", "read", stack=stack).stdout)
    assert key["key"].startswith(f"cq_{key['prefix']}_")
    assert key["scopes"] == "read"
    bad = captionq("tenant", "key", "cli-co", "--scope", "root", stack=stack, check=False)
    assert bad.returncode != 0
    assert "unknown scope" in bad.stderr
