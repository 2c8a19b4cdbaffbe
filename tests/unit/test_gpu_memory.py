"""The GPU memory gauge: one series per device, read at each scrape; none without CUDA.
On a CUDA host (``gpu`` marker) the real reader sees a tensor's memory."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from worker import metrics
from worker.models.device import memory_in_use


def _bytes(device: str) -> float | None:
    return REGISTRY.get_sample_value("captionq_gpu_memory_bytes", {"device": device})


def test_each_device_is_a_series_read_at_each_scrape() -> None:
    held = {"cuda:6": 1_000, "cuda:7": 2_000}
    metrics.watch_gpu_memory(lambda: dict(held))
    assert (_bytes("cuda:6"), _bytes("cuda:7")) == (1_000, 2_000)
    held["cuda:6"] = 5_000
    del held["cuda:7"]  # a device no longer read reports nothing held
    assert (_bytes("cuda:6"), _bytes("cuda:7")) == (5_000, 0)


def test_without_cuda_no_device_is_reported() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has CUDA: the next test covers it")
    assert memory_in_use() == {}


@pytest.mark.gpu
def test_a_tensor_on_the_gpu_is_counted() -> None:
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this host")
    torch.cuda.empty_cache()  # the allocator keeps no free block the tensor could reuse
    before = memory_in_use().get("cuda:0", 0)
    block = torch.empty(64 * 2**20, dtype=torch.uint8, device="cuda:0")
    assert memory_in_use()["cuda:0"] >= before + block.numel()


def test_inputs_that_do_not_fit_the_device_are_out_of_memory_as_a_call_is() -> None:
    """A batch's largest tensors (its images) are moved to the device before the model
    call: running out of memory there is the worker's ``OutOfMemoryError`` too (the
    batch is split), not an error of unknown kind."""
    from types import SimpleNamespace

    import torch

    from worker.errors import OutOfMemoryError
    from worker.models.loading import HFModel

    class Inputs(dict):  # type: ignore[type-arg]
        def to(self, device: object) -> Inputs:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 30.00 MiB")

    model = SimpleNamespace(info=SimpleNamespace(model_id="tiny"), device="cpu", dtype=None)
    with pytest.raises(OutOfMemoryError, match="tiny inputs"):
        HFModel._on_device(model, Inputs())  # type: ignore[arg-type]
