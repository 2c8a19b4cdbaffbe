"""An evaluation report as people see it: rendered by headless Chromium from the file
``eval report`` writes, with every picture loaded, and kept as a screenshot
(``tests/browser/artefacts/eval-report.png``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from evaluation.bootstrap import Interval
from evaluation.cli import app
from evaluation.results import EvaluationResult, ImageRecord
from tests.browser.conftest import ARTEFACTS
from tests.evaluation.conftest import draw_images

CAPTIONS = ["a red circle on a white plate", "a green ball in the grass",
            "a blue sign with a white dot", "a yellow balloon in the sky",
            "a grey stone on the beach", "a dog sitting on a red car"]
VARIANTS = [
    {"job_id": "job_1", "style": "playful", "platform": "x", "text": "Round, red, ready. #snack"},
    {"job_id": "job_1", "style": "playful", "platform": "instagram",
     "text": "Red is the new everything 🍅 #mood"},
    {"job_id": "job_1", "style": "formal", "platform": "google_headline",
     "text": "A considered circle in red, for every table"},
    {"job_id": "job_2", "style": "formal", "platform": "x",
     "text": "Call 555-0100 for a green ball", "flags": ["contact_phone"]},
    {"job_id": "job_2", "style": "playful", "platform": "tiktok", "text": "Grass. Ball. Go."},
]


def _scores(tmp_path: Path, images: Path) -> Path:
    names = draw_images(images, count=len(CAPTIONS))
    records = [ImageRecord(name, caption, [caption, "a photo of something"], name,
                           {"CIDEr": 0.2 + 0.3 * i, "SPICE": 0.0 if i % 2 else 1e-13,
                            "Bleu_4": 0.1 * i})
               for i, (name, caption) in enumerate(zip(names, CAPTIONS, strict=True))]
    result = EvaluationResult(
        name="tiny-blip", dataset="drawn shapes",
        metrics={"Bleu_4": Interval(0.25, 0.1, 0.4, 0.95, 6),
                 "CIDEr": Interval(0.95, 0.6, 1.3, 0.95, 6),
                 "SPICE": Interval(2e-14, 0.0, 4e-14, 0.95, 6)},
        images=records, provenance={"served": {"model_id": "tiny-blip"}})
    path = tmp_path / "scores.json"
    result.save(path)
    return path


def test_report_renders_in_chromium(browser: Any, tmp_path: Path) -> None:
    images = tmp_path / "images"
    scores = _scores(tmp_path, images)
    variants = tmp_path / "variants.jsonl"
    variants.write_text("".join(json.dumps(v) + "\n" for v in VARIANTS), encoding="utf-8")
    html = tmp_path / "report.html"
    done = CliRunner().invoke(app, ["report", str(scores), "--images", str(images),
                                    "--variants", str(variants), "--examples", "3",
                                    "--out", str(html)])
    assert done.exit_code == 0, done.output
    page = browser.new_page(viewport={"width": 1100, "height": 900})
    try:
        page.goto(html.as_uri())
        page.wait_for_load_state("load")
        broken = page.evaluate(
            "[...document.images].filter(i => !i.complete || i.naturalWidth === 0).length")
        assert broken == 0
        assert page.locator("img").count() == 2 + 6  # two figures, six thumbnails
        headings = page.locator("h2, h3").all_inner_texts()
        assert "Best 3 by CIDEr" in headings
        assert "Worst 3 by CIDEr" in headings
        assert "By style" in headings
        assert "By platform" in headings
        assert "(no image)" not in page.content()
        ARTEFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTEFACTS / "eval-report.png"), full_page=True)
    finally:
        page.close()
    assert (ARTEFACTS / "eval-report.png").stat().st_size > 10_000
