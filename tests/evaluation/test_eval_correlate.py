from __future__ import annotations

from pathlib import Path

import pytest
from scipy.stats import kendalltau

from evaluation.correlate import correlate, kendall
from evaluation.errors import DatasetError
from evaluation.judgements import load_judgements
from schemas.errors import ErrorCode

pytestmark = pytest.mark.unit

TOKENS = """a.jpg#0\tA dog runs on the grass.
a.jpg#1\tA brown dog running in a field.
a.jpg#2\tThe dog plays outside.
b.jpg#0\tA man rides a bike down the street.
b.jpg#1\tA cyclist on a city road.
b.jpg#2\tA person riding a bicycle.
"""


def test_kendall_variants_match_scipy() -> None:
    x, y = [1, 2, 2, 3, 5], [1, 3, 2, 2, 4]
    c = kendall("m", x, y)
    assert c.tau_b == pytest.approx(kendalltau(x, y, variant="b").statistic)
    assert c.tau_c == pytest.approx(kendalltau(x, y, variant="c").statistic)
    assert c.tau_b != c.tau_c


def test_generic_csv_averages_raters(tmp_path: Path) -> None:
    path = tmp_path / "j.csv"
    path.write_text("image,candidate,score,rater\na.jpg,a dog,4,r1\na.jpg,a dog,2,r2\n"
                    "b.jpg,a bike,1,r1\n")
    rows = load_judgements(path, "generic")
    assert [(r.image, r.score, r.ratings) for r in rows] == [("a.jpg", 3.0, 2), ("b.jpg", 1.0, 1)]
    path.write_text("image,candidate,score,rater\na.jpg,a dog,4,r1\na.jpg,a dog,2,r1\n")
    with pytest.raises(DatasetError) as err:
        load_judgements(path, "generic")
    assert err.value.code is ErrorCode.duplicate_id


def test_flickr8k_expert_layout_and_correlation(tmp_path: Path) -> None:
    (tmp_path / "Flickr8k.token.txt").write_text(TOKENS)
    expert = tmp_path / "ExpertAnnotations.txt"
    expert.write_text("a.jpg\ta.jpg#0\t4\t4\t3\n"   # its own caption: scored against the others
                      "a.jpg\tb.jpg#0\t1\t1\t1\n"
                      "b.jpg\tb.jpg#2\t4\t3\t4\n"
                      "b.jpg\ta.jpg#2\t1\t2\t1\n")
    rows = load_judgements(expert, "flickr8k-expert", captions=tmp_path / "Flickr8k.token.txt")
    assert rows[0].score == pytest.approx(11 / 3)
    assert "A dog runs on the grass." not in (rows[0].references or ())
    assert len(rows[0].references or ()) == 2
    results, unavailable = correlate(rows, metrics=["Bleu_1", "CIDEr", "SPICE"])
    by_metric = {c.metric: c for c in results}
    assert set(by_metric) >= {"Bleu_1", "CIDEr"}
    assert by_metric["CIDEr"].tau_b > 0
    assert by_metric["CIDEr"].pairs == 4
    assert "SPICE" in unavailable or "SPICE" in by_metric


def test_crowdflower_layout(tmp_path: Path) -> None:
    (tmp_path / "tok.txt").write_text(TOKENS)
    path = tmp_path / "CrowdFlowerAnnotations.txt"
    path.write_text("a.jpg\tb.jpg#1\t0.0\t0\t3\nb.jpg\tb.jpg#1\t1.0\t3\t0\n")
    rows = load_judgements(path, "flickr8k-crowdflower", captions=tmp_path / "tok.txt")
    assert [(r.score, r.ratings) for r in rows] == [(0.0, 3), (1.0, 3)]
    with pytest.raises(DatasetError):
        load_judgements(path, "flickr8k-crowdflower", captions=None)
