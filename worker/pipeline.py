"""The pure pipeline: loaded image bytes in, written results (or per-item errors) out.

decode → write (one batched pass per stage) → outcomes. No Celery, no database.
One bad image fails its own item; an accelerator out of memory splits the batch
and retries the halves, down to a single item.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from PIL import Image

from schemas.errors import CaptionError, ErrorCode, PermanentError
from worker.errors import OutOfMemoryError
from worker.models import Engine
from worker.models.base import check_batch
from worker.writing import JobSpec, Written, write_batch

Outcome = Written | CaptionError
Decoder = Callable[[bytes], Image.Image]


@dataclass(frozen=True)
class Item:
    spec: JobSpec
    data: bytes | CaptionError  # the image bytes, or why they could not be had


def run(items: Sequence[Item], *, engine: Engine, decode: Decoder) -> list[Outcome]:
    outcomes: list[Outcome | None] = [None] * len(items)
    ready: list[int] = []
    images: list[Image.Image] = []
    for i, item in enumerate(items):
        if isinstance(item.data, CaptionError):
            outcomes[i] = item.data
            continue
        try:
            images.append(decode(item.data))
        except CaptionError as exc:
            outcomes[i] = exc
            continue
        ready.append(i)
    written = _write_split(tuple(items[i].spec for i in ready), tuple(images), engine)
    for i, outcome in zip(ready, written, strict=True):
        outcomes[i] = outcome
    assert all(o is not None for o in outcomes)
    return outcomes  # type: ignore[return-value]


def _write_split(
    specs: tuple[JobSpec, ...], images: tuple[Image.Image, ...], engine: Engine
) -> list[Outcome]:
    if not specs:
        return []
    try:
        results: list[Outcome] = list(write_batch(specs, images, engine=engine))
    except OutOfMemoryError as exc:
        if len(specs) == 1:
            return [exc]
        half = len(specs) // 2
        return _write_split(specs[:half], images[:half], engine) + _write_split(
            specs[half:], images[half:], engine
        )
    except CaptionError as exc:
        return [exc] * len(specs)
    except Exception as exc:  # a model bug must fail these jobs, not the worker
        error = PermanentError(f"{type(exc).__name__}: {exc}", code=ErrorCode.model_error)
        error.__cause__ = exc
        return [error] * len(specs)
    check_batch("write_batch", len(results), len(specs))
    return results
