"""Acceptance: `captionq eval score` reproduces MAGIC's published COCO scores digit for digit."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from evaluation.cli import app
from evaluation.compare import compare
from evaluation.results import EvaluationResult, load_result

pytestmark = pytest.mark.integration


def parse_expected(path: Path) -> dict[str, object]:
    """Every printed number of expected_scores.txt, with its printed precision."""
    text = path.read_text()
    out: dict[str, object] = {}
    tokens = re.search(r"tokenized (\d+) tokens \(references\) / (\d+) tokens", text)
    assert tokens is not None
    out["tokens"] = (int(tokens.group(1)), int(tokens.group(2)))
    counts = re.search(r"^\{'testlen'.*\}$", text, re.M)
    assert counts is not None
    out["counts"] = ast.literal_eval(counts.group(0))
    ratio = re.search(r"^ratio: ([0-9.]+)$", text, re.M)
    assert ratio is not None
    out["ratio"] = ratio.group(1)
    out["metrics"] = {k: v for k, v in re.findall(r"^(\w+): ([0-9.]+)$", text, re.M)
                      if k != "ratio"}
    return out


def same_at_printed_precision(value: float, printed: str) -> bool:
    decimals = len(printed.split(".")[1])
    return f"{value:.{decimals}f}" == printed


@pytest.fixture(scope="module")
def magic(magic_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("magic") / "scores.json"
    result = CliRunner().invoke(app, [
        "score", str(magic_dir / "magic_result.json"), "--out", str(out), "--json",
        "--resamples", "200",
    ])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), out


def test_every_printed_digit_is_reproduced(magic: tuple[dict, Path], magic_dir: Path) -> None:
    summary, _ = magic
    expected = parse_expected(magic_dir / "expected_scores.txt")
    details = summary["details"]
    assert (details["ptb_tokens"]["references"], details["ptb_tokens"]["predictions"]) == \
        expected["tokens"]
    counts = expected["counts"]
    assert isinstance(counts, dict)
    for key in ("testlen", "reflen", "guess", "correct"):
        assert details["bleu_counts"][key] == counts[key], key
    assert same_at_printed_precision(details["bleu_counts"]["ratio"], str(expected["ratio"]))
    metrics = expected["metrics"]
    assert isinstance(metrics, dict)
    assert set(metrics) >= {"Bleu_1", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE"}
    for name, printed in metrics.items():
        if name == "SPICE" and "SPICE" in summary["unavailable"]:
            continue
        value = summary["metrics"][name]["value"]
        assert same_at_printed_precision(value, printed), (name, value, printed)


def test_spice_is_reported_unavailable_with_its_reason(magic: tuple[dict, Path]) -> None:
    summary, _ = magic
    if "SPICE" in summary["metrics"]:
        pytest.skip("CoreNLP jars are installed here: SPICE ran")
    assert "stanford-corenlp-3.6.0" in summary["unavailable"]["SPICE"]


def test_bootstrap_point_estimate_is_the_corpus_metric(magic: tuple[dict, Path]) -> None:
    _, path = magic
    result = load_result(path)
    for name, statistic in result.statistics().items():
        assert statistic.corpus() == pytest.approx(result.metrics[name].value, rel=1e-12), name
        interval = result.metrics[name]
        assert interval.low < interval.value < interval.high, name
        assert interval.high - interval.low < 0.05, name


def test_a_run_compared_with_itself_differs_in_nothing(magic: tuple[dict, Path]) -> None:
    _, path = magic
    result: EvaluationResult = load_result(path)
    stats = result.statistics()
    for diff in compare(stats, stats, resamples=50, permutations=50):
        assert diff.delta == 0
        assert not diff.significant
        assert diff.p_value == 1.0


def test_a_worse_run_is_significantly_worse(magic: tuple[dict, Path]) -> None:
    _, path = magic
    result = load_result(path)
    stats = result.statistics()
    worse = {}
    rng = np.random.default_rng(0)
    for name, s in stats.items():  # half the images lose their score entirely
        rows = s.rows.copy()
        drop = rng.random(len(rows)) < 0.5
        if name.startswith("Bleu_"):
            rows[drop, 2 + 4:] = 0  # no correct n-grams
        elif name == "METEOR":
            rows[drop, 4:] = 0
        else:
            rows[drop, 0] = 0
        worse[name] = type(s)(s.name, rows, s.aggregate)
    for diff in compare(stats, worse, resamples=100, permutations=100):
        assert diff.delta < 0, diff
        assert diff.significant, diff
        assert diff.high < 0, diff
