"""CLIP-S (Hessel et al. 2021, "CLIPScore"): the one definition, for serving and evaluation.

CLIP-S(c, v) = W * max(cos(E(PROMPT + c), E(v)), 0), W = 2.5, PROMPT = "A photo depicts ".
The worker's quality part ``image_text`` (``worker/quality.py``) and the evaluation
toolkit's CLIP-S and RefCLIP-S (``evaluation/clipscore.py``) both come from
:func:`clip_s` and :class:`HFClipScorer`'s embeddings, so the score a tenant's
threshold is calibrated on is the score the worker serves. Texts are cut to the
model's context (77 tokens for CLIP).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Unpack

import numpy as np
import torch
from PIL import Image
from transformers import AutoModel, AutoProcessor

from worker.models.base import check_batch
from worker.models.device import out_of_memory_as_transient
from worker.models.loading import HFModel, Source, SourceArgs

PROMPT = "A photo depicts "
W = 2.5


def clip_s(cosines: Sequence[float] | np.ndarray) -> np.ndarray:
    """CLIP-S from the cosines of prompted text and image embeddings: W * max(cos, 0)."""
    return W * np.clip(np.asarray(cosines, dtype=np.float64), 0, None)


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

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised image embeddings, (n, d) float32."""
        inputs = self._on_device(self.processor(images=[im.convert("RGB") for im in images],
                                                return_tensors="pt"))
        with torch.inference_mode(), out_of_memory_as_transient(f"{self.info.model_id} score"):
            out = _features(self.model.get_image_features(pixel_values=inputs["pixel_values"]))
        return torch.nn.functional.normalize(out.float(), dim=-1).cpu()

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised embeddings of ``PROMPT + text``, (n, d) float32."""
        tokens = self._on_device(self.processor(
            text=[PROMPT + t for t in texts], padding=True, truncation=True,
            max_length=self.max_length, return_tensors="pt",
        ))
        with torch.inference_mode(), out_of_memory_as_transient(f"{self.info.model_id} score"):
            out = _features(self.model.get_text_features(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]))
        return torch.nn.functional.normalize(out.float(), dim=-1).cpu()

    def cosine(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[float]:
        """Cosine of each image with its prompted text."""
        check_batch("clip texts", len(texts), len(images))
        if not images:
            return []
        cos = (self.embed_images(images) * self.embed_texts(texts)).sum(dim=-1)
        return [float(c) for c in cos]

    def clip_s(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[float]:
        return [float(s) for s in clip_s(self.cosine(images, texts))]

    def warm_up(self) -> None:
        self.cosine([Image.new("RGB", (64, 64), (127, 127, 127))], ["a grey square"])
