"""The CLI as a user types it, against a real database, Redis and worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.support.images import png
from tests.support.stack import Stack


def captionq(
    *args: str, stack: Stack, check: bool = True, **env_overrides: str
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": stack.settings.database_url,
        "REDIS_URL": stack.settings.redis_url,
        "API_URL": stack.api.url,
        "API_KEY": stack.api_key,
        "COLUMNS": "200",
        **env_overrides,
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
        "--json",
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
    refused = captionq(
        "submit",
        str(image),
        "-s",
        "gothic",
        "-p",
        "x",
        "--tenant",
        "acme",
        stack=stack,
        check=False,
    )
    assert refused.returncode == 2
    assert "unknown_style" in refused.stderr
    missing = submit_x(str(tmp_path / "nope.png"), stack=stack, check=False)
    assert missing.returncode == 2
    assert "image_missing" in missing.stderr
    unknown = captionq("job", "job_doesnotexist", "--tenant", "acme", stack=stack, check=False)
    assert unknown.returncode == 1
    assert "not_found" in unknown.stderr


def test_tenant_and_key_creation(stack: Stack) -> None:
    tenant = json.loads(captionq("tenant", "create", "cli-co", stack=stack).stdout)
    assert tenant["webhook_secret"].startswith("whsec_")
    key = json.loads(captionq("tenant", "key", "cli-co", "--scope", "read", stack=stack).stdout)
    assert key["key"].startswith(f"cq_{key['prefix']}_")
    assert key["scopes"] == "read"
    bad = captionq("tenant", "key", "cli-co", "--scope", "root", stack=stack, check=False)
    assert bad.returncode != 0
    assert "unknown scope" in bad.stderr


def submit_x(
    source: object, *extra: str, stack: Stack, **kw: object
) -> subprocess.CompletedProcess[str]:
    """``captionq submit SOURCE -s playful -p x --tenant acme EXTRA...``."""
    return captionq(
        "submit",
        str(source),
        "-s",
        "playful",
        "-p",
        "x",
        "--tenant",
        "acme",
        *extra,
        stack=stack,
        **kw,
    )  # type: ignore[arg-type]


def refused(done: subprocess.CompletedProcess[str], status: int, code: str) -> None:
    """An expected failure: its exit status, one line with its code, no traceback."""
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    assert f"error[{code}]" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr + done.stdout, done.stderr


def test_expected_errors_are_one_line_with_a_code_and_an_exit_status(stack: Stack) -> None:
    refused(captionq("tenant", "create", "acme", stack=stack, check=False), 1, "tenant_exists")
    for command in (("rotate",), ("enable",), ("enable", "--off"), ("ping",), ("delete",)):
        done = captionq(
            "webhooks",
            command[0],
            "ep_nope",
            *command[1:],
            "--tenant",
            "acme",
            stack=stack,
            check=False,
        )
        refused(done, 1, "not_found")
    for command in (("webhooks", "list"), ("tenant", "keys", "list")):
        tenant = () if command[0] == "tenant" else ("--tenant", "nobody")
        done = captionq(
            *command,
            *(("nobody",) if command[0] == "tenant" else ()),
            *tenant,
            stack=stack,
            check=False,
        )
        refused(done, 1, "not_found")
        assert "captionq tenant create nobody" in done.stderr
    refused(captionq("webhooks", "replay", stack=stack, check=False), 2, "invalid_request")
    keyless = {"API_KEY": "", "API_KEYS_FILE": "/nonexistent/keys.json"}
    done = captionq("job", "job_x", "--tenant", "nobody", stack=stack, check=False, **keyless)
    refused(done, 1, "unauthorized")
    assert "captionq tenant key nobody --save" in done.stderr


def test_submit_wait_running_out_exits_4(stack: Stack, tmp_path: Path) -> None:
    image = tmp_path / "w.png"
    image.write_bytes(png())
    done = submit_x(str(image), "--wait", "0.001", stack=stack, check=False)
    refused(done, 4, "wait_timeout")


def test_the_api_or_the_database_away_is_exit_3(stack: Stack, tmp_path: Path) -> None:
    away = "postgresql+psycopg://postgres@127.0.0.1:1/captionq"
    refused(
        captionq("tenant", "create", "x", stack=stack, check=False, DATABASE_URL=away),
        3,
        "database_unavailable",
    )
    image = tmp_path / "r.png"
    image.write_bytes(png())
    for command in (("job", "job_x"), ("submit", str(image), "-s", "playful", "-p", "x")):
        done = captionq(*command, stack=stack, check=False, API_URL="http://127.0.0.1:1")
        refused(done, 3, "api_unavailable")


def test_a_saved_key_is_the_tenants_key_for_submit_and_job(stack: Stack, tmp_path: Path) -> None:
    keys = {"API_KEY": "", "API_KEYS_FILE": str(tmp_path / "keys.json")}
    captionq("tenant", "create", "saver", stack=stack)
    captionq("tenant", "key", "saver", "--save", stack=stack, **keys)
    image = tmp_path / "s.png"
    image.write_bytes(png())
    submit = ("submit", str(image), "-s", "playful", "-p", "x", "--tenant", "saver")
    job_id, _ = captionq(*submit, stack=stack, **keys).stdout.split()
    shown = captionq("job", job_id, "--tenant", "saver", stack=stack, **keys)
    assert json.loads(shown.stdout)["id"] == job_id
    # acme's key does not read saver's job: the key, not the name, says whose it is.
    refused(captionq("job", job_id, stack=stack, check=False), 1, "not_found")


def test_submit_prints_id_and_status_and_submits_folders_and_jsonl(
    stack: Stack, tmp_path: Path
) -> None:
    folder = tmp_path / "shots"
    folder.mkdir()
    for name in ("a.png", "b.png"):
        (folder / name).write_bytes(png())
    (folder / "notes.txt").write_text("not an image")
    one = captionq(
        "submit", str(folder / "a.png"), "-s", "playful", "-p", "x", "--tenant", "acme", stack=stack
    )
    job_id, status = one.stdout.split()
    assert job_id.startswith("job_")
    assert status in ("queued", "received", "running")
    bulk = captionq(
        "submit",
        str(folder),
        "-s",
        "minimal",
        "-p",
        "tiktok",
        "--tenant",
        "acme",
        "--json",
        stack=stack,
    )
    results = json.loads(bulk.stdout)
    assert [Path(r["source"]).name for r in results] == ["a.png", "b.png"]
    assert all(r["id"].startswith("job_") for r in results)
    lines = tmp_path / "jobs.jsonl"
    lines.write_text(
        json.dumps({"image": "shots/a.png", "styles": ["luxury"]})
        + "\n"
        + "{not json\n"
        + json.dumps({"image": "shots/b.png", "styles": ["gothic"]})
        + "\n"
    )
    mixed = submit_x(str(lines), stack=stack, check=False)
    assert mixed.returncode == 2
    assert len(mixed.stdout.splitlines()) == 1
    assert "jobs.jsonl:2 error[invalid_request]" in mixed.stderr
    assert "jobs.jsonl:3 error[unknown_style]" in mixed.stderr
    assert "submitted 1, refused 2" in mixed.stderr


def test_listings_keep_ids_whole_and_speak_json(stack: Stack) -> None:
    url = "https://hooks.example.com/" + "very-long-path/" * 6
    added = json.loads(
        captionq("webhooks", "add", url, "--tenant", "acme", "--json", stack=stack).stdout
    )
    narrow = captionq("webhooks", "list", "--tenant", "acme", stack=stack, COLUMNS="80")
    assert added["id"] in narrow.stdout
    assert url in narrow.stdout
    listed = json.loads(
        captionq("webhooks", "list", "--tenant", "acme", "--json", stack=stack).stdout
    )
    assert added["id"] in [e["id"] for e in listed]
    deliveries = json.loads(
        captionq("webhooks", "deliveries", "--tenant", "acme", "--json", stack=stack).stdout
    )
    assert isinstance(deliveries, list)
    gone = captionq("webhooks", "delete", added["id"], "--tenant", "acme", stack=stack)
    assert gone.stdout.strip() == f"deleted {added['id']}"


def test_key_management(stack: Stack) -> None:
    created = json.loads(
        captionq(
            "tenant", "key", "acme", "--scope", "read", "--expires-in-days", "30", stack=stack
        ).stdout
    )
    prefix = created["prefix"]
    keys = json.loads(captionq("tenant", "keys", "list", "acme", "--json", stack=stack).stdout)
    (mine,) = [k for k in keys if k["prefix"] == prefix]
    assert (mine["scopes"], mine["state"], mine["expires_at"] is not None) == (
        ["read"],
        "active",
        True,
    )
    never = json.loads(
        captionq(
            "tenant", "keys", "expire", "acme", prefix, "--never", "--json", stack=stack
        ).stdout
    )
    assert never["expires_at"] is None
    revoked = json.loads(
        captionq("tenant", "keys", "revoke", "acme", prefix, "--json", stack=stack).stdout
    )
    assert revoked["state"] == "revoked"
    refused(
        captionq("tenant", "keys", "revoke", "acme", "nope", stack=stack, check=False),
        1,
        "not_found",
    )


def test_purge_says_what_it_deletes_and_asks(stack: Stack, tmp_path: Path) -> None:
    from schemas.store.sessions import migrate

    url = f"sqlite:///{tmp_path / 'purge.db'}"
    migrate(url)
    own = {"DATABASE_URL": url}
    captionq("tenant", "create", "old-co", stack=stack, **own)
    from producers.direct import DirectProducer
    from schemas.api import JobRequest
    from schemas.settings import ApiSettings

    producer = DirectProducer(
        tenant="old-co", settings=ApiSettings(database_url=url, redis_url=stack.settings.redis_url)
    )
    request = JobRequest(image_url="https://example.com/p.png", styles=["playful"], platforms=["x"])
    assert [type(o).__name__ for o in producer.submit_each([request])] == ["Submitted"]
    dry = json.loads(
        captionq(
            "purge", "--older-than-days", "0", "--dry-run", "--json", stack=stack, **own
        ).stdout
    )
    assert (dry["jobs"], dry["deleted"]) == (1, 0)
    refused(
        captionq("purge", "--older-than-days", "0", stack=stack, check=False, **own),
        2,
        "invalid_request",
    )
    done = json.loads(
        captionq("purge", "--older-than-days", "0", "--yes", "--json", stack=stack, **own).stdout
    )
    assert done["deleted"] == 1


def test_help_shows_defaults(stack: Stack) -> None:
    assert "[default: 3]" in captionq("submit", "--help", stack=stack).stdout
