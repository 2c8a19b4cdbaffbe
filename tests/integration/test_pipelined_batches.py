"""Two batches through ``worker.batch.process`` at once, as two threads of a pipelined
GPU worker: while batch A holds the GPU, batch B is claimed, read and decoded and waits
for it; A is checked, scored and stored after it handed the GPU on, while B generates.

Real store (SQLite and PostgreSQL), real claim, blobs, pipeline and result transaction;
the model is a captioner whose first call of each batch waits for the test's word, so
that the test, not the clock, says when a batch leaves the GPU.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from typing import Any

from PIL import Image
from sqlmodel import col, select

from schemas.settings import WorkerSettings
from schemas.store.sessions import session_scope
from schemas.tables import Job, JobStatus
from tests.support.jobs import queued_jobs
from tests.support.waiting import wait_for
from worker import batch
from worker.batch import BatchReport
from worker.lease import LeaseKeeper
from worker.models import Engine
from worker.models.base import Generation, Text
from worker.models.noop import NoopCaptioner
from worker.models.served import ServedVLM, Server


class GatedCaptioner(NoopCaptioner):
    """Each batch's caption call (the first model call, no prompts) says it began and
    waits for its gate, in the order the batches reach the GPU."""

    def __init__(self, gates: int) -> None:
        super().__init__()
        self.began = [threading.Event() for _ in range(gates)]
        self.gates = [threading.Event() for _ in range(gates)]
        self._calls = 0

    def _caption(
        self, images: Sequence[Image.Image], prompts: Sequence[str] | None, seed: int | None
    ) -> list[str]:
        if prompts is None:
            n, self._calls = self._calls, self._calls + 1
            self.began[n].set()
            assert self.gates[n].wait(60), "the test never opened this batch's gate"
        return super()._caption(images, prompts, seed)


def _jobs(url: str, n: int, shade: int) -> list[str]:
    return queued_jobs(url, n, tenant=f"pipelined-{shade}", color=(shade, 80, 80))


def _statuses(url: str, ids: list[str]) -> set[str]:
    with session_scope(url) as session:
        return set(session.exec(select(Job.status).where(col(Job.id).in_(ids))).all())


def test_the_next_batch_is_prepared_while_one_generates_and_stored_after(
    database_url: str,
) -> None:
    settings = WorkerSettings(database_url=database_url, captioner_model="captionq/noop",
                              blob_store="db", job_lease_s=30)  # fmt: skip
    captioner = GatedCaptioner(gates=2)
    engine = Engine(captioner=captioner)
    lease = LeaseKeeper(settings, hand_back=lambda jobs: None)
    gpu = threading.Lock()
    a, b = _jobs(database_url, 3, 10), _jobs(database_url, 3, 200)
    reports: dict[str, BatchReport] = {}

    def run(name: str, ids: list[str]) -> None:
        reports[name] = batch.process(ids, settings=settings, engine=engine, lease=lease, gpu=gpu)

    first = threading.Thread(target=run, args=("a", a))
    first.start()
    assert captioner.began[0].wait(30), "batch A never reached the model"
    second = threading.Thread(target=run, args=("b", b))
    second.start()
    # B is claimed (and its blobs read and images decoded) while A holds the GPU.
    wait_for(lambda: _statuses(database_url, b) == {JobStatus.running}, 30, "B claimed")
    wait_for(lambda: lease.held == 6, 30, "both batches in hand")
    assert not captioner.began[1].is_set()  # B waits for the GPU: one batch generates
    captioner.gates[0].set()
    # A hands the GPU on, then is checked, scored and stored while B generates.
    assert captioner.began[1].wait(30), "batch B never reached the model"
    first.join(30)
    assert _statuses(database_url, a) == {JobStatus.succeeded}
    assert _statuses(database_url, b) == {JobStatus.running}
    assert lease.held == 3
    captioner.gates[1].set()
    second.join(30)
    assert _statuses(database_url, b) == {JobStatus.succeeded}
    assert lease.held == 0
    sa, sb = reports["a"].stages, reports["b"].stages
    assert reports["a"].succeeded == reports["b"].succeeded == 3
    assert sb.claim < sa.gpu_until  # prepared while A generated
    assert sa.gpu_until <= sb.gpu_from  # one batch on the GPU at a time
    assert sa.stored < sb.gpu_until  # A stored while B generated
    assert sa.claim <= sa.gpu_wanted <= sa.gpu_from <= sa.gpu_until <= sa.stored


def test_a_failed_batch_releases_the_gpu_and_its_lease(database_url: str) -> None:
    """A model that raises fails its batch's jobs (model_error) and hands the GPU on."""

    class Broken(NoopCaptioner):
        def _caption(self, *_: object) -> list[str]:
            raise RuntimeError("kernel fault")

    settings = WorkerSettings(database_url=database_url, captioner_model="captionq/noop",
                              blob_store="db", job_lease_s=30)  # fmt: skip
    lease = LeaseKeeper(settings, hand_back=lambda jobs: None)
    gpu = threading.Lock()
    ids = _jobs(database_url, 2, 90)
    report = batch.process(ids, settings=settings, engine=Engine(captioner=Broken()),
                           lease=lease, gpu=gpu)  # fmt: skip
    assert report.failed_codes == ["model_error", "model_error"]
    assert not gpu.locked()
    assert lease.held == 0
    assert _statuses(database_url, ids) == {JobStatus.failed}


