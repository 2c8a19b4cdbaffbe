"""`captionq eval` end to end: a tiny random BLIP captions drawn images, resumably."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from evaluation.cli import app
from evaluation.datasets import load_dataset
from evaluation.errors import EvaluationError
from evaluation.predictions import PREDICTIONS_FILE, read_jsonl
from evaluation.runs import RunConfig, load_captioner, run_captions
from schemas.errors import ErrorCode, TransientError
from tests.evaluation.conftest import REPO, draw_images

pytestmark = pytest.mark.unit
runner = CliRunner()


@pytest.fixture
def data(tmp_path: Path) -> tuple[Path, Path]:
    images = tmp_path / "images"
    names = draw_images(images, 4)
    refs = ["a red circle on a picture", "a white ball", "a green photo with a circle",
            "a blue image", "a yellow picture"]
    dataset = tmp_path / "refs.jsonl"
    dataset.write_text("".join(
        json.dumps({"image": n, "references": [refs[i], refs[i + 1]]}) + "\n"
        for i, n in enumerate(names)))
    return dataset, images


class Interrupting:
    """The served captioner, interrupted (as by Ctrl-C) after ``limit`` batches."""

    def __init__(self, inner: object, limit: int) -> None:
        self.inner, self.limit, self.calls = inner, limit, 0
        self.info = inner.info  # type: ignore[attr-defined]

    def caption(self, images: Sequence[Image.Image], **kwargs: object) -> list[str]:
        if self.calls == self.limit:
            raise KeyboardInterrupt
        self.calls += 1
        return self.inner.caption(images, **kwargs)  # type: ignore[attr-defined]


class FailingSecond:
    """The captioner with its second image's caption failed on its own, as a served
    model returns a request that failed."""

    def __init__(self, inner: object) -> None:
        self.inner, self.info = inner, inner.info  # type: ignore[attr-defined]

    def caption(self, images: Sequence[Image.Image], **kwargs: object) -> list[object]:
        captions: list[object] = self.inner.caption(images, **kwargs)  # type: ignore[attr-defined]
        captions[1] = TransientError("no answer within 1s", code=ErrorCode.model_server_timeout)
        return captions


def test_a_run_stops_with_the_code_of_an_image_that_failed_alone(
    tiny_blip: Path, data: tuple[Path, Path], tmp_path: Path
) -> None:
    dataset_path, images = data
    dataset = load_dataset(dataset_path)
    paths = {s.image_id: images / s.image_file for s in dataset.samples}  # type: ignore[operator]
    config = RunConfig(model=str(tiny_blip), batch_size=2, max_new_tokens=4, device="cpu")
    with pytest.raises(EvaluationError) as err:
        run_captions(captioner=FailingSecond(load_captioner(config)), config=config,
                     dataset=dataset, images=paths, out_dir=tmp_path / "run")
    assert err.value.code == ErrorCode.model_server_timeout
    assert not (tmp_path / "run" / PREDICTIONS_FILE).exists() or not read_jsonl(
        tmp_path / "run" / PREDICTIONS_FILE)  # no error written as a prediction


def test_run_resumes_after_interruption(tiny_blip: Path, data: tuple[Path, Path],
                                        tmp_path: Path) -> None:
    dataset_path, images = data
    dataset = load_dataset(dataset_path)
    paths = {s.image_id: images / s.image_file for s in dataset.samples}  # type: ignore[operator]
    config = RunConfig(model=str(tiny_blip), batch_size=2, max_new_tokens=6, device="cpu")
    captioner = load_captioner(config)
    out = tmp_path / "run"
    flaky = Interrupting(captioner, limit=1)
    with pytest.raises(KeyboardInterrupt):
        run_captions(captioner=flaky, config=config, dataset=dataset, images=paths, out_dir=out)
    assert len(read_jsonl(out / PREDICTIONS_FILE)) == 2
    resumed = Interrupting(captioner, limit=99)
    summary = run_captions(captioner=resumed, config=config, dataset=dataset, images=paths,
                           out_dir=out)
    assert (summary.already_done, summary.generated, resumed.calls) == (2, 2, 1)
    preds = read_jsonl(out / PREDICTIONS_FILE)
    assert sorted(preds) == sorted(dataset.ids)
    provenance = json.loads((out / "run.json").read_text())
    assert provenance["served"]["model_id"] == tiny_blip.name
    assert provenance["served"]["source"] == str(tiny_blip)
    assert provenance["config"]["max_new_tokens"] == 6
    assert "resumed_at" in provenance
    other = RunConfig(model=str(tiny_blip), batch_size=2, max_new_tokens=7, device="cpu")
    with pytest.raises(EvaluationError) as err:
        run_captions(captioner=captioner, config=other, dataset=dataset, images=paths,
                     out_dir=out)
    assert err.value.code.value == "run_mismatch"


def test_run_score_compare_report(tiny_blip: Path, tiny_clip: Path, data: tuple[Path, Path],
                                  tmp_path: Path) -> None:
    dataset, images = data
    run = runner.invoke(app, ["run", "--dataset", str(dataset), "--images", str(images),
                              "--model", str(tiny_blip), "--out", str(tmp_path / "run"),
                              "--batch-size", "3", "--max-new-tokens", "6", "--device", "cpu",
                              "--json"])
    assert run.exit_code == 0, run.output
    assert json.loads(run.stdout)["generated"] == 4
    again = runner.invoke(app, ["run", "--dataset", str(dataset), "--images", str(images),
                                "--model", str(tiny_blip), "--out", str(tmp_path / "run"),
                                "--batch-size", "3", "--max-new-tokens", "6", "--device", "cpu",
                                "--json"])
    assert json.loads(again.stdout)["generated"] == 0
    # The run keeps where its data set is: no --dataset needed.
    scored = runner.invoke(app, ["score", str(tmp_path / "run"),
                                 "--images", str(images), "--clip-model", str(tiny_clip),
                                 "--resamples", "50", "--out", str(tmp_path / "a.json"),
                                 "--json"])
    assert scored.exit_code == 0, scored.output
    summary = json.loads(scored.stdout)
    assert {"CIDEr", "METEOR", "CLIP-S", "RefCLIP-S"} <= set(summary["metrics"])
    assert summary["details"]["references_route"] == "raw"
    # Off a terminal, one line per stage on stderr.
    assert "eval score: METEOR [" in scored.stderr
    assert "eval score: CLIP-S (" in scored.stderr
    # B: the references' first sentence as the prediction -> better on every n-gram metric.
    refs = [json.loads(line) for line in dataset.read_text().splitlines()]
    (tmp_path / "b.jsonl").write_text("".join(
        json.dumps({"image_id": r["image"], "caption": r["references"][0]}) + "\n"
        for r in refs))
    runner.invoke(app, ["score", str(tmp_path / "b.jsonl"), "--dataset", str(dataset),
                        "--metrics", "Bleu_1,Bleu_4,METEOR,ROUGE_L,CIDEr", "--resamples", "50",
                        "--out", str(tmp_path / "b.json")])
    compared = runner.invoke(app, ["compare", str(tmp_path / "a.json"), str(tmp_path / "b.json"),
                                   "--json", "--html", str(tmp_path / "cmp.html")])
    assert compared.exit_code == 0, compared.output
    diffs = {d["metric"]: d for d in json.loads(compared.stdout)}
    assert diffs["CIDEr"]["delta"] > 0
    assert "CLIP-S" not in diffs
    report = runner.invoke(app, ["report", str(tmp_path / "a.json"), "--images", str(images),
                                 "--out", str(tmp_path / "a.html"), "--json"])
    assert report.exit_code == 0, report.output
    html = (tmp_path / "a.html").read_text()
    assert html.count("data:image/jpeg;base64,") >= 4
    assert "data:image/png;base64," in html
    assert "<script" not in html
    assert "run.json" not in html


def test_report_escapes_text(tmp_path: Path) -> None:
    from evaluation.bootstrap import Interval
    from evaluation.report import render_run
    from evaluation.results import EvaluationResult, ImageRecord

    evil = '<script>alert("x")</script>'
    result = EvaluationResult(
        name=evil, dataset="d", metrics={"CIDEr": Interval(0.5, 0.4, 0.6, 0.95, 10)},
        images=[ImageRecord("1", evil, [evil], None, {"CIDEr": 0.5})],
        provenance={"model": evil})
    html = render_run(result)
    assert "<script>" not in html
    assert "&lt;script&gt;" in html


def test_errors_have_codes_and_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["score", str(tmp_path / "missing.json")])
    assert result.exit_code == 2
    assert "error[file_not_found]" in result.stderr


def test_metric_names_are_checked(data: tuple[Path, Path], tmp_path: Path) -> None:
    dataset, _ = data
    preds = tmp_path / "p.jsonl"
    preds.write_text("".join(json.dumps({"image_id": f"img_{i}.png", "caption": "a photo"}) + "\n"
                             for i in range(4)))
    bad = runner.invoke(app, ["score", str(preds), "--dataset", str(dataset),
                              "--metrics", "Bleu_4,CIDEr-D,cider"])
    assert bad.exit_code == 2
    assert "error[invalid_argument]: unknown metric(s) cider; known: Bleu_1" in bad.stderr
    good = runner.invoke(app, ["score", str(preds), "--dataset", str(dataset),
                               "--metrics", "CIDEr-D", "--resamples", "20", "--json"])
    assert good.exit_code == 0, good.output
    assert list(json.loads(good.stdout)["metrics"]) == ["CIDEr"]
    clip = runner.invoke(app, ["score", str(preds), "--dataset", str(dataset),
                               "--metrics", "CLIP-S"])
    assert "error[invalid_argument]: CLIP-S and RefCLIP-S need --clip-model" in clip.stderr


def test_score_says_what_is_missing(data: tuple[Path, Path], tmp_path: Path) -> None:
    preds = tmp_path / "p.jsonl"
    preds.write_text(json.dumps({"image_id": "img_0.png", "caption": "a photo"}) + "\n")
    alone = runner.invoke(app, ["score", str(preds)])
    assert alone.exit_code == 2
    assert "holds predictions only, no references; pass --dataset" in alone.stderr
    run = tmp_path / "old-run"
    run.mkdir()
    (run / "predictions.jsonl").write_text(preds.read_text())
    (run / "run.json").write_text(json.dumps({"dataset": "refs"}))
    old = runner.invoke(app, ["score", str(run)])
    assert "names its data set (refs) but not its file; pass --dataset" in old.stderr


def test_bootstrap_of_an_empty_metric_is_undefined_not_a_crash() -> None:
    import numpy as np

    from evaluation.bootstrap import confidence_intervals
    from evaluation.metrics import mean_statistic

    empty = mean_statistic("CIDEr", np.zeros(0))
    interval = confidence_intervals({"CIDEr": empty}, resamples=10)["CIDEr"]
    assert all(np.isnan(v) for v in (interval.value, interval.low, interval.high))
    assert confidence_intervals({}, resamples=10) == {}


def test_calibrate_from_csv(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("score,decision\n0.9,approved\n0.8,approved\n0.7,rejected\n0.6,edited\n")
    result = runner.invoke(app, ["calibrate", "--decisions", str(path), "--target-precision",
                                 "0.9", "--min-support", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["threshold"] == 0.8


def test_help_of_every_command_as_a_module() -> None:
    for command in ("run", "score", "compare", "correlate", "calibrate", "report"):
        done = subprocess.run([sys.executable, "-m", "evaluation.cli", command, "--help"],
                              cwd=REPO, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert "Usage" in done.stdout
    done = subprocess.run([sys.executable, "-m", "evaluation.cli", "calibrate", "--help"],
                          cwd=REPO, capture_output=True, text=True, check=False)
    assert "edited" in done.stdout
    assert "rejected" in done.stdout
