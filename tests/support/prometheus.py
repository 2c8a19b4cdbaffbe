"""Debian's real ``prometheus`` server, scraping the processes a test started, and its
HTTP query API; ``promtool`` beside it. Missing, the test skips locally and fails in CI."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support.services import unavailable

SCRAPE_S = 1


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Prometheus:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @classmethod
    def start(
        cls, targets: dict[str, str], folder: Path, rule_files: tuple[Path, ...] = ()
    ) -> Prometheus:
        """Scrape each ``job name -> host:port`` every second."""
        binary = shutil.which("prometheus")
        if binary is None:
            unavailable("prometheus is not installed (apt-get install -y prometheus)")
        config = {
            "global": {"scrape_interval": f"{SCRAPE_S}s", "evaluation_interval": f"{SCRAPE_S}s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": name, "static_configs": [{"targets": [target]}]}
                for name, target in targets.items()
            ],
        }
        (folder / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
        port = free_port()
        log = folder / "prometheus.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={folder / 'prometheus.yml'}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        made = cls(process, f"http://127.0.0.1:{port}", log)
        deadline = time.monotonic() + 60
        while not made._ready():
            if process.poll() is not None or time.monotonic() > deadline:
                made.stop()
                raise RuntimeError(f"prometheus did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        return made

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def query(self, expr: str) -> list[tuple[dict[str, str], float]]:
        """An instant query's series: (labels, value) each."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        with urllib.request.urlopen(url, timeout=10) as answer:
            body = json.load(answer)
        assert body["status"] == "success", body
        data = body["data"]
        if data["resultType"] == "scalar":
            return [({}, float(data["result"][1]))]
        return [(row["metric"], float(row["value"][1])) for row in data["result"]]

    def value(self, expr: str) -> float | None:
        """The one value of ``expr`` (None while it has no data)."""
        rows = self.query(expr)
        assert len(rows) <= 1, f"{expr} returned {len(rows)} series"
        return rows[0][1] if rows else None

    def targets_up(self) -> bool:
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as answer:
            active = json.load(answer)["data"]["activeTargets"]
        return bool(active) and all(t["health"] == "up" for t in active)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
