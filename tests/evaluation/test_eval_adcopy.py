from __future__ import annotations

import pytest

from evaluation.adcopy import ad_copy_metrics, distinct_n, self_bleu
from evaluation.errors import EvaluationError

pytestmark = pytest.mark.unit


def test_ad_copy_metrics() -> None:
    texts = ["Fresh coffee, every morning!", "Fresh coffee every morning", "Wake up to bold taste",
             "Try it now #coffee"]
    report = ad_copy_metrics(texts, [True, True, False, True],
                             flags=[[], [], ["too_long"], ["hashtag"]],
                             groups=["j1", "j1", "j1", "j2"])
    assert report["compliance_rate"] == 0.75
    assert report["flagged_rate"] == 0.5
    assert report["flags"] == {"too_long": 1, "hashtag": 1}
    assert report["length_words"]["max"] == 5
    assert report["length_chars"]["min"] == 18
    assert 0 < report["distinct_1"] < 1


def test_distinct_n_by_hand() -> None:
    assert distinct_n(["a b a b"], 1) == 0.5  # {a, b} of 4
    assert distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)  # {ab, ba} of 3
    assert distinct_n([""], 2) == 0.0


def test_self_bleu_is_high_for_copies_and_low_for_different_texts() -> None:
    same = ["the new red shoe is here today"] * 3
    assert self_bleu(same, ["j"] * 3) == pytest.approx(1.0)
    different = ["the new red shoe is here today", "buy two get one free this week",
                 "summer sale starts on monday morning"]
    assert self_bleu(different, ["j"] * 3) < 0.01
    assert self_bleu(different, ["a", "b", "c"]) is None  # no job has two variants


def test_inputs_are_checked() -> None:
    with pytest.raises(EvaluationError):
        ad_copy_metrics(["a"], [True, False])
    with pytest.raises(EvaluationError):
        ad_copy_metrics([], [])
