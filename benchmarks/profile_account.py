"""Where each millisecond per job goes, from py-spy samples of a running process.

:func:`start` attaches ``py-spy record`` (the ``bench`` extra) to each named process,
sampling its threads' active (non-idle) stacks; :func:`finish` stops them (py-spy
saves on SIGINT) and turns the collapsed stacks into milliseconds of CPU per job:
each stage's share of the process's active samples times the CPU the process spent
per job (read from /proc by the caller). By stage, for the stages of captionq's
path (the first stage in ``STAGES`` whose marker is anywhere in the stack: a claim
inside the caption task counts as the claim, not as Celery), and by the
library that the sampled leaf frame belongs to. Shares, not sample counts, because
on a machine shared with other work a runnable thread that waits for a core still
samples as active.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

RATE = 250
# (stage, a substring of a frame "function (file:line)"), in priority order.
STAGES: tuple[tuple[str, str], ...] = (
    ("claim + tenants", "claim_batch ("),
    ("blobs read", "load_all ("),
    ("pipeline (decode, noop model, rules, policy, score)", "worker/pipeline.py"),
    ("store + outbox transaction", "_store_batch ("),
    ("publish deliveries and retries", "worker/publish.py"),
    ("metrics", "worker/metrics.py"),
    ("deliver: take, sign + POST, record", "send_batch ("),
    ("API: check and decode the requests", "check_all ("),
    ("API: submit (rows, blobs, publish)", "submit_checked ("),
    ("API: request handling (FastAPI, pydantic)", "fastapi/"),
    ("logging", "logging/__init__.py"),
    ("celery-batches: buffer, flush", "celery_batches/"),
    ("Celery consumer: receive, strategy, ack", "celery/worker/"),
    ("uvicorn / h11", "uvicorn/"),
)
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^:()]*)(?::\d+)?\)$")


@dataclass
class Profiling:
    name: str
    out: Path
    process: subprocess.Popen[bytes]


def start(folder: Path, pids: dict[str, int]) -> list[Profiling]:
    folder.mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).with_name("py-spy"))
    started = []
    for name, pid in pids.items():
        if name == "redis-server":
            continue
        out = folder / f"{name.replace(' ', '-')}.txt"
        process = subprocess.Popen(
            [spy, "record", "--pid", str(pid), "--format", "raw", "--rate", str(RATE),
             "--nonblocking", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=(folder / f"{out.stem}.log").open("wb"),
        )  # fmt: skip
        started.append(Profiling(name, out, process))
    return started


def finish(
    profiles: list[Profiling], *, cpu_ms_per_job: dict[str, float]
) -> dict[str, dict[str, dict[str, float]]]:
    for profiling in profiles:
        profiling.process.send_signal(signal.SIGINT)
    accounts = {}
    for profiling in profiles:
        profiling.process.wait(timeout=60)
        if profiling.out.exists():
            accounts[profiling.name] = account(
                profiling.out.read_text(), cpu_ms_per_job=cpu_ms_per_job[profiling.name]
            )
    return accounts


def account(collapsed: str, *, cpu_ms_per_job: float) -> dict[str, dict[str, float]]:
    """CPU ms per job by stage and by leaf library, from py-spy's raw format."""
    stages: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        n = int(count)
        stages[_stage(frames)] += n
        libraries[_library(frames[-1])] += n
    scale = cpu_ms_per_job / max(1, sum(stages.values()))

    def ms(counter: Counter[str]) -> dict[str, float]:
        return {k: round(v * scale, 3) for k, v in counter.most_common()}

    return {"total": {"cpu_ms_per_job": round(cpu_ms_per_job, 3),
                      "samples": sum(stages.values())},
            "by_stage": ms(stages), "by_library": ms(libraries)}  # fmt: skip


def _stage(frames: list[str]) -> str:
    for stage, marker in STAGES:
        if any(marker in frame for frame in frames):
            return stage
    return "other (threads, timers, start-up)"


def _library(frame: str) -> str:
    """The top-level package of a leaf frame (py-spy names files relative to the
    import path): ``stdlib: socket``, ``sqlalchemy``, ``worker``, ..."""
    found = _FRAME.match(frame)
    path = found.group("file") if found else frame
    if "site-packages/" in path:
        path = path.split("site-packages/", 1)[1]
    for ours in ("schemas", "producers", "worker", "benchmarks"):
        if path.startswith(f"{ours}/") or f"/{ours}/" in path:
            return ours
    top = Path(path).parts[0].removesuffix(".py") if path and not path.startswith("/") else ""
    if not top:
        return "native or unknown"
    return f"stdlib: {top}" if top in sys.stdlib_module_names else top
