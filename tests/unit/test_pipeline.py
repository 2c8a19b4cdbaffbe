"""The pure pipeline with a real tiny BLIP: per-item isolation and the out-of-memory split."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
import torch
from PIL import Image

from schemas.errors import CaptionError, ErrorCode, PermanentError
from schemas.settings import WorkerSettings
from worker import pipeline
from worker.errors import OutOfMemoryError
from worker.intake import decoder
from worker.models import Engine, load_engine
from worker.pipeline import JobSpec, Written


def png(color: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), color).save(buf, format="PNG")
    return buf.getvalue()


def spec(n: int) -> JobSpec:
    return JobSpec(job_id=f"job_{n}", styles=("minimal",), platforms=("x",), variants=1, seed=n)


@pytest.fixture(scope="module")
def settings(tiny_blip: Path) -> WorkerSettings:
    return WorkerSettings(captioner_model=str(tiny_blip), model_device="cpu", max_new_tokens=4)


@pytest.fixture(scope="module")
def engine(settings: WorkerSettings) -> Engine:
    return load_engine(settings)


class OutOfMemoryAbove(torch.nn.Module):
    """A vision tower that runs out of memory for batches larger than ``limit``."""

    def __init__(self, inner: torch.nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.batches = inner, limit, []  # type: ignore[assignment]

    def forward(self, pixel_values: torch.Tensor, *args: object, **kwargs: object) -> object:
        self.batches.append(pixel_values.shape[0])
        if pixel_values.shape[0] > self.limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 4.00 GiB")
        return self.inner(pixel_values, *args, **kwargs)


def test_a_bad_item_fails_alone_and_the_rest_of_the_batch_completes(
    engine: Engine, settings: WorkerSettings
) -> None:
    fetched = PermanentError("fetch refused", code=ErrorCode.url_blocked)
    items = [
        pipeline.Item(spec(0), png((200, 0, 0))),
        pipeline.Item(spec(1), b"not an image at all"),
        pipeline.Item(spec(2), fetched),
        pipeline.Item(spec(3), png((0, 0, 200))),
        pipeline.Item(spec(4), png((0, 0, 200))[:60]),
    ]
    outcomes = pipeline.run(items, engine=engine, decode=decoder(settings))
    assert [type(o).__name__ for o in outcomes] == [
        "Written",
        "ImageError",
        "PermanentError",
        "Written",
        "ImageError",
    ]
    assert outcomes[1].code == ErrorCode.image_unreadable  # type: ignore[union-attr]
    assert outcomes[2] is fetched
    assert outcomes[4].code == ErrorCode.image_truncated  # type: ignore[union-attr]
    assert [o.job_id for o in outcomes if isinstance(o, Written)] == ["job_0", "job_3"]


def test_out_of_memory_splits_the_batch_down_to_what_fits(
    engine: Engine, settings: WorkerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = engine.captioner.model  # type: ignore[attr-defined]
    tower = OutOfMemoryAbove(model.vision_model, limit=2)
    monkeypatch.setitem(model._modules, "vision_model", tower)  # restored after the test
    items = [pipeline.Item(spec(n), png((n * 40, 90, 90))) for n in range(6)]
    outcomes = pipeline.run(items, engine=engine, decode=decoder(settings))
    assert all(isinstance(o, Written) for o in outcomes), outcomes
    assert [o.job_id for o in outcomes] == [f"job_{n}" for n in range(6)]  # type: ignore[union-attr]
    assert tower.batches[0] == 6  # tried whole first
    assert max(b for b in tower.batches if b <= 2) <= 2  # then halves, until they fit


def test_out_of_memory_at_a_single_item_is_a_transient_failure_of_that_item(
    engine: Engine, settings: WorkerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = engine.captioner.model  # type: ignore[attr-defined]
    monkeypatch.setitem(
        model._modules, "vision_model", OutOfMemoryAbove(model.vision_model, limit=0)
    )
    items = [pipeline.Item(spec(n), png((n, n, n))) for n in range(3)]
    outcomes = pipeline.run(items, engine=engine, decode=decoder(settings))
    assert all(isinstance(o, OutOfMemoryError) for o in outcomes)
    assert all(isinstance(o, CaptionError) and o.code == ErrorCode.out_of_memory for o in outcomes)


def test_a_model_bug_fails_the_batch_with_model_error_not_the_worker(
    engine: Engine, settings: WorkerSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object, **__: object) -> None:
        raise ValueError("shape mismatch in a layer")

    monkeypatch.setattr(engine.captioner.model, "generate", broken)  # type: ignore[attr-defined]
    items = [pipeline.Item(spec(n), png((n, 50, 50))) for n in range(2)]
    outcomes = pipeline.run(items, engine=engine, decode=decoder(settings))
    assert [o.code for o in outcomes] == [ErrorCode.model_error] * 2  # type: ignore[union-attr]
    assert "shape mismatch" in outcomes[0].message  # type: ignore[union-attr]
