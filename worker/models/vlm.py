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

from PIL import Image

from worker.models.base import Captioner, WriteRequest, batch_seed
from worker.models.loading import HFImageTextModel

CAPTION_INSTRUCTION = "Describe this image in one factual sentence."


class HFChatVLM(Captioner, HFImageTextModel):
    role = "vlm"
    padding_side = "left"
    sees_image = True

    def _prompt(self, instruction: str) -> str:
        messages = [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}
        ]
        return self.processor.apply_chat_template(messages, add_generation_prompt=True)

    def _run(self, images: Sequence[Image.Image], instructions: Sequence[str],
             seed: int | None) -> list[str]:
        if not images:
            return []
        inputs = self._on_device(self.processor(
            text=[self._prompt(i) for i in instructions],
            images=[[image] for image in images],
            padding=True,
            return_tensors="pt",
        ))
        return self._new_texts(
            inputs,
            self.generation.kwargs(sampled=seed is not None),
            seed=seed,
            decoder=self.processor,
            rows=len(images),
        )

    def _caption(
        self, images: Sequence[Image.Image], prompts: Sequence[str] | None, seed: int | None
    ) -> list[str]:
        """``prompts`` are instructions here (a chat model takes no prefix)."""
        return self._run(images, prompts or [CAPTION_INSTRUCTION] * len(images), seed)

    def write(self, requests: Sequence[WriteRequest]) -> list[str]:
        return self._run(
            [r.image for r in requests],
            [r.instruction for r in requests],
            batch_seed([r.seed for r in requests]) if requests else None,
        )
