"""Loading weights: hub id or local folder, revision, device, dtype, offline.

Every transformers backend is an :class:`HFModel`: it takes a model id and the
same :class:`SourceArgs`, loads its weights through :func:`load_model` and
records a :class:`~worker.models.base.ModelInfo` the same way; an image-text
backend (captioner, chat VLM) is an :class:`HFImageTextModel`, which loads its
processor too.

``HF_HUB_OFFLINE=1`` is honoured by huggingface_hub itself; ``offline=True``
adds ``local_files_only`` so a missing file fails at start instead of reaching
for the network. The revision recorded with results is the hub commit the
files came from, or for a local folder a fingerprint of its files.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypedDict, Unpack

import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from worker.models.base import Generation, ModelInfo, check_batch
from worker.models.device import out_of_memory_as_transient, pick_device, pick_dtype

_FINGERPRINT_BYTES = 1 << 20


@dataclass(frozen=True)
class Source:
    """Where one model comes from and how it runs."""

    model_id: str
    revision: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    offline: bool = False

    def hub_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"revision": self.revision}
        if self.offline:
            kwargs["local_files_only"] = True
        return kwargs


class SourceArgs(TypedDict, total=False):
    """Where a model comes from and how it runs, beside its id: what every backend takes."""

    revision: str | None
    device: str
    dtype: str
    offline: bool


def folder_fingerprint(folder: Path) -> str:
    """Stable id of a local model folder: its config and the size, head and tail of
    each weight file (hashing whole multi-GB files at every start would be slow)."""
    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        digest.update(path.name.encode())
        size = path.stat().st_size
        digest.update(str(size).encode())
        with path.open("rb") as f:
            digest.update(f.read(_FINGERPRINT_BYTES))
            if size > 2 * _FINGERPRINT_BYTES:
                f.seek(-_FINGERPRINT_BYTES, 2)
                digest.update(f.read())
    return "local-" + digest.hexdigest()[:16]


def model_name(source: Source) -> str:
    """The name results carry: the hub id, or a local folder's own name (its path says
    where this worker keeps it, which is no business of a client's)."""
    folder = Path(source.model_id)
    return folder.name if folder.is_dir() else source.model_id


def resolved_revision(source: Source, model: Any) -> str | None:
    folder = Path(source.model_id)
    if folder.is_dir():
        return folder_fingerprint(folder)
    return getattr(model.config, "_commit_hash", None) or source.revision


def load_model(auto_cls: Any, source: Source) -> tuple[Any, torch.device, torch.dtype]:
    """``auto_cls.from_pretrained`` on the chosen device and dtype, in eval mode."""
    device = pick_device(source.device)
    dtype = pick_dtype(source.dtype, device)
    with out_of_memory_as_transient(f"loading {source.model_id}"):
        model = auto_cls.from_pretrained(source.model_id, dtype=dtype, **source.hub_kwargs())
        model = model.to(device)
    model.eval()
    return model, device, dtype


def generate(model: Any, inputs: dict[str, Any], kwargs: dict[str, Any], *,
             seed: int | None, what: str) -> torch.Tensor:
    """One ``generate`` call; seeded when sampling; OOM becomes ``OutOfMemoryError``."""
    if seed is not None:
        torch.manual_seed(seed)
    with torch.inference_mode(), out_of_memory_as_transient(what):
        return model.generate(**inputs, **kwargs)


class HFModel:
    """A transformers model loaded for one role: in eval mode on its device and dtype,
    with the :class:`ModelInfo` recorded with its results."""

    role: ClassVar[str]

    def __init__(self, auto_cls: Any, source: Source, generation: Generation | None = None) -> None:
        self.model, self.device, self.dtype = load_model(auto_cls, source)
        self.info = ModelInfo(
            model_id=model_name(source),
            revision=resolved_revision(source, self.model),
            role=self.role,
            generation=generation.as_dict() if generation is not None else {},
            source=source.model_id,
        )

    def _on_device(self, inputs: Any) -> Any:
        """A processor's or tokenizer's output on this model's device, pixel values in its
        dtype: the batch's largest tensors, so running out of memory here is
        :class:`OutOfMemoryError` too (split the batch), as in the model call."""
        with out_of_memory_as_transient(f"{self.info.model_id} inputs"):
            moved = inputs.to(self.device)
            if "pixel_values" in moved:
                moved["pixel_values"] = moved["pixel_values"].to(self.dtype)
        return moved

    def _new_texts(
        self, inputs: Any, kwargs: dict[str, Any], *, seed: int | None, decoder: Any, rows: int
    ) -> list[str]:
        """Generate after prompts padded on the left and decode only the new tokens:
        one text for each of the ``rows`` prompts."""
        what = f"{self.info.model_id} generate"
        output = generate(self.model, dict(inputs), kwargs, seed=seed, what=what)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        texts = [t.strip() for t in decoder.batch_decode(new_tokens, skip_special_tokens=True)]
        check_batch(what, len(texts), rows)
        return texts


class HFImageTextModel(HFModel):
    """An ``AutoModelForImageTextToText`` with its processor (given, or loaded from the
    same source) and its generation settings."""

    padding_side: ClassVar[str | None] = None  # the tokenizer's, where the role needs one

    def __init__(
        self,
        model_id: str,
        *,
        max_new_tokens: int = 40,
        num_beams: int = 1,
        processor: Any = None,
        **where: Unpack[SourceArgs],
    ) -> None:
        source = Source(model_id, **where)
        self.processor = processor or AutoProcessor.from_pretrained(
            model_id, **source.hub_kwargs()
        )
        if self.padding_side is not None:
            self.processor.tokenizer.padding_side = self.padding_side
        self.generation = Generation(max_new_tokens=max_new_tokens, num_beams=num_beams)
        super().__init__(AutoModelForImageTextToText, source, self.generation)
