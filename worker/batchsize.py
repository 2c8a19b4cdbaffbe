"""Batch size chosen on evidence: the largest batch that fits the accelerator's memory
headroom for the configured model at the configured ``MAX_NEW_TOKENS``, and the
images/s of every batch size tried (``captionq bench-batch``).

The search doubles the batch (1, 2, 4, ...) while it fits, then halves the gap
between the largest that fitted and the smallest that did not. A batch fits when
its peak memory stays within ``headroom`` of the memory this process can have (free
at the start, with what it holds already: not the CUDA context, nor other processes')
and the model did not run out of memory. Every trial writes a whole batch through the
pipeline's model calls, each generating its longest (``MAX_NEW_TOKENS``, a copywriter
``COPY_MAX_NEW_TOKENS``): a first run from an emptied cache gives the peak, a second
run the images/s.

The search is pure: it calls ``trial(n)`` and reads a :class:`MemoryProbe`.
``worker.models.device.CudaMemory`` is the real probe; without CUDA the command is
refused with ``accelerator_missing``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

from PIL import Image

from schemas.platforms import PLATFORMS
from schemas.settings import WorkerSettings
from schemas.styles import STYLES
from worker import pipeline
from worker.errors import NoAcceleratorError, OutOfMemoryError
from worker.pipeline import JobSpec


class MemoryProbe(Protocol):
    """The accelerator's memory as the search reads it, in bytes."""

    def total(self) -> int:
        """The memory this process can have: free now, with what it holds already."""
        ...

    def reset_peak(self) -> None: ...

    def peak(self) -> int: ...


@dataclass(frozen=True)
class Trial:
    batch: int
    fits: bool
    peak_bytes: int | None  # None when it ran out of memory
    images_per_s: float | None


@dataclass
class Search:
    total_bytes: int
    headroom_bytes: int
    trials: list[Trial] = field(default_factory=list)

    @property
    def largest(self) -> int | None:
        """The largest batch that fitted (None: not even one image)."""
        fitted = [t.batch for t in self.trials if t.fits]
        return max(fitted) if fitted else None

    @property
    def fastest(self) -> int | None:
        """The batch size that fitted with the most images/s."""
        fitted = [t for t in self.trials if t.fits and t.images_per_s is not None]
        return max(fitted, key=lambda t: t.images_per_s or 0.0).batch if fitted else None

    def as_dict(self) -> dict[str, object]:
        return {
            "total_bytes": self.total_bytes,
            "headroom_bytes": self.headroom_bytes,
            "largest_batch": self.largest,
            "fastest_batch": self.fastest,
            "trials": [t.__dict__ for t in sorted(self.trials, key=lambda t: t.batch)],
        }


def search(
    trial: Callable[[int], None],
    *,
    probe: MemoryProbe,
    headroom: float = 0.9,
    max_batch: int = 256,
    clock: Callable[[], float] = time.perf_counter,
) -> Search:
    """Find the largest batch up to ``max_batch`` whose run of ``trial`` peaks within
    ``headroom`` (a fraction) of the device's memory; time each one tried."""
    if not 0 < headroom <= 1:
        raise ValueError(f"headroom {headroom} is not a fraction in (0, 1]")
    if max_batch < 1:
        raise ValueError(f"max_batch {max_batch} is below 1")
    total = probe.total()
    found = Search(total_bytes=total, headroom_bytes=int(total * headroom))

    def attempt(n: int) -> bool:
        probe.reset_peak()
        try:
            trial(n)  # from an emptied cache: the peak
            peak = probe.peak()
            fits = peak <= found.headroom_bytes
            elapsed = None
            if fits:  # timed again, warm: the images/s the worker will see
                started = clock()
                trial(n)
                elapsed = max(clock() - started, 1e-9)
        except OutOfMemoryError:
            found.trials.append(Trial(n, fits=False, peak_bytes=None, images_per_s=None))
            return False
        speed = n / elapsed if elapsed is not None else None
        found.trials.append(Trial(n, fits=fits, peak_bytes=peak, images_per_s=speed))
        return fits

    fitted, failed = _double(attempt, max_batch)
    while failed - fitted > 1 and fitted:  # then halve the gap
        middle = (fitted + failed) // 2
        if attempt(middle):
            fitted = middle
        else:
            failed = middle
    return found


def _double(attempt: Callable[[int], bool], max_batch: int) -> tuple[int, int]:
    """Try 1, 2, 4, ... while they fit, then ``max_batch`` itself: the largest batch
    that fitted (0: none) and the smallest that did not (``max_batch + 1``: none)."""
    fitted, n = 0, 1
    while n <= max_batch:
        if not attempt(n):
            return fitted, n
        fitted, n = n, n * 2
    if fitted < max_batch:
        return (max_batch, max_batch + 1) if attempt(max_batch) else (fitted, max_batch)
    return fitted, max_batch + 1


def measure(
    settings: WorkerSettings,
    *,
    max_batch: int,
    headroom: float,
    styles: int = 1,
    platforms: int = 1,
    variants: int = 3,
) -> Search:
    """:func:`search` on this process's accelerator with the configured models: each
    trial is one batch of ``n`` images through every model call of the pipeline
    (:func:`worker.pipeline.draft`), each image a job of ``styles`` x ``platforms`` x
    ``variants`` variant slots (a job's default: 1 x 1 x 3)."""
    from worker.models import load_engine
    from worker.models.device import CudaMemory, has_cuda, pick_device

    device = pick_device(settings.model_device)
    if not has_cuda() or device.type != "cuda":
        raise NoAcceleratorError(
            f"no CUDA device to measure on (MODEL_DEVICE={settings.model_device}): a batch "
            "size found on a CPU says nothing of a GPU's memory"
        )
    engine = load_engine(settings)
    for model in {id(m): m for m in (engine.captioner, engine.writer)}.values():
        generation = getattr(model, "generation", None)
        if generation is not None and not getattr(model, "served", False):
            # every call runs to its longest (MAX_NEW_TOKENS, a copywriter's
            # COPY_MAX_NEW_TOKENS): the largest a batch can take
            model.generation = replace(generation, min_new_tokens=generation.max_new_tokens)
    images = [Image.effect_noise((384, 384), 48 + i % 64).convert("RGB") for i in range(max_batch)]
    job_styles = _first(STYLES, "promotional", styles)
    job_platforms = _first(PLATFORMS, "instagram", platforms)
    specs = [JobSpec(f"bench-{i}", job_styles, job_platforms, variants, seed=i)
             for i in range(max_batch)]  # fmt: skip

    def trial(n: int) -> None:
        pipeline.draft(specs[:n], images[:n], engine=engine)

    trial(1)  # warm-up: the first call pays for kernels and caches
    return search(trial, probe=CudaMemory(device), headroom=headroom, max_batch=max_batch)


def _first(names: Iterable[str], first: str, n: int) -> tuple[str, ...]:
    """``n`` names of a catalogue: ``first``, then the others in order."""
    return (first, *sorted(set(names) - {first}))[:n]
