"""Chat vision-language backend: image + instruction → text, through the chat template.

Idefics3 / SmolVLM and other ``AutoModelForImageTextToText`` models whose
processor carries a chat template. One model captions (a fixed instruction)
and writes every styled variant from the image itself. Prompts are padded on
the left so that every row generates from its own last token.

Qwen2-VL and SmolVLM2 processors need torchvision in transformers 5, which
this project does not install; Idefics3 (SmolVLM v1) processors do not.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

from worker.models.base import Generation, ModelInfo, WriteRequest, batch_seed, check_batch
from worker.models.loading import Source, generate, load_model, resolved_revision

CAPTION_INSTRUCTION = "Describe this image in one factual sentence."


class HFChatVLM:
    sees_image = True

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
        self.processor.tokenizer.padding_side = "left"
        self.model, self.device, self.dtype = load_model(AutoModelForImageTextToText, source)
        self.generation = Generation(max_new_tokens=max_new_tokens, num_beams=num_beams)
        self.info = ModelInfo(
            model_id=model_id,
            revision=resolved_revision(source, self.model),
            role="vlm",
            generation=self.generation.as_dict(),
        )

    def _prompt(self, instruction: str) -> str:
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}
        ]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def _run(self, images: Sequence[Image.Image], instructions: Sequence[str],
             seed: int | None) -> list[str]:
        if not images:
            return []
        inputs = self.processor(
            text=[self._prompt(i) for i in instructions],
            images=[[image] for image in images],
            padding=True,
            return_tensors="pt",
        ).to(self.device)
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        output = generate(
            self.model,
            dict(inputs),
            self.generation.kwargs(sampled=seed is not None),
            seed=seed,
            what=f"{self.info.model_id} generate",
        )
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        texts = [t.strip() for t in self.processor.batch_decode(new_tokens,
                                                                skip_special_tokens=True)]
        check_batch(f"{self.info.model_id} generate", len(texts), len(images))
        return texts

    def caption(
        self,
        images: Sequence[Image.Image],
        *,
        prompts: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> list[str]:
        """``prompts`` are instructions here (a chat model takes no prefix)."""
        if prompts is not None:
            check_batch("prompts", len(prompts), len(images))
        return self._run(images, prompts or [CAPTION_INSTRUCTION] * len(images), seed)

    def write(self, requests: Sequence[WriteRequest]) -> list[str]:
        return self._run(
            [r.image for r in requests],
            [r.instruction for r in requests],
            batch_seed([r.seed for r in requests]) if requests else None,
        )

    def warm_up(self) -> None:
        self.caption([Image.new("RGB", (64, 64), (127, 127, 127))])
