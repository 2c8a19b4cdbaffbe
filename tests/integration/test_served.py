"""Served models against a real OpenAI-compatible server: ``transformers serve`` pinned to
a tiny random Idefics3 (the captioner, a chat VLM) and another pinned to a tiny Qwen2 (the
text copywriter), each its own process on loopback, one pair for this module.

Real jobs go through the API, the real worker and the servers, on each database kind:
captions and variants stored, callbacks verified, provenance naming the served models;
the server killed mid-batch (jobs retried, all succeed once it is back, none lost or
duplicated); answers slower than the deadline (on PostgreSQL, a second worker with a
5 ms deadline: each job retried as transient model_server_timeout, then failed when its
attempts are spent, as worker.retry decides, stored and called back). In this process, through the
same engine the worker loads: the VLM writing variants itself, structured output asked
of a server that ignores it (each image and style's list request answered with plain
text, so every variant is asked for on its own: N per style all the same), one item
refused by the server failing alone, answers slower than the deadline. And a server
that serves another model than configured: the worker refuses to start."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis
from PIL import Image

from schemas.errors import ErrorCode, PermanentError, TransientError
from schemas.settings import CoreSettings, WorkerSettings
from tests.support.images import png
from tests.support.model_servers import ModelServer
from tests.support.services import LOOPBACK, LOOPBACK_ENV
from tests.support.stack import Stack
from tests.support.waiting import wait_for
from worker import retry
from worker.models import Engine, load_engine, tiny
from worker.models.base import Text, WriteRequest
from worker.models.served import ServedWriter
from worker.pipeline import JobSpec, Written, write_batch

JOB = {"styles": ["playful", "luxury"], "platforms": ["instagram"], "variants": 2}
SLOTS = 4


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ModelServer]]:
    root = tmp_path_factory.mktemp("served-models")
    logs = tmp_path_factory.mktemp("served-logs")
    made = {
        "vlm": ModelServer(tiny.build_tiny_idefics3(root / "tiny-idefics3"), logs),
        "copywriter": ModelServer(tiny.build_tiny_qwen2(root / "tiny-qwen2"), logs),
    }
    try:
        for server in made.values():
            server.launch()
        for server in made.values():
            server.wait_ready()
        yield made
    finally:
        for server in made.values():
            server.stop()


def served_env(servers: dict[str, ModelServer], *, copywriter: bool = True) -> dict[str, str]:
    """The settings of a worker whose captioner (and copywriter) are the servers'."""
    vlm, text = servers["vlm"], servers["copywriter"]
    env = {
        "CAPTIONER_BACKEND": "served", "CAPTIONER_BASE_URL": vlm.base_url,
        "CAPTIONER_MODEL": vlm.name, "CAPTIONER_REVISION": "tiny-random-0",
        "MAX_NEW_TOKENS": "6", "COPY_MAX_NEW_TOKENS": "10", "SERVED_MAX_IN_FLIGHT": "4",
    }  # fmt: skip
    if copywriter:
        env |= {"COPYWRITER_BACKEND": "served", "COPYWRITER_BASE_URL": text.base_url,
                "COPYWRITER_MODEL": text.name}
    return env


@pytest.fixture(scope="module")
def stack(
    database_url: str, redis_db: str, servers: dict[str, ModelServer],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Stack]:  # fmt: skip
    """Tenant ``acme`` over each database kind, and one worker on both queues whose roles
    are served (attempts enough to outlast a restart of the server: it takes seconds)."""
    settings = CoreSettings(database_url=database_url, redis_url=redis_db, blob_store="db",
                            **LOOPBACK)
    built = Stack.open(settings, env={"HF_HUB_OFFLINE": "1", **LOOPBACK_ENV},
                       logdir=tmp_path_factory.mktemp("served-worker"))
    try:
        built.start("all", **served_env(servers), JOB_MAX_ATTEMPTS="12", BATCH_SIZE="4")
        yield built
    finally:
        built.stop()


