"""Image–text agreement: a CLIP model's cosine similarity between image and text.

Used for the ``image_text`` quality part (CLIP-S = 2.5 * max(cos, 0)). Texts
are cut to the model's context (77 tokens for CLIP).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Unpack

import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

from worker.models.base import check_batch
from worker.models.device import out_of_memory_as_transient
from worker.models.loading import HFModel, Source, SourceArgs


def _features(output: Any) -> torch.Tensor:
    # transformers 5 returns a model output (pooled features) where 4.x returned a tensor.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class HFClipScorer(HFModel):
    role = "clip"

    def __init__(self, model_id: str, **where: Unpack[SourceArgs]) -> None:
        source = Source(model_id, **where)
        self.processor = AutoProcessor.from_pretrained(model_id, **source.hub_kwargs())
        super().__init__(AutoModel, source)
        self.max_length = int(getattr(self.model.config.text_config,
                                      "max_position_embeddings", 77))

    def cosine(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[float]:
        check_batch("clip texts", len(texts), len(images))
        if not images:
            return []
        inputs = self.processor(
            images=list(images), text=list(texts), padding=True, truncation=True,
            max_length=self.max_length, return_tensors="pt",
        ).to(self.device)
        with torch.inference_mode(), out_of_memory_as_transient(f"{self.info.model_id} score"):
            image = _features(self.model.get_image_features(
                pixel_values=inputs["pixel_values"].to(self.dtype)))
            text = _features(self.model.get_text_features(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]))
        cos = torch.nn.functional.cosine_similarity(image.float(), text.float(), dim=-1)
        return [float(c) for c in cos.cpu()]

    def warm_up(self) -> None:
        self.cosine([Image.new("RGB", (64, 64), (127, 127, 127))], ["a grey square"])
