"""Model backends and the engine that holds them, loaded once per worker process.

Configuration names which model does what (``schemas.settings.WorkerSettings``):

- ``captioner_model``: the image model. A processor with a chat template makes it
  a chat VLM (Idefics3/SmolVLM: captions and, without a copywriter, writes every
  variant from the image); otherwise a captioner (BLIP, GIT: writes variants by
  continuing each style's prefix). ``captionq/noop`` measures everything but the model.
- ``copywriter_model``: optional instruct causal LM (Qwen2, Llama) that writes the
  variants from the caption.
- ``clip_model``: optional CLIP model for the image–text quality part.

``CAPTIONER_BACKEND=served`` / ``COPYWRITER_BACKEND=served`` answer a role from an
OpenAI-compatible server instead (``worker/models/served.py``); CLIP always runs
in this process, on its device (a small CLIP on the CPU of a GPU-less pool), or is off.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

from schemas.settings import WorkerSettings
from worker.models.base import (
    Captioner,
    Generation,
    ImageTextScorer,
    ModelInfo,
    Writer,
    WriteRequest,
)
from worker.models.noop import NOOP_MODEL_ID, NoopCaptioner
from worker.models.prefix import PrefixWriter

__all__ = [
    "Captioner",
    "Engine",
    "ImageTextScorer",
    "ModelInfo",
    "WriteRequest",
    "Writer",
    "load_engine",
]


@dataclass
class Engine:
    """Everything a worker process needs to write: loaded, warmed, reused.

    ``writer`` defaults to the captioner itself where it can write (a chat VLM),
    else to the captioner continuing style prefixes.
    """

    captioner: Captioner
    writer: Writer = field(default=None)  # type: ignore[assignment]
    scorer: ImageTextScorer | None = None

    def __post_init__(self) -> None:
        if self.writer is None:
            can_write = callable(getattr(self.captioner, "write", None))
            self.writer = self.captioner if can_write else PrefixWriter(self.captioner)  # type: ignore[assignment]

    #: the context a model call runs in, given whether that model runs on this process's
    #: device (a batch's turns: ``worker.batch``); none by default
    turn: Callable[[bool], AbstractContextManager[object]] = field(
        default=lambda on_device: nullcontext(), repr=False
    )

    def turn_of(self, model: object) -> AbstractContextManager[object]:
        """The context of one call of ``model``: a model in this process takes the
        device's turn; a served one waits on the network and takes none, so the batches
        of a served worker send their requests side by side."""
        return self.turn(not getattr(model, "served", False))

    def taking_turns(self, turn: Callable[[bool], AbstractContextManager[object]]) -> Engine:
        return replace(self, turn=turn)

    def warm_up(self) -> None:
        for model in {id(m): m for m in (self.captioner, self.writer, self.scorer)}.values():
            warm = getattr(model, "warm_up", None)
            if warm is not None:
                warm()


def _image_model(settings: WorkerSettings, common: dict[str, Any]) -> Captioner:
    if settings.captioner_model == NOOP_MODEL_ID:
        return NoopCaptioner(model_s=settings.noop_model_s or 0.0)
    if settings.captioner_backend == "served":
        from worker.models.served import ServedVLM, server_for

        return ServedVLM(server_for(settings, "captioner"),
                         Generation(max_new_tokens=settings.max_new_tokens))
    from transformers import AutoProcessor

    from worker.models.captioner import HFCaptioner
    from worker.models.loading import Source
    from worker.models.vlm import HFChatVLM

    source = Source(settings.captioner_model, settings.captioner_revision,
                    offline=common["offline"])
    processor = AutoProcessor.from_pretrained(source.model_id, **source.hub_kwargs())
    backend = HFChatVLM if getattr(processor, "chat_template", None) else HFCaptioner
    return backend(
        settings.captioner_model,
        revision=settings.captioner_revision,
        max_new_tokens=settings.max_new_tokens,
        num_beams=settings.num_beams,
        processor=processor,
        **common,
    )


def load_engine(settings: WorkerSettings) -> Engine:
    """Load every configured model once, on the chosen device and dtype, and warm it up."""
    common: dict[str, Any] = {
        "device": settings.model_device,
        "dtype": settings.model_dtype,
        "offline": settings.offline,
    }
    captioner = _image_model(settings, common)
    writer: Writer | None = None
    if settings.copywriter_backend == "served":
        from worker.models.served import ServedWriter, server_for

        writer = ServedWriter(server_for(settings, "copywriter"),
                              Generation(max_new_tokens=settings.copy_max_new_tokens))
    elif settings.copywriter_model:
        from worker.models.rewriter import HFRewriter

        writer = HFRewriter(
            settings.copywriter_model,
            revision=settings.copywriter_revision,
            max_new_tokens=settings.copy_max_new_tokens,
            **common,
        )
    scorer: ImageTextScorer | None = None
    clip_model = settings.clip_model
    if clip_model:
        from worker.models.clip import HFClipScorer

        scorer = HFClipScorer(clip_model, revision=settings.clip_revision,
                              **common)
    engine = Engine(captioner=captioner, writer=writer, scorer=scorer)  # type: ignore[arg-type]
    engine.warm_up()
    return engine
