"""Tiny random models of each architecture, built once per session from config objects."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from schemas.settings import WorkerSettings
from worker.models import tiny


class Settings(WorkerSettings):
    """WorkerSettings plus the fields the models package reads with ``getattr``
    until they are added to ``schemas.settings``."""

    clip_model: str | None = None
    clip_revision: str | None = None
    offline: bool = False


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        name: builder(root / name)
        for name, builder in {
            "blip": tiny.build_tiny_blip,
            "git": tiny.build_tiny_git,
            "idefics3": tiny.build_tiny_idefics3,
            "qwen2": tiny.build_tiny_qwen2,
            "clip": tiny.build_tiny_clip,
        }.items()
    }


@pytest.fixture
def settings_for() -> Callable[..., Settings]:
    def make(captioner: Path, **extra: object) -> Settings:
        return Settings(captioner_model=str(captioner), model_device="cpu", max_new_tokens=6,
                        **extra)

    return make


@pytest.fixture
def images() -> list[Image.Image]:
    return [
        Image.new("RGB", (48, 32), (200, 30, 30)),
        Image.new("RGB", (20, 60), (10, 120, 10)),
        Image.new("L", (33, 33), 90),
    ]
