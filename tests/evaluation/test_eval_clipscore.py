"""CLIP-S and RefCLIP-S against hand-computed values and an independent computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor

from evaluation.clipscore import ClipScorer, clip_s, refclip_s
from tests.evaluation.conftest import draw_images
from worker.models.clip import PROMPT as PREFIX

pytestmark = pytest.mark.unit


def test_hand_computed_cosines() -> None:
    image = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    cand = np.array([[0.6, 0.8], [3.0, 4.0], [-1.0, 0.0]])  # cos 0.6, 0.8, -1
    scores = clip_s(image, cand)
    np.testing.assert_allclose(scores, [2.5 * 0.6, 2.5 * 0.8, 0.0])
    refs = [np.array([[0.0, 1.0], [1.0, 0.0]]),  # best cos with (0.6, 0.8): 0.8
            np.array([[-3.0, -4.0]]),            # cos -1 -> clipped to 0
            np.array([[1.0, 0.0]])]              # cos -1 -> 0; CLIP-S 0 -> 0
    expected = [2 * 1.5 * 0.8 / (1.5 + 0.8), 0.0, 0.0]
    np.testing.assert_allclose(refclip_s(scores, cand, refs), expected)


def test_tiny_clip_matches_the_paper_formula(tiny_clip: Path, tmp_path: Path) -> None:
    names = draw_images(tmp_path, 3)
    images = [Image.open(tmp_path / n).convert("RGB") for n in names]
    cands = ["a dog on the grass", "a red car", "two cat sitting"]
    refs = [["a dog", "the dog on grass"], ["a car"], ["a cat", "two cat", "a man"]]
    got = ClipScorer(tiny_clip).score([tmp_path / n for n in names], cands, refs)

    model = CLIPModel.from_pretrained(tiny_clip).eval()
    processor = CLIPProcessor.from_pretrained(tiny_clip)

    def text(texts: list[str]) -> torch.Tensor:
        tok = processor(text=["A photo depicts " + t for t in texts], return_tensors="pt",
                        padding=True)
        with torch.no_grad():
            out = model.get_text_features(**tok)
        out = getattr(out, "pooler_output", out)
        return out / out.norm(dim=-1, keepdim=True)

    with torch.no_grad():
        pix = processor(images=images, return_tensors="pt")["pixel_values"]
        v = model.get_image_features(pixel_values=pix)
    v = getattr(v, "pooler_output", v)
    v = v / v.norm(dim=-1, keepdim=True)
    c = text(cands)
    expected_clip = 2.5 * torch.clamp((v * c).sum(-1), min=0).double().numpy()
    expected_ref = []
    for i, r in enumerate(refs):
        best = max(float((text(r) @ c[i]).max()), 0.0)
        s = expected_clip[i]
        expected_ref.append(0.0 if s + best == 0 else 2 * s * best / (s + best))
    assert PREFIX == "A photo depicts "
    np.testing.assert_allclose(got.clip_s, expected_clip, rtol=1e-5, atol=1e-6)
    assert got.refclip_s is not None
    np.testing.assert_allclose(got.refclip_s, expected_ref, rtol=1e-5, atol=1e-6)
    assert got.clip_s.shape == (3,)
    assert np.all(got.clip_s >= 0)
    assert np.all(got.clip_s <= 2.5)


def test_the_worker_and_the_evaluator_compute_the_same_clip_s(tiny_clip: Path,
                                                              tmp_path: Path) -> None:
    """One definition: the worker's image-text quality part is the evaluator's CLIP-S,
    capped at 1, on the same model, image and text."""
    from worker.models.clip import HFClipScorer
    from worker.quality import image_text

    names = draw_images(tmp_path, 2)
    texts = ["a red dog on the grass", "two cat sitting"]
    images = [Image.open(tmp_path / n).convert("RGB") for n in names]
    served = HFClipScorer(str(tiny_clip), device="cpu", dtype="float32").clip_s(images, texts)
    evaluated = ClipScorer(tiny_clip).score([tmp_path / n for n in names], texts).clip_s
    np.testing.assert_allclose(served, evaluated, rtol=1e-6, atol=1e-7)
    assert [image_text(s) for s in served] == [min(1.0, s) for s in served]