class GatedServedVLM(ServedVLM):
    """A served VLM whose requests wait for the test's word before they are answered:
    what a batch's requests do while they wait on the server."""

    def __init__(self) -> None:
        super().__init__(Server(base_url="http://127.0.0.1:9/v1", model="m"),
                         Generation(max_new_tokens=4))  # fmt: skip
        self.began = threading.Semaphore(0)
        self.gate = threading.Event()
        self._answers = itertools.count()

    def _one(self, body: dict[str, Any], timeout_s: float | None = None) -> Text:
        self.began.release()
        assert self.gate.wait(60), "the test never opened the gate"
        return f"served text number {next(self._answers)}"


def _two_batches_at_once(
    database_url: str, engine: Engine, shades: tuple[int, int]
) -> dict[str, BatchReport]:
    """Two batches of two jobs through ``batch.process`` at once, sharing one device."""
    settings = WorkerSettings(database_url=database_url, captioner_model="captionq/noop",
                              blob_store="db", job_lease_s=30)  # fmt: skip
    gpu = threading.Lock()
    a, b = (_jobs(database_url, 2, shade) for shade in shades)
    reports: dict[str, BatchReport] = {}

    def run(name: str, ids: list[str]) -> None:
        reports[name] = batch.process(ids, settings=settings, engine=engine, gpu=gpu)

    threads = [threading.Thread(target=run, args=(n, ids)) for n, ids in (("a", a), ("b", b))]
    for thread in threads:
        thread.start()
    served = engine.writer
    assert isinstance(served, GatedServedVLM)
    try:
        # Each batch's two requests in flight at once: four waiting on the server.
        assert all(served.began.acquire(timeout=30) for _ in range(4))
    finally:
        served.gate.set()
        for thread in threads:
            thread.join(30)
        served.close()
    assert _statuses(database_url, a + b) == {JobStatus.succeeded}
    assert not gpu.locked()  # handed on by every batch
    return reports


def test_a_served_engines_batches_wait_on_the_server_side_by_side(database_url: str) -> None:
    """Both roles served: no batch holds the device, so two batches' requests are in
    flight at once (the device's turn would have held the second back)."""
    vlm = GatedServedVLM()
    reports = _two_batches_at_once(database_url, Engine(captioner=vlm), (30, 60))
    assert reports["a"].succeeded == reports["b"].succeeded == 2
    assert all(r.model_s > 0 for r in reports.values())  # served calls count as model time


def test_a_batch_hands_the_device_on_before_it_waits_on_a_served_writer(
    database_url: str,
) -> None:
    """Captions in the process, variants served: a batch holds the device for its
    captions and hands it on before its variant requests wait on the server, so the
    other batch captions meanwhile and both batches' requests are in flight at once."""
    writer = GatedServedVLM()
    engine = Engine(captioner=NoopCaptioner(), writer=writer)
    reports = _two_batches_at_once(database_url, engine, (150, 180))
    assert reports["a"].succeeded == reports["b"].succeeded == 2