@pytest.fixture
def engine_of(servers: dict[str, ModelServer]) -> Iterator[Any]:
    """Loads an engine of served roles in this process (closed after the test)."""
    made: list[Any] = []

    def load(**overrides: Any) -> Engine:
        env = {k.lower(): v for k, v in served_env(servers, **overrides.pop("env", {})).items()}
        made.append(load_engine(WorkerSettings(**{**env, **overrides})))
        return made[-1]

    yield load
    for engine in made:
        for model in (engine.captioner, engine.writer):
            close = getattr(model, "close", None)
            if close is not None:
                close()


def submit(stack: Stack, n: int) -> list[str]:
    accepted = stack.client.submit_bulk([
        {"image": png((40 * i, 90, 160)), **JOB, "callback_url": stack.receiver.url}
        for i in range(n)
    ])
    return [a.id for a in accepted]


def settled_requests(server: ModelServer) -> int:
    """The server's count of answered requests once its log has caught up."""
    last = -1
    while (now := server.chat_requests()) != last:
        last = now
        time.sleep(0.3)
    return now


def delivered_once(stack: Stack, ids: Sequence[str]) -> None:
    """Each job's one ``job.succeeded`` callback, verified, and no second one."""
    wait_for(lambda: {r.job_id for r in stack.receiver.received} >= set(ids),
             what="every job's callback")
    received = [r for r in stack.receiver.received if r.job_id in ids]
    assert all(r.verified for r in received)
    assert {r.event_type for r in received} == {"job.succeeded"}
    assert sorted(r.job_id for r in received) == sorted(ids)  # one each


def test_jobs_run_through_a_real_worker_to_the_served_models(
    stack: Stack, servers: dict[str, ModelServer]
) -> None:
    ids = submit(stack, 3)
    jobs = [stack.client.wait(i, timeout_s=240) for i in ids]
    vlm, writer = servers["vlm"], servers["copywriter"]
    for job in jobs:
        assert job.status == "succeeded", (job.error, stack.logs())
        assert job.caption
        assert (job.model_id, job.model_revision) == (vlm.name, "tiny-random-0")
        assert len(job.variants) == SLOTS
        for variant in job.variants:
            made = variant.provenance
            assert (made["model_id"], made["model_source"]) == (writer.name, writer.base_url)
            assert made["model_role"] == "rewriter"
            assert (made["caption_model_id"], made["caption_model_revision"]) == (
                vlm.name, "tiny-random-0")
            assert made["generation"]["backend"] == "served"
            assert made["generation"]["max_new_tokens"] == 10
    delivered_once(stack, ids)


def test_a_server_killed_mid_batch_loses_and_duplicates_nothing(
    stack: Stack, servers: dict[str, ModelServer]
) -> None:
    if stack.database_url.startswith("sqlite"):
        # A restart of the server and the jobs' backoff take most of a minute; the
        # retry's store path is the same for every transient error, and
        # tests/reliability runs it on SQLite too.
        pytest.skip("the kill fault runs on PostgreSQL, the production store")
    vlm = servers["vlm"]
    answered = vlm.chat_requests()
    ids = submit(stack, 6)
    wait_for(lambda: vlm.chat_requests() > answered, timeout_s=120,
             what="the batch's first request answered")
    vlm.kill()
    vlm.start()  # the worker meets the dead server while it starts again (seconds)
    jobs = [stack.client.wait(i, timeout_s=300) for i in ids]
    assert stack.logged("transient model_server_unavailable")
    for job in jobs:
        assert job.status == "succeeded", (job.error, stack.logs())
        assert len(job.variants) == SLOTS  # stored once: no duplicate variants
    assert max(job.attempts for job in jobs) > 1  # some were retried
    delivered_once(stack, ids)


