"""A model that does no work: measures the cost of everything around the model.

``model_s`` makes each call take that long (sleeping, no CPU), standing in for a model's
time on an accelerator: benchmarks and fault scenarios that need a batch to last."""

from __future__ import annotations

import time
from collections.abc import Sequence

from PIL import Image

from worker.models.base import Captioner, ModelInfo

NOOP_MODEL_ID = "captionq/noop"


class NoopCaptioner(Captioner):
    info = ModelInfo(model_id=NOOP_MODEL_ID, revision=None, role="noop")

    def __init__(self, *, model_s: float = 0.0) -> None:
        self.model_s = model_s

    def _caption(
        self, images: Sequence[Image.Image], prompts: Sequence[str] | None, seed: int | None
    ) -> list[str]:
        if self.model_s:
            time.sleep(self.model_s)
        prefixes = prompts or [""] * len(images)
        return [
            f"{p} an image of {img.width}x{img.height} pixels".strip()
            for p, img in zip(prefixes, images, strict=True)
        ]

    def warm_up(self) -> None:
        return None
