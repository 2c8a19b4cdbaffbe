"""The HTML report: disjoint best and worst lists, the ad-copy checks by style and platform."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.adcopy import breakdown, read_variants
from evaluation.bootstrap import Interval
from evaluation.errors import EvaluationError
from evaluation.report import best_and_worst, render_run
from evaluation.results import EvaluationResult, ImageRecord
from schemas.errors import ErrorCode


def _records(scores: list[float]) -> list[ImageRecord]:
    return [ImageRecord(f"img_{i}", "a dog", ["a dog"], None, {"CIDEr": s})
            for i, s in enumerate(scores)]


@pytest.mark.parametrize("count", [1, 2, 3, 5, 9, 10, 12])
def test_best_and_worst_never_share_an_image(count: int) -> None:
    records = _records([i / 10 for i in range(count)])
    best, worst = best_and_worst(records, "CIDEr", 5)
    best_ids, worst_ids = {r.image_id for r in best}, {r.image_id for r in worst}
    assert not best_ids & worst_ids
    assert len(best) == min(5, (count + 1) // 2)
    assert len(worst) == min(5, count // 2)
    assert [r.scores["CIDEr"] for r in best] == sorted((r.scores["CIDEr"] for r in best),
                                                       reverse=True)
    assert best[0].scores["CIDEr"] == max(i / 10 for i in range(count))
    if worst:
        assert worst[0].scores["CIDEr"] == 0.0


def test_report_of_three_images_shows_each_once() -> None:
    result = EvaluationResult(name="r", dataset="d",
                              metrics={"CIDEr": Interval(0.5, 0.4, 0.6, 0.95, 3)},
                              images=_records([0.1, 0.5, 0.9]))
    html = render_run(result, examples=5)
    assert "<h2>Best 2 by CIDEr</h2>" in html
    assert "<h2>Worst 1 by CIDEr</h2>" in html
    assert all(html.count(f"<b>img_{i}</b>") == 1 for i in range(3))


VARIANTS = [
    {"job_id": "j1", "style": "playful", "platform": "x", "text": "Sunny days #fun", "flags": []},
    {"job_id": "j1", "style": "playful", "platform": "google_headline",
     "text": "A headline far too long for the thirty character limit", "flags": []},
    {"job_id": "j2", "style": "formal", "platform": "x", "text": "Call 555-0100 now",
     "flags": ["contact_phone"]},
]


def test_ad_copy_breakdown_by_style_and_platform() -> None:
    by = breakdown(VARIANTS)
    assert set(by) == {"style", "platform"}
    assert by["style"]["playful"]["texts"] == 2
    assert by["style"]["playful"]["compliance_rate"] == 0.5  # the headline is too long
    assert by["platform"]["x"]["flagged_rate"] == 0.5
    assert by["platform"]["x"]["flags"] == {"contact_phone": 1}
    assert by["platform"]["google_headline"]["compliance_rate"] == 0.0


def test_unknown_platform_is_an_error() -> None:
    with pytest.raises(EvaluationError) as caught:
        breakdown([{"style": "s", "platform": "myspace", "text": "hi"}])
    assert caught.value.code is ErrorCode.invalid_argument


def test_read_variants_takes_variants_or_jobs(tmp_path: Path) -> None:
    path = tmp_path / "variants.jsonl"
    job = {"id": "job_1", "status": "succeeded", "variants": VARIANTS[:2]}
    path.write_text(json.dumps(job) + "\n" + json.dumps(VARIANTS[2]) + "\n")
    rows = read_variants(path)
    assert [r["job_id"] for r in rows] == ["j1", "j1", "j2"]
    path.write_text('{"style": "s"}\n')
    with pytest.raises(EvaluationError) as caught:
        read_variants(path)
    assert caught.value.code is ErrorCode.malformed


def test_report_shows_the_ad_copy_tables() -> None:
    result = EvaluationResult(name="r", dataset="d", metrics={}, images=[])
    html = render_run(result, variants=VARIANTS)
    assert "<h3>By style</h3>" in html
    assert "<h3>By platform</h3>" in html
    assert "<td>google_headline</td>" in html
    assert "contact_phone (1)" in html


def test_report_images_folder_without_the_images(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from evaluation.cli import app
    from tests.evaluation.conftest import draw_images

    records = _records([0.1, 0.5, 0.9])
    for record in records:
        record.image_file = f"{record.image_id}.png"
    scores = tmp_path / "scores.json"
    EvaluationResult(name="r", dataset="d", metrics={"CIDEr": Interval(0.5, 0.4, 0.6, 0.95, 3)},
                     images=records).save(scores)
    empty, some = tmp_path / "empty", tmp_path / "some"
    empty.mkdir()
    draw_images(some, count=1)
    runner = CliRunner()
    wrong = runner.invoke(app, ["report", str(scores), "--images", str(empty),
                                "--out", str(tmp_path / "a.html")])
    assert wrong.exit_code == 2
    assert "error[image_missing]" in wrong.stderr
    assert "holds none of the report's images" in wrong.stderr
    partly = runner.invoke(app, ["report", str(scores), "--images", str(some),
                                 "--out", str(tmp_path / "b.html")])
    assert partly.exit_code == 0, partly.output
    assert "warning: 2 image(s) not found" in partly.stderr
    html = (tmp_path / "b.html").read_text()
    assert html.count("(no image)") == 2
    assert html.count("data:image/jpeg;base64,") == 1
