"""A prefork worker's metrics: prometheus-client's multiprocess mode.

Celery's prefork pool runs tasks in child processes, so no one process holds the
worker's counters. With ``PROMETHEUS_MULTIPROC_DIR`` set (an empty folder of its own
per worker, e.g. an ``emptyDir`` volume), every process of the worker, parent and
children, writes its values to files there (prometheus-client chooses this when it is
imported), and the parent serves their sum on ``METRICS_PORT``:

- counters and histograms are summed over every child that ever ran, so a child that
  exits (``--max-tasks-per-child``, a crash) takes nothing away;
- each gauge has a mode (``worker.metrics``): in-flight jobs and GPU memory are summed
  over the live children, model load time is the live children's longest, timestamps
  the latest;
- a child that exits marks itself dead (``worker_process_shutdown``), and at each scrape
  the parent marks dead any child whose process is gone (one killed with SIGKILL sends
  no signal), so a dead child's gauges leave the sum;
- gauges read through a function at scrape in a single process (in-flight jobs, GPU
  memory) are sampled by each child every ``SAMPLE_S`` instead, since the parent cannot
  call into a child.

The GPU worker and the threaded IO and fetch workers are single processes and need
none of this; the prefork pool refuses to start with ``METRICS_PORT`` and no folder,
since its parent would export nothing that its children did.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

log = logging.getLogger("captionq.worker")

SAMPLE_S = 1.0
_DROPS = 5  # tries at removing files that other threads and processes remove meanwhile
_FILE = re.compile(r"^(?P<kind>[a-z_]+)_(?P<pid>\d+)\.db$")
_LIVE = re.compile(r"^gauge_live[a-z]+_(?P<pid>\d+)\.db$")


def clear_stale(folder: str) -> int:
    """At the parent's start, before any child exists: remove what earlier processes
    left (their values would be counted again). Returns how many files went."""
    removed = 0
    for path in Path(folder).iterdir():
        found = _FILE.match(path.name)
        if found and int(found["pid"]) != os.getpid():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Children(Collector):
    """Every process's files in ``folder``, summed; dead children's gauges dropped first."""

    def __init__(self, folder: str) -> None:
        self._folder = folder

    def collect(self) -> Iterator[Metric]:
        for path in Path(self._folder).iterdir():
            found = _LIVE.match(path.name)
            if found and not _alive(int(found["pid"])):
                _drop_live_gauges(self._folder, int(found["pid"]))
        yield from self._read()

    def _read(self) -> list[Metric]:
        """Every file's values, but for files still empty: a child that has just started
        creates its file empty and then sizes it, and an empty file holds no value yet
        (prometheus-client would fail on it). A live gauge's file removed meanwhile is
        skipped by prometheus-client itself."""
        files = [str(p) for p in Path(self._folder).glob("*.db") if _written(p)]
        return list(MultiProcessCollector.merge(files, accumulate=True))

    def value(self, name: str) -> float:
        """The summed value of an unlabelled metric (0 when none has been written)."""
        for metric in self.collect():
            if metric.name == name:
                return sum(sample.value for sample in metric.samples)
        return 0.0


def registry(folder: str) -> tuple[CollectorRegistry, Children]:
    """The registry the parent serves: every process's files, nothing of its own."""
    served = CollectorRegistry()
    children = Children(folder)
    served.register(children)
    return served, children


def _written(path: Path) -> bool:
    try:
        return path.stat().st_size > 0
    except FileNotFoundError:  # removed since the listing: a dead child's live gauges
        return False


def child_exited(folder: str, *, pid: int) -> None:
    """A child that exits: its live gauges leave the sum at once."""
    _drop_live_gauges(folder, pid)


def _drop_live_gauges(folder: str, pid: int) -> None:
    """``mark_process_dead``, safe when another thread or process removes the same
    files at the same time (it raises on a file gone before its turn)."""
    for _ in range(_DROPS):
        try:
            mark_process_dead(pid, path=folder)
            return
        except FileNotFoundError:
            continue  # one went first: go over what is left


class Sampler:
    """Set gauges from functions every ``SAMPLE_S``, in the process that knows them."""

    def __init__(self) -> None:
        self._reads: list[tuple[Gauge, Callable[[], float]]] = []
        self._thread: threading.Thread | None = None

    def add(self, gauge: Gauge, read: Callable[[], float]) -> None:
        self._reads.append((gauge, read))
        gauge.set(read())
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="captionq-sampler", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(SAMPLE_S)
            for gauge, read in self._reads:
                try:
                    gauge.set(read())
                except Exception:  # a reading that fails keeps the last value
                    log.debug("sampling %s failed", gauge, exc_info=True)
