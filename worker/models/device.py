"""Device and dtype choice (CUDA in bf16, fp16 where bf16 is missing; CPU in fp32), and
the translation of accelerator out-of-memory into :class:`worker.errors.OutOfMemoryError`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from worker.errors import OutOfMemoryError


def pick_device(requested: str) -> torch.device:
    if requested != "auto":
        return torch.device(requested)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(requested: str, device: torch.device) -> torch.dtype:
    if requested != "auto":
        return getattr(torch, requested)
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def memory_in_use() -> dict[str, int]:
    """Bytes of accelerator memory this process holds, per CUDA device ({} without CUDA):
    what torch's caching allocator has reserved, which no other process can use (the
    tensors alive are a part of it)."""
    if not torch.cuda.is_available() or not torch.cuda.is_initialized():
        return {}
    return {f"cuda:{i}": torch.cuda.memory_reserved(i) for i in range(torch.cuda.device_count())}


@contextmanager
def out_of_memory_as_transient(what: str) -> Iterator[None]:
    """Raise :class:`OutOfMemoryError` (transient: split the batch, retry) from the cause."""
    try:
        yield
    except torch.OutOfMemoryError as exc:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise OutOfMemoryError(f"{what}: out of accelerator memory") from exc


class CudaMemory:
    """The CUDA device's memory as ``worker.batchsize`` reads it: what this process can
    have, and the peak it reserved since the last reset."""

    def __init__(self, device: torch.device) -> None:
        self._device = device

    def total(self) -> int:
        """Free on the device now, with what this process's allocator holds already: not
        the CUDA context's own, nor other processes'."""
        free, _ = torch.cuda.mem_get_info(self._device)
        return int(free + torch.cuda.memory_reserved(self._device))

    def reset_peak(self) -> None:
        torch.cuda.synchronize(self._device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(self._device)

    def peak(self) -> int:
        torch.cuda.synchronize(self._device)
        return int(torch.cuda.max_memory_reserved(self._device))


def has_cuda() -> bool:
    return torch.cuda.is_available()
