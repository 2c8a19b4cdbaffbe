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
from transformers import AutoModelForImageTextToText, AutoProcessor

from worker.models.base import Generation, ModelInfo, check_batch
from worker.models.loading import Source, generate, load_model, resolved_revision


class HFCaptioner:
    def __init__(
        self,
        model_id: str,
        *,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        max_new_tokens: int = 40,
        num_beams: int = 1,
        offline: bool = False,
        processor: Any = None,
    ) -> None:
        source = Source(model_id, revision, device, dtype, offline)
        self.processor = processor or AutoProcessor.from_pretrained(
            model_id, **source.hub_kwargs()
        )
        self.model, self.device, self.dtype = load_model(AutoModelForImageTextToText, source)
        self.generation = Generation(max_new_tokens=max_new_tokens, num_beams=num_beams)
        self.info = ModelInfo(
            model_id=model_id,
            revision=resolved_revision(source, self.model),
            role="captioner",
            generation=self.generation.as_dict(),
        )

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
        inputs = inputs.to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        return dict(inputs)

    def caption(
        self,
        images: Sequence[Image.Image],
        *,
        prompts: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> list[str]:
        if not images:
            return []
        if prompts is not None:
            check_batch("prompts", len(prompts), len(images))
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

    def warm_up(self) -> None:
        self.caption([Image.new("RGB", (64, 64), (127, 127, 127))])
