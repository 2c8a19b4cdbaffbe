"""``captionq bench-batch``: the batch-size search on a fake memory probe (a model whose
peak grows with the batch), and the refusal without CUDA, for real."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from worker.batchsize import search
from worker.errors import OutOfMemoryError

pytestmark = pytest.mark.unit

GIB = 1024**3


class FakeGpu:
    """A device of ``total`` bytes: a batch of n peaks at ``base + n * per_image``; past
    ``oom_at`` images the model raises out of memory instead."""

    def __init__(self, total: int, base: int, per_image: int, oom_at: int | None = None) -> None:
        self._total, self._base, self._per = total, base, per_image
        self._oom_at = oom_at
        self._peak = 0
        self.tried: list[int] = []

    def total(self) -> int:
        return self._total

    def reset_peak(self) -> None:
        self._peak = 0

    def peak(self) -> int:
        return self._peak

    def run(self, n: int) -> None:
        self.tried.append(n)
        if self._oom_at is not None and n > self._oom_at:
            raise OutOfMemoryError(f"batch of {n}: out of accelerator memory")
        self._peak = self._base + n * self._per


def _clock() -> object:
    ticks = iter(range(10_000))
    return lambda: float(next(ticks))


@pytest.mark.parametrize(
    ("total", "base", "per_image", "largest"),
    [
        (80 * GIB, 10 * GIB, GIB // 2, 124),
        (16 * GIB, 2 * GIB, 3 * GIB, 4),
        (24 * GIB, GIB, GIB, 20),
    ],
)
def test_the_largest_batch_within_the_headroom_is_found(
    total: int, base: int, per_image: int, largest: int
) -> None:
    gpu = FakeGpu(total, base, per_image)
    found = search(gpu.run, probe=gpu, headroom=0.9, max_batch=256, clock=_clock())
    assert found.largest == largest
    assert base + largest * per_image <= total * 0.9 < base + (largest + 1) * per_image
    sizes = [t.batch for t in found.trials]
    assert len(sizes) == len(set(sizes))  # no size searched twice
    assert len(sizes) <= 2 * 9  # doubling then halving: logarithmic
    # A size runs once from an emptied cache for its peak; one that fits runs again,
    # warm, for its images/s.
    assert sorted(gpu.tried) == sorted(t.batch for t in found.trials for _ in range(1 + t.fits))
    assert all(t.images_per_s is not None for t in found.trials if t.fits)
    assert all(t.images_per_s is None for t in found.trials if not t.fits)


def test_out_of_memory_means_too_big() -> None:
    gpu = FakeGpu(80 * GIB, GIB, GIB // 100, oom_at=37)  # runs out before the headroom
    found = search(gpu.run, probe=gpu, headroom=0.9, max_batch=256, clock=_clock())
    assert found.largest == 37
    too_big = [t for t in found.trials if not t.fits]
    assert too_big
    assert all(t.peak_bytes is None for t in too_big)


def test_everything_fits_up_to_the_cap() -> None:
    gpu = FakeGpu(80 * GIB, GIB, 1024)
    found = search(gpu.run, probe=gpu, headroom=0.9, max_batch=48, clock=_clock())
    assert found.largest == 48
    assert max(gpu.tried) == 48
    assert all(t.images_per_s == t.batch for t in found.trials)  # one tick per timed run


def test_not_even_one_image_fits() -> None:
    gpu = FakeGpu(8 * GIB, 8 * GIB, GIB)
    found = search(gpu.run, probe=gpu, headroom=0.9, max_batch=64, clock=_clock())
    assert found.largest is None
    assert gpu.tried == [1]


@pytest.mark.parametrize(("headroom", "max_batch"), [(0.0, 8), (1.5, 8), (0.9, 0)])
def test_bad_bounds_are_refused(headroom: float, max_batch: int) -> None:
    gpu = FakeGpu(8 * GIB, GIB, GIB)
    with pytest.raises(ValueError, match="headroom|max_batch"):
        search(gpu.run, probe=gpu, headroom=headroom, max_batch=max_batch)


def test_without_cuda_the_command_refuses_with_a_code() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this host has CUDA: the refusal is for hosts without it")
    env = {**os.environ, "CAPTIONER_MODEL": "captionq/noop", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "producers.cli", "bench-batch", "--max-batch", "4"],
        capture_output=True, text=True, env=env, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "error[accelerator_missing]" in done.stderr
    assert "Traceback" not in done.stderr
