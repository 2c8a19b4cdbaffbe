"""Captioning backend: any ``AutoModelForImageTextToText`` captioner with its processor.

BLIP, GIT and the like, from a hub id or a local folder. Captions are greedy
(or beam search); with a seed they are sampled. A text prompt is a prefix the
caption continues (conditional captioning): the model's output starts with it.
Images sharing a prompt go through ``generate`` together, so prefixes are
never padded (BLIP and GIT use absolute positions; padding would shift them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image

from worker.models.base import Captioner, check_batch
from worker.models.loading import HFImageTextModel, generate


class HFCaptioner(Captioner, HFImageTextModel):
    role = "captioner"

    def _inputs(self, images: list[Image.Image], prompt: str | None) -> dict[str, Any]:
        if prompt is None:
            inputs = self.processor(images=images, return_tensors="pt")
        elif self.model.config.model_type == "git":
            # GIT continues [CLS] + prompt tokens (no [SEP]): the published recipe.
            tokenizer = self.processor.tokenizer
            ids = [tokenizer.cls_token_id, *tokenizer(prompt, add_special_tokens=False).input_ids]
            inputs = self.processor(images=images, return_tensors="pt")
            inputs["input_ids"] = inputs["pixel_values"].new_tensor([ids] * len(images)).long()
        else:
            inputs = self.processor(images=images, text=[prompt] * len(images),
                                    return_tensors="pt")
        return dict(self._on_device(inputs))

    def _caption(
        self, images: Sequence[Image.Image], prompts: Sequence[str] | None, seed: int | None
    ) -> list[str]:
        groups: dict[str | None, list[int]] = {}
        for i in range(len(images)):
            groups.setdefault(prompts[i] if prompts is not None else None, []).append(i)
        texts: list[str] = [""] * len(images)
        kwargs = self.generation.kwargs(sampled=seed is not None)
        for n, (prompt, members) in enumerate(groups.items()):
            output = generate(
                self.model,
                self._inputs([images[i] for i in members], prompt),
                kwargs,
                seed=None if seed is None else seed + n,
                what=f"{self.info.model_id} generate",
            )
            decoded = self.processor.batch_decode(output, skip_special_tokens=True)
            check_batch(f"{self.info.model_id} generate", len(decoded), len(members))
            for i, text in zip(members, decoded, strict=True):
                texts[i] = text.strip()
        return texts