@pytest.fixture
def hasty(
    database_url: str, redis_db: str, servers: dict[str, ModelServer], tmp_path: Path
) -> Iterator[Stack]:  # fmt: skip
    """The tenant again, over the module's database but a Redis database of its own (so
    the module's worker never sees these jobs), with one worker whose requests may take
    5 ms: every caption is past its deadline. Two attempts per job."""
    if database_url.startswith("sqlite"):
        # A worker's start is most of this test's cost; the retry's store path is the
        # same for every transient error, and tests/reliability runs it on SQLite too.
        pytest.skip("the deadline fault through the worker runs on PostgreSQL")
    head, index = redis_db.rsplit("/", 1)
    own = f"{head}/{int(index) % 15 + 1}"
    redis.Redis.from_url(own).flushdb()
    settings = CoreSettings(database_url=database_url, redis_url=own, blob_store="db",
                            **LOOPBACK)
    built = Stack.open(settings, env={"HF_HUB_OFFLINE": "1", **LOOPBACK_ENV}, logdir=tmp_path)
    try:
        built.start("all", **served_env(servers), SERVED_TIMEOUT_S="0.005",
                    JOB_MAX_ATTEMPTS="2", BATCH_SIZE="4")
        yield built
    finally:
        built.stop()


def test_answers_slower_than_the_deadline_retry_the_job_then_fail_it(
    hasty: Stack, servers: dict[str, ModelServer]
) -> None:
    """The worker starts (its first request has its own long deadline), then no request
    of a job is answered in time: each job is retried as transient model_server_timeout
    and, its two attempts spent, failed with attempts_exhausted naming the timeout; the
    job.failed callback says the same."""
    ids = submit(hasty, 2)
    jobs = [hasty.client.wait(i, timeout_s=120) for i in ids]
    assert hasty.logged("transient model_server_timeout")
    for job in jobs:
        assert job.status == "failed", (job, hasty.logs())
        assert job.attempts == 2
        assert job.error is not None
        assert job.error.code == ErrorCode.attempts_exhausted
        assert "gave up after 2 attempts" in job.error.message
        assert f"{servers['vlm'].name} at {servers['vlm'].base_url}" in job.error.message
        assert "no answer within 0.005s" in job.error.message
        assert (job.caption, job.variants) == (None, [])
    wait_for(lambda: {r.job_id for r in hasty.receiver.received} >= set(ids),
             what="every job's callback")
    received = [r for r in hasty.receiver.received if r.job_id in ids]
    assert sorted(r.job_id for r in received) == sorted(ids)  # one each
    for callback in received:
        assert callback.verified
        assert callback.event_type == "job.failed"
        assert callback.body["data"]["attempts"] == 2
        assert callback.body["data"]["error"]["code"] == "attempts_exhausted"
        assert "no answer within 0.005s" in callback.body["data"]["error"]["message"]


@pytest.mark.parametrize("copywriter", [False, True], ids=["vlm", "copywriter"])
def test_structured_output_asked_of_a_server_that_ignores_it_still_gives_n_per_style(
    engine_of: Any, servers: dict[str, ModelServer], copywriter: bool
) -> None:
    """``transformers serve`` answers the list request of each image and style with the
    random model's plain text, so the backend asks for each variant on its own: the
    requests are one per image and style plus one per variant not taken from a list."""
    engine = engine_of(served_structured_output=True, env={"copywriter": copywriter})
    server = servers["copywriter" if copywriter else "vlm"]
    specs = [JobSpec(job_id=f"j{i}", styles=("minimal", "playful"), platforms=("x",),
                     variants=3) for i in range(2)]  # fmt: skip
    images = [Image.new("RGB", (40, 30), (200, 0, 0)), Image.new("RGB", (40, 30), (0, 9, 9))]
    before = settled_requests(server)
    written = write_batch(specs, images, engine=engine, regenerate=False)
    for job in written:
        assert isinstance(job, Written), job
        styles = [v.style for v in job.variants]
        assert sorted(styles) == ["minimal"] * 3 + ["playful"] * 3
        assert {v.provenance["served_mode"] for v in job.variants} <= {"list", "per_variant"}
    single = sum(v.provenance["served_mode"] == "per_variant"
                 for job in written for v in job.variants)  # type: ignore[union-attr]
    captions = 0 if copywriter else 2  # the VLM's captions go to the same server
    wait_for(lambda: server.chat_requests() - before == captions + 2 * 2 + single,
             what="the server's log of every request")


