"""What a model backend is, to the rest of the worker.

Three roles:

- :class:`Captioner`: image → literal caption, batched. A base class: every image
  backend shares its batch contract and its warm-up, and writes ``_caption``.
- :class:`Writer`: one :class:`WriteRequest` (image, caption, instruction, prefix,
  seed) → one ad-copy text, batched. A chat VLM reads the image and the
  instruction; a text rewriter reads the instruction (which quotes the
  caption); a plain captioner continues the style prefix.
- :class:`ImageTextScorer`: image + text → cosine similarity (CLIP).

Writers and scorers are protocols (a plain captioner writes through
``PrefixWriter``, which is no model).

Backends are loaded once per worker process and reused for every batch. Only
this package imports torch and transformers.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from PIL import Image

from schemas.errors import CaptionError

# One output of a batched call: the text, or the error that failed that item alone (a
# served backend's request that failed; in-process backends fail a whole call instead).
Text = str | CaptionError


class Drafted(str):
    """A writer's text that says how it was asked for, for the variant's provenance: a
    served model's ``list`` (one of N texts of one structured request) or
    ``per_variant`` (a request of its own)."""

    mode: str

    def __new__(cls, text: str, mode: str) -> Drafted:
        made = super().__new__(cls, text)
        made.mode = mode
        return made


@dataclass(frozen=True)
class ModelInfo:
    """Recorded with every result: which weights wrote it.

    ``model_id`` is the model's name as clients see it (the hub id, or a local folder's
    name) and ``revision`` pins the weights; ``source`` is where this worker loaded them
    from (a hub id, or a folder's path: for operators, kept in provenance only)."""

    model_id: str
    revision: str | None
    role: str  # "captioner", "vlm", "rewriter", "clip", "noop"
    generation: dict[str, Any] = field(default_factory=dict)
    source: str = ""


@dataclass(frozen=True)
class Generation:
    """Generation settings of one role; recorded in provenance."""

    max_new_tokens: int = 40
    num_beams: int = 1
    top_p: float = 0.9
    temperature: float = 0.8
    min_new_tokens: int = 0  # benchmarks set it to max_new_tokens: equal work per call

    def kwargs(self, *, sampled: bool) -> dict[str, Any]:
        common: dict[str, Any] = {"max_new_tokens": self.max_new_tokens}
        if self.min_new_tokens:
            common["min_new_tokens"] = self.min_new_tokens
        if sampled:
            return {**common, "do_sample": True, "top_p": self.top_p,
                    "temperature": self.temperature, "num_beams": 1}
        return {**common, "do_sample": False, "num_beams": self.num_beams}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class WriteRequest:
    """One variant to write. ``instruction`` is for chat/instruct models, ``prefix`` for
    captioners that continue a text prefix. ``job`` names the job it is for: requests of
    one job with one instruction differ only in their seed, so a writer may write them
    in one call (a served model with structured output does)."""

    image: Image.Image
    caption: str
    instruction: str
    prefix: str
    seed: int
    job: int | None = None


class Captioner(ABC):
    """Image → literal caption, batched. A backend writes :meth:`_caption` for a
    non-empty batch whose prompts, if any, are one per image."""

    info: ModelInfo

    def caption(
        self,
        images: Sequence[Image.Image],
        *,
        prompts: Sequence[str] | None = None,
        seed: int | None = None,
    ) -> list[Text]:
        """One caption per image (or the error that failed that image alone). ``prompts``
        (one per image) prefix the caption where the model takes a text prefix; ``seed``
        switches to seeded sampling."""
        if prompts is not None:
            check_batch("prompts", len(prompts), len(images))
        return list(self._caption(images, prompts, seed)) if images else []

    @abstractmethod
    def _caption(
        self, images: Sequence[Image.Image], prompts: Sequence[str] | None, seed: int | None
    ) -> Sequence[Text]: ...

    def warm_up(self) -> None:
        """One caption of a grey square, so the first real batch pays no start-up cost."""
        self.caption([Image.new("RGB", (64, 64), (127, 127, 127))])


class Writer(Protocol):
    """Variant requests → texts (or the error that failed one), one per request, in order."""

    info: ModelInfo
    sees_image: bool  # False: the instruction must quote the caption

    def write(self, requests: Sequence[WriteRequest]) -> Sequence[Text]: ...


class ImageTextScorer(Protocol):
    """CLIP-S of each image with its text (``worker/models/clip.py`` defines it)."""

    info: ModelInfo

    def cosine(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[float]: ...

    def clip_s(self, images: Sequence[Image.Image], texts: Sequence[str]) -> list[float]: ...


def check_batch(what: str, got: int, expected: int) -> None:
    """Name the cause when a model breaks the one-output-per-input invariant."""
    if got != expected:
        from worker.errors import ModelContractError

        raise ModelContractError(f"{what} returned {got} outputs for {expected} inputs")


def batch_seed(seeds: Sequence[int]) -> int:
    """One seed for a batched sampling call, derived from every request's seed.

    The same requests in the same order sample the same texts; a single request's
    text also depends on its batch mates (one RNG per ``generate`` call).
    """
    digest = hashlib.blake2b(repr(tuple(seeds)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)
