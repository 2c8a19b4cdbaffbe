"""The COCO scorers: parity with pycocoevalcap, Java checks, read-only installs, SPICE."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer as ReferenceTokenizer

from evaluation import java
from evaluation.coco import score_captions
from evaluation.datasets import Dataset, Sample
from evaluation.errors import DatasetError, ToolMissingError
from evaluation.java import CocoJars
from evaluation.meteor import meteor_from_stats
from schemas.errors import ErrorCode

pytestmark = pytest.mark.unit

REFS = {
    "1": ("A man riding a horse on a beach.", "A person rides a brown horse by the sea.",
          "Someone on horseback at the shore!"),
    "2": ("Two dogs play with a red ball.", "Dogs playing in the grass, with a ball."),
    "3": ("A plate of food with broccoli and rice.", "Rice & broccoli on a white plate."),
    "4": ("A red car parked on the street.", "A car is parked by the curb."),
}
PREDS = {"1": "A man rides a horse on the beach.", "2": "Two dogs playing with a ball.",
         "3": "A plate with rice and broccoli.", "4": "A red car on a street."}


def dataset() -> Dataset:
    return Dataset("tiny", tuple(Sample(i, refs) for i, refs in REFS.items()))


def reference_scores() -> dict[str, float]:
    """pycocoevalcap called as COCOEvalCap calls it."""
    tokenizer = ReferenceTokenizer()
    gts = tokenizer.tokenize({i: [{"caption": r} for r in refs] for i, refs in REFS.items()})
    res = tokenizer.tokenize({i: [{"caption": PREDS[i]}] for i in REFS})
    out = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out.update({f"Bleu_{n + 1}": b for n, b in enumerate(bleu)})
    meteor = Meteor()
    try:
        out["METEOR"], _ = meteor.compute_score(gts, res)
    finally:  # its __del__ leaves the pipes open
        for pipe in (meteor.meteor_p.stdout, meteor.meteor_p.stderr):
            pipe.close()
    out["ROUGE_L"], _ = Rouge().compute_score(gts, res)
    out["CIDEr"], _ = Cider().compute_score(gts, res)
    return out


@pytest.fixture(scope="module")
def ours() -> object:
    return score_captions(dataset(), PREDS)


def test_same_numbers_as_pycocoevalcap(ours) -> None:  # noqa: ANN001
    expected = reference_scores()
    for name, value in expected.items():
        assert ours.corpus[name] == pytest.approx(value, rel=1e-12, abs=1e-15), name
        assert ours.statistics[name].corpus() == pytest.approx(value, rel=1e-9), name


def test_meteor_aggregate_matches_the_jar_per_image(ours) -> None:  # noqa: ANN001
    rows = ours.statistics["METEOR"].rows
    np.testing.assert_allclose(meteor_from_stats(rows), ours.per_image["METEOR"], atol=1e-12)


def test_spice_without_corenlp_is_unavailable_with_reason(ours, tmp_path: Path) -> None:  # noqa: ANN001
    if "SPICE" in ours.corpus:
        pytest.skip("CoreNLP jars present: SPICE ran")
    assert "SPICE" not in ours.statistics
    reason = ours.unavailable["SPICE"]
    assert "stanford-corenlp-3.6.0-models.jar" in reason
    assert "--corenlp-dir" in reason


def test_pretokenized_references_are_not_retokenized() -> None:
    ds = Dataset("tok", (Sample("1", ("a man rides a horse", "a horse on a beach")),),
                 route="tokens")
    scores = score_captions(ds, {"1": "A man rides a horse."}, metrics=["Bleu_1", "CIDEr"])
    assert scores.details["ptb_tokens"]["references"] is None
    assert scores.corpus["Bleu_1"] == pytest.approx(1.0)


def test_read_only_install(tmp_path: Path) -> None:
    """A copy of the package's jars with no write permission anywhere still scores."""
    installed = CocoJars.installed()
    root = tmp_path / "pycocoevalcap"
    for part in ("tokenizer", "meteor"):
        shutil.copytree(installed.root / part, root / part,
                        ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    for folder, dirs, files in os.walk(root):
        for name in files:
            os.chmod(Path(folder) / name, stat.S_IRUSR | stat.S_IRGRP)
        for name in dirs:
            os.chmod(Path(folder) / name, stat.S_IRUSR | stat.S_IXUSR)
    os.chmod(root, stat.S_IRUSR | stat.S_IXUSR)
    try:
        before = sorted(p.name for p in root.rglob("*"))
        scores = score_captions(dataset(), PREDS, metrics=["Bleu_4", "METEOR", "CIDEr"],
                                jars=CocoJars(root))
        assert scores.corpus["Bleu_4"] > 0
        assert scores.corpus["METEOR"] > 0
        assert sorted(p.name for p in root.rglob("*")) == before
    finally:
        for folder, dirs, _ in os.walk(root):
            os.chmod(folder, stat.S_IRWXU)
            for name in dirs:
                os.chmod(Path(folder) / name, stat.S_IRWXU)


def test_java_missing_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    java.require_java.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")
    try:
        with pytest.raises(ToolMissingError) as err:
            score_captions(dataset(), PREDS)
        assert err.value.code is ErrorCode.java_missing
        assert "install a Java runtime" in err.value.message
    finally:
        java.require_java.cache_clear()


def test_missing_and_unknown_predictions() -> None:
    with pytest.raises(DatasetError) as err:
        score_captions(dataset(), {k: v for k, v in PREDS.items() if k != "2"})
    assert err.value.code is ErrorCode.missing_prediction
    with pytest.raises(DatasetError) as err:
        score_captions(dataset(), {**PREDS, "9": "x"})
    assert err.value.code is ErrorCode.unknown_image
