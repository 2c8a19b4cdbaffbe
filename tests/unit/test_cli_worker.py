"""``captionq worker``'s command line: node names, pools, and a quiet pipelined GPU worker."""

from __future__ import annotations

import pytest

from producers.cli.errors import CliError
from producers.cli.ops import QUIET_WORKER, worker_argv

pytestmark = pytest.mark.unit


def _after_worker(argv: list[str]) -> list[str]:
    return argv[argv.index("worker") + 1 :]


def test_nodes_are_named_for_their_queues_on_this_host() -> None:
    gpu = _after_worker(worker_argv("gpu", 1, []))
    io = _after_worker(worker_argv("io", 8, []))
    assert gpu[gpu.index("-n") + 1] == "gpu@%h"
    assert io[io.index("-n") + 1] == "io@%h"
    assert _after_worker(worker_argv("gpu,io", 1, []))[-1] == "gpu-io@%h"


def test_fetches_have_a_pool_of_their_own_and_the_default_runs_every_queue() -> None:
    fetch = _after_worker(worker_argv("fetch", 16, []))
    assert fetch[fetch.index("-Q") + 1] == "captionq.fetch"
    assert fetch[fetch.index("-n") + 1] == "fetch@%h"
    assert (fetch[fetch.index("--pool") + 1], fetch[fetch.index("-c") + 1]) == ("threads", "16")
    assert fetch[fetch.index("--prefetch-multiplier") + 1] == "1"  # a message per thread
    io = _after_worker(worker_argv("io", 8, []))
    assert io[io.index("-Q") + 1] == "captionq.io"  # callbacks only: no fetch
    # A GPU batch's deliver message is 8 callbacks, a gathered batch 32: 4 per thread.
    assert io[io.index("--prefetch-multiplier") + 1] == "4"
    both = _after_worker(worker_argv("io,fetch", 8, []))
    assert both[both.index("--prefetch-multiplier") + 1] == "1"  # fetches: one per thread
    everything = _after_worker(worker_argv("gpu,io,fetch", 1, []))
    assert everything[everything.index("-Q") + 1] == "captionq.gpu,captionq.io,captionq.fetch"
    assert "--prefetch-multiplier" not in everything  # a GPU worker's batches set it


def test_a_name_given_is_kept() -> None:
    argv = _after_worker(worker_argv("io", 2, ["-n", "io-7@%h"]))
    assert argv.count("-n") == 1
    assert argv[-1] == "io-7@%h"
    assert "-n" not in _after_worker(worker_argv("io", 2, ["--hostname=x@%h"]))


def test_the_pipelined_gpu_worker_runs_without_heartbeat_mingle_and_gossip() -> None:
    gpu = worker_argv("gpu", 1, [])
    assert gpu[gpu.index("--pool") + 1] == "threads"
    assert "-c" not in gpu  # its threads are PIPELINE_BATCHES, set by worker.app
    assert set(QUIET_WORKER) <= set(gpu)
    io = worker_argv("io", 8, [])
    assert (io[io.index("--pool") + 1], io[io.index("-c") + 1]) == ("threads", "8")
    assert not set(QUIET_WORKER) & set(io)


def test_an_unknown_queue_is_refused_with_a_code() -> None:
    with pytest.raises(CliError) as refused:
        worker_argv("gpu,cpu", 1, [])
    assert refused.value.code == "invalid_request"
