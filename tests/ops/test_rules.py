"""The alert and recording rules in ``deploy/prometheus`` pass ``promtool check rules``,
and their unit tests (queue age, dead deliveries, API 5xx ratio, no worker alive) pass
``promtool test rules``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.ops.conftest import DEPLOY
from tests.support.services import unavailable

RULES = DEPLOY / "prometheus"


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        unavailable("promtool is not installed (apt-get install -y prometheus)")
    return found


def run(*args: str, cwd: Path = RULES) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, cwd=cwd)


def test_rules_check(promtool: str) -> None:
    checked = run(promtool, "check", "rules", "recording-rules.yaml", "alert-rules.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_alerts_unit_tests_pass(promtool: str) -> None:
    tested = run(promtool, "test", "rules", "alert-rules.test.yaml")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout


def test_alert_unit_tests_can_fail(promtool: str, tmp_path: Path) -> None:
    """A queue-age alert expected too early makes promtool fail: the tests have teeth."""
    for name in ("recording-rules.yaml", "alert-rules.yaml"):
        shutil.copy(RULES / name, tmp_path / name)
    text = (RULES / "alert-rules.test.yaml").read_text().replace("eval_time: 17m", "eval_time: 12m")
    (tmp_path / "broken.test.yaml").write_text(text)
    tested = run(promtool, "test", "rules", "broken.test.yaml", cwd=tmp_path)
    assert tested.returncode != 0
