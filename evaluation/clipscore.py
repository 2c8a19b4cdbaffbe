"""CLIP-S and RefCLIP-S (Hessel et al., 2021, "CLIPScore"), from any local CLIP model.

For an image embedding v, a candidate embedding c and reference embeddings
r_1..r_k (all L2-normalised; texts prefixed with "A photo depicts "), by the one
definition the worker's quality score uses too (``worker/models/clip.py``):

- CLIP-S(c, v) = w * max(cos(c, v), 0), w = 2.5;
- RefCLIP-S(c, R, v) = harmonic mean of CLIP-S(c, v) and max(max_i cos(c, r_i), 0).

Corpus scores are the means of the per-image scores. The arithmetic lives in
:func:`clip_s` and :func:`refclip_s`; :class:`ClipScorer` only embeds, with the
worker's CLIP backend loaded from a folder or hub id as the worker loads it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from evaluation.errors import EvaluationError
from schemas.errors import ErrorCode


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def clip_s(images: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """Per-image CLIP-S from (n, d) image and candidate embeddings (normalised here),
    by the worker's one definition (imported here: it brings torch)."""
    from worker.models.clip import clip_s as of_cosines

    return of_cosines(np.sum(normalize(images) * normalize(candidates), axis=1))


def refclip_s(
    clip_scores: np.ndarray, candidates: np.ndarray, references: Sequence[np.ndarray]
) -> np.ndarray:
    """Per-image RefCLIP-S: harmonic mean of CLIP-S and the best reference cosine (>= 0)."""
    cands = normalize(candidates)
    best = np.array(
        [max(float(np.max(normalize(refs) @ cand)), 0.0) for cand, refs in zip(
            cands, references, strict=True)]
    )
    total = clip_scores + best
    with np.errstate(divide="ignore", invalid="ignore"):
        hmean = np.where(total > 0, 2 * clip_scores * best / total, 0.0)
    return hmean


@dataclass(frozen=True)
class ClipScores:
    clip_s: np.ndarray
    refclip_s: np.ndarray | None


class ClipScorer:
    """Embeds with the worker's :class:`~worker.models.clip.HFClipScorer` (same loading,
    same prompt), so evaluation's CLIP-S is the worker's quality part before its cap."""

    def __init__(self, model: str | Path, *, device: str = "cpu", batch_size: int = 64) -> None:
        from worker.models.clip import HFClipScorer

        try:
            self.scorer = HFClipScorer(str(model), device=device, dtype="float32")
        except (OSError, ValueError) as exc:
            raise EvaluationError(
                ErrorCode.model_error, f"cannot load a CLIP model from {model}: {exc}"
            ) from exc
        self.batch_size = batch_size
        self.model_id = str(model)

    def embed_images(self, images: Sequence[Image.Image | Path]) -> np.ndarray:
        """Images or image files (opened one batch at a time)."""
        parts = [self.scorer.embed_images([_rgb(im) for im in images[i : i + self.batch_size]])
                 .numpy() for i in range(0, len(images), self.batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, 0))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``PREFIX + text``, truncated to the model's context as CLIP does."""
        parts = [self.scorer.embed_texts(texts[i : i + self.batch_size]).numpy()
                 for i in range(0, len(texts), self.batch_size)]
        return np.concatenate(parts) if parts else np.zeros((0, 0))

    def score(
        self,
        images: Sequence[Image.Image | Path],
        candidates: Sequence[str],
        references: Sequence[Sequence[str]] | None = None,
    ) -> ClipScores:
        if len(images) != len(candidates):
            raise EvaluationError(
                ErrorCode.invalid_argument,
                f"{len(images)} images for {len(candidates)} candidate captions",
            )
        image_emb = self.embed_images(images)
        cand_emb = self.embed_texts(candidates)
        per_image = clip_s(image_emb, cand_emb)
        if references is None:
            return ClipScores(clip_s=per_image, refclip_s=None)
        flat = [r for refs in references for r in refs]
        ref_emb = self.embed_texts(flat)
        grouped, start = [], 0
        for refs in references:
            grouped.append(ref_emb[start : start + len(refs)])
            start += len(refs)
        return ClipScores(clip_s=per_image, refclip_s=refclip_s(per_image, cand_emb, grouped))


def _rgb(image: Image.Image | Path) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    with Image.open(image) as opened:
        return opened.convert("RGB")
