"""The demo as a user runs it: ``captionq demo`` end to end, offline, on a fresh SQLite file."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.processes import REPO


def test_the_demo_runs_end_to_end_and_says_what_it_used(redis_db: str) -> None:
    env = {**os.environ, "REDIS_URL": redis_db, "HF_HUB_OFFLINE": "1", "COLUMNS": "160"}
    env.pop("DATABASE_URL", None)
    done = subprocess.run(
        [sys.executable, "-m", "producers.cli", "demo", "--images", "2"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=280,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert f"Redis: {redis_db} (from REDIS_URL)" in out
    assert "Database: sqlite:///" in out
    assert "API: http://127.0.0.1:" in out  # the demo submits through its own API, with a key
    assert "tiny randomly initialised BLIP" in out
    assert "noise" in out
    assert out.count("signature verified") == 2
    assert "2/2 callbacks received and verified" in out
    assert "make demo ARGS=--review" in out  # how to open the review desk on this data
