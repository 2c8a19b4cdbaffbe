"""A model that does no work: measures the cost of everything around the model."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from worker.models.base import Captioner, ModelInfo

NOOP_MODEL_ID = "captionq/noop"


class NoopCaptioner(Captioner):
    info = ModelInfo(model_id=NOOP_MODEL_ID, revision=None, role="noop")

    def _caption(
        self, images: Sequence[Image.Image], prompts: Sequence[str] | None, seed: int | None
    ) -> list[str]:
        prefixes = prompts or [""] * len(images)
        return [
            f"{p} an image of {img.width}x{img.height} pixels".strip()
            for p, img in zip(prefixes, images, strict=True)
        ]

    def warm_up(self) -> None:
        return None
