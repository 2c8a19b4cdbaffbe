"""The README's shell block, run line by line as written, on a fresh SQLite database.

Services (workers, the API, beat) start in the background as an operator would start
them, and must come up; every other line must end with status 0, or with an expected
failure: one ``error[CODE]`` line and its documented exit status, never a traceback.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from producers.api.serve import free_port
from tests.support.images import png
from tests.support.processes import REPO

SERVICES = {  # a line that starts a service, and what it prints (or answers) once up
    "captionq worker": "ready.",
    "celery -A worker.app beat": "Configuration ->",
    "captionq api": "/healthz",
}


def readme_lines() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = re.search(r"^Shell \(every line below.*?```sh\n(.*?)```", text, re.S | re.M)
    assert block, "README: the Shell block is missing"
    return [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]


def argv(line: str, job_id: str) -> list[str]:
    words = shlex.split(line.replace("JOB_ID", job_id))
    program = {"captionq": ["-m", "producers.cli"], "celery": ["-m", "celery"]}[words[0]]
    return [sys.executable, *program, *words[1:]]


def test_every_readme_command_runs_as_written(
    redis_db: str, tiny_blip: Path, tmp_path: Path
) -> None:
    (tmp_path / "shoe.jpg").write_bytes(png())
    (tmp_path / "shots").mkdir()
    for name in ("a.png", "b.png"):
        (tmp_path / "shots" / name).write_bytes(png())
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'readme.db'}",
        "REDIS_URL": redis_db,
        "CAPTIONER_MODEL": str(tiny_blip),
        "MAX_NEW_TOKENS": "8",
        "HF_HUB_OFFLINE": "1",
        "API_PORT": str(port),
        "API_URL": f"http://127.0.0.1:{port}",  # where submit and job send their requests
        "API_KEYS_FILE": str(tmp_path / "api-keys.json"),  # where tenant key --save keeps it
        "PYTHONPATH": str(REPO),
        "COLUMNS": "80",
    }
    services: list[subprocess.Popen[str]] = []
    job_id = "JOB_ID"
    try:
        for line in readme_lines():
            ready = next((mark for start, mark in SERVICES.items() if line.startswith(start)), None)
            if ready is not None:
                services.append(_start(line, argv(line, job_id), env, tmp_path, ready, port))
                continue
            done = subprocess.run(
                argv(line, job_id),
                cwd=tmp_path,
                env=env,
                capture_output=True,
                text=True,
                timeout=180,
            )
            assert "Traceback" not in done.stdout + done.stderr, (line, done.stderr)
            if done.returncode != 0:
                assert re.fullmatch(r"error\[[a-z_]+\]: .*(\n  .*)?\n", done.stderr), (line, done)
                assert done.returncode in (1, 2, 3, 4), (line, done.returncode)
                assert not line.startswith(("captionq submit", "captionq job")), (line, done)
            if line.startswith("captionq submit shoe.jpg"):
                job_id, status = done.stdout.split()[:2]
                assert status == "succeeded", done.stdout
    finally:
        for service in services:
            service.terminate()
        for service in services:
            service.wait(timeout=30)


def _start(
    line: str, command: list[str], env: dict[str, str], cwd: Path, ready: str, port: int
) -> subprocess.Popen[str]:
    log = cwd / f"service-{len(list(cwd.glob('service-*')))}.log"
    with log.open("w") as out:
        service = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, text=True
        )
    deadline = time.monotonic() + 90
    while not _up(ready, log, port):
        if service.poll() is not None or time.monotonic() > deadline:
            service.kill()
            service.wait()
            pytest.fail(f"{line!r} did not come up:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    return service


def _up(ready: str, log: Path, port: int) -> bool:
    if ready != "/healthz":
        return ready in log.read_text(errors="replace")
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