def test_the_vlm_writes_the_variants_itself_without_a_copywriter(
    engine_of: Any, servers: dict[str, ModelServer]
) -> None:
    engine = engine_of(env={"copywriter": False})
    specs = [JobSpec(job_id=f"j{i}", styles=("minimal", "playful"), platforms=("x",),
                     variants=1) for i in range(2)]  # fmt: skip
    images = [Image.new("RGB", (40, 30), (200, 0, 0)), Image.new("L", (30, 40), 90)]
    for written in write_batch(specs, images, engine=engine):
        assert isinstance(written, Written), written
        assert written.model_id == servers["vlm"].name
        assert [v.provenance["model_role"] for v in written.variants] == ["vlm", "vlm"]


def test_an_item_the_server_refuses_fails_alone(engine_of: Any) -> None:
    """The real server answers 400 for a model it is not pinned to: that variant's job
    fails with model_request_refused, its batch mate succeeds."""

    class RefusesTheSecondJob(ServedWriter):
        def write(self, requests: Sequence[WriteRequest]) -> list[Text]:
            bodies = [self._body([{"role": "user", "content": r.instruction}], seed=r.seed)
                      for r in requests]
            for body, request in zip(bodies, requests, strict=True):
                if request.image.getpixel((0, 0)) == (0, 0, 200):
                    body["model"] = "another-model"
            return self._complete(bodies)

    engine = engine_of()
    served = engine.writer
    engine.writer = RefusesTheSecondJob(served.server, served.generation)
    served.close()
    specs = [JobSpec(job_id=f"j{i}", styles=("minimal",), platforms=("x",), variants=2)
             for i in range(2)]
    images = [Image.new("RGB", (40, 30), (200, 0, 0)), Image.new("RGB", (40, 30), (0, 0, 200))]
    first, second = write_batch(specs, images, engine=engine)
    assert isinstance(first, Written)
    assert len(first.variants) == 2
    assert isinstance(second, PermanentError)
    assert second.code == ErrorCode.model_request_refused
    assert "pinned to" in second.message  # the server's own words


def test_answers_slower_than_the_deadline_fail_their_items_as_transient(
    engine_of: Any,
) -> None:
    """The server needs far more than 5 ms for a caption: each job's outcome is a
    timeout, which decide retries (the worker's start, with its own longer deadline
    for the first request, is unaffected)."""
    engine = engine_of(served_timeout_s=0.005)
    specs = [JobSpec(job_id=f"j{i}", styles=("minimal",), platforms=("x",), variants=1)
             for i in range(2)]
    outcomes = write_batch(specs, [Image.new("RGB", (40, 30), (9, 9, 9))] * 2, engine=engine)
    for outcome in outcomes:
        assert isinstance(outcome, TransientError), outcome
        assert outcome.code == ErrorCode.model_server_timeout
        assert "no answer within 0.005s" in outcome.message
        assert isinstance(retry.decide(outcome, attempt=1, max_attempts=5), retry.Retry)
        assert retry.decide(outcome, attempt=5, max_attempts=5).code == (  # type: ignore[union-attr]
            ErrorCode.attempts_exhausted)


def test_the_worker_refuses_to_start_when_the_server_serves_another_model(
    servers: dict[str, ModelServer], redis_db: str, tmp_path: Path
) -> None:
    """``captionq worker --queues gpu``: a clear error with its code, no traceback, and a
    non-zero exit status."""
    env: dict[str, Any] = {
        **os.environ, **LOOPBACK_ENV, **served_env(servers),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'jobs.db'}", "REDIS_URL": redis_db,
        "COPYWRITER_SERVED_MODEL": "Qwen2.5-7B-Instruct", "LOG_FORMAT": "text",
    }  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "producers.cli", "worker", "--queues", "gpu"],
        env=env, capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "model_not_served" in out
    assert f"serves {servers['copywriter'].name}, not 'Qwen2.5-7B-Instruct'" in out
    assert "Traceback" not in out
