"""Human correlation: which rows each protocol keeps, and tau worked out by hand.

The fixture in ``data/flickr8k`` is in the published file formats. Its captions
are built so that BLEU-1 orders the candidates without ties, whatever the
exact values: every candidate and reference has six words, so the brevity
penalty is the same for all, and per-sentence BLEU-1 is the share of the
candidate's words found in the references.

- X = c.jpg#0 judged for a.jpg: 6 of 6 words in a.jpg's captions;
- S = a.jpg#0 judged for a.jpg (its own caption): 4 of 6 in the other four;
- Y = c.jpg#1 judged for a.jpg: 3 of 6;
- Z = c.jpg#2 judged for b.jpg: 0 of 6.

Published protocol (Expert): S dropped; X, Y, Z each give three rows, the
experts' ratings X 4,3,4  Y 2,3,2  Z 1,1,2. Pairs of rows with different
BLEU-1: X-Y 8 concordant (the 3-3 pair ties), X-Z 9, Y-Z 7 (the 2-2 pairs tie);
none discordant. P - Q = 24, n = 9, m = min(3 BLEU values, 4 rating values) = 3:
tau-c = 2 * 24 / (81 * 2/3) = 8/9.

Leave-one-out (today's protocol, a named option): four averaged rows, X 11/3,
S 11/3, Y 7/3, Z 4/3 with BLEU-1 X > S > Y > Z. X-S tie in the ratings; the
other five pairs are concordant: P - Q = 5, n = 4, m = min(4, 3) = 3:
tau-c = 2 * 5 / (16 * 2/3) = 15/16; tau-b = 5 / sqrt(6 * 5).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from scipy.stats import kendalltau
from typer.testing import CliRunner

from evaluation.cli import app
from evaluation.correlate import correlate, kendall
from evaluation.errors import DatasetError
from evaluation.judgements import load_judgements
from schemas.errors import ErrorCode

pytestmark = pytest.mark.unit

FIXTURE = Path(__file__).parent / "data" / "flickr8k"
TOKENS = FIXTURE / "Flickr8k.token.txt"
EXPERT = FIXTURE / "ExpertAnnotations.txt"
CROWDFLOWER = FIXTURE / "CrowdFlowerAnnotations.txt"
A_REFS = ("red kite flying over green hill", "a red kite in the sky",
          "kite high above a green hill", "two people watch a kite", "a bright toy in the wind")
X, S = "red kite high above green hill", "red kite flying over green hill"
Y, Z = "red kite near the blue fence", "old man reading newspaper inside library"


def test_kendall_variants_match_scipy() -> None:
    x, y = [1, 2, 2, 3, 5], [1, 3, 2, 2, 4]
    c = kendall("m", x, y)
    assert c.tau_b == pytest.approx(kendalltau(x, y, variant="b").statistic)
    assert c.tau_c == pytest.approx(kendalltau(x, y, variant="c").statistic)
    assert c.tau_b != c.tau_c


def test_published_expert_protocol_drops_own_captions_and_expands_ratings() -> None:
    loaded = load_judgements(EXPERT, "flickr8k-expert", captions=TOKENS)
    assert (loaded.protocol, loaded.pairs, loaded.dropped, loaded.reported_tau) == (
        "published", 4, 1, "c")
    assert [(r.candidate, r.score) for r in loaded.rows] == [
        (X, 4), (X, 3), (X, 4), (Y, 2), (Y, 3), (Y, 2), (Z, 1), (Z, 1), (Z, 2)]
    assert all(r.ratings == 1 for r in loaded.rows)
    assert loaded.rows[0].references == A_REFS  # all five, the judged image's own
    assert len(loaded.rows[-1].references or ()) == 5


def test_leave_one_out_keeps_own_captions_against_the_other_four_and_averages() -> None:
    loaded = load_judgements(EXPERT, "flickr8k-expert", captions=TOKENS,
                             protocol="leave-one-out")
    assert (loaded.pairs, loaded.dropped, len(loaded.rows)) == (4, 0, 4)
    assert [r.candidate for r in loaded.rows] == [S, X, Y, Z]
    assert [r.score for r in loaded.rows] == pytest.approx([11 / 3, 11 / 3, 7 / 3, 4 / 3])
    assert loaded.rows[0].references == A_REFS[1:]
    assert loaded.rows[1].references == A_REFS


def test_published_protocol_drops_an_own_caption_found_by_its_text(tmp_path: Path) -> None:
    tokens = tmp_path / "Flickr8k.token.txt"
    tokens.write_text(TOKENS.read_text() + "d.jpg#0\ta  dog runs across the beach\n")
    expert = tmp_path / "ExpertAnnotations.txt"
    expert.write_text("b.jpg\td.jpg#0\t4\t4\t4\nb.jpg\tc.jpg#2\t1\t1\t1\n")
    published = load_judgements(expert, "flickr8k-expert", captions=tokens)
    assert (published.dropped, [r.candidate for r in published.rows]) == (1, [Z, Z, Z])
    kept = load_judgements(expert, "flickr8k-expert", captions=tokens, protocol="leave-one-out")
    assert [len(r.references or ()) for r in kept.rows] == [5, 5]


def test_crowdflower_protocols() -> None:
    published = load_judgements(CROWDFLOWER, "flickr8k-crowdflower", captions=TOKENS)
    assert published.reported_tau == "b"
    assert [(r.candidate, r.score, r.ratings) for r in published.rows] == [
        (S, pytest.approx(1 / 3), 3), (X, 1.0, 3), (Z, 0.0, 3)]
    # Every caption judged for a.jpg leaves a.jpg's references, for all its rows.
    assert [r.references for r in published.rows[:2]] == [A_REFS[1:], A_REFS[1:]]
    kept = load_judgements(CROWDFLOWER, "flickr8k-crowdflower", captions=TOKENS,
                           protocol="leave-one-out")
    assert [r.references for r in kept.rows[:2]] == [A_REFS[1:], A_REFS]
    with pytest.raises(DatasetError) as err:
        load_judgements(CROWDFLOWER, "flickr8k-crowdflower", captions=None)
    assert err.value.code is ErrorCode.file_not_found


def test_generic_ratings_each_or_mean(tmp_path: Path) -> None:
    path = tmp_path / "j.csv"
    path.write_text("image,candidate,score,rater\na.jpg,a dog,4,r1\na.jpg,a dog,2,r2\n"
                    "b.jpg,a bike,1,r1\n")
    mean = load_judgements(path, "generic")
    assert [(r.image, r.score, r.ratings) for r in mean.rows] == [
        ("a.jpg", 3.0, 2), ("b.jpg", 1.0, 1)]
    each = load_judgements(path, "generic", ratings="each")
    assert [(r.image, r.score) for r in each.rows] == [("a.jpg", 4), ("a.jpg", 2), ("b.jpg", 1)]
    path.write_text("image,candidate,score,rater\na.jpg,a dog,4,r1\na.jpg,a dog,2,r1\n")
    with pytest.raises(DatasetError) as err:
        load_judgements(path, "generic")
    assert err.value.code is ErrorCode.duplicate_id


def test_tau_on_the_fixture_is_the_hand_computed_value() -> None:
    published = load_judgements(EXPERT, "flickr8k-expert", captions=TOKENS)
    (bleu,), _ = correlate(published, metrics=["Bleu_1"])
    assert (bleu.pairs, bleu.tau_c) == (9, pytest.approx(8 / 9))
    kept = load_judgements(EXPERT, "flickr8k-expert", captions=TOKENS, protocol="leave-one-out")
    (bleu,), _ = correlate(kept, metrics=["Bleu_1"])
    assert (bleu.pairs, bleu.tau_c) == (4, pytest.approx(15 / 16))
    assert bleu.tau_b == pytest.approx(5 / math.sqrt(30))
    flower = load_judgements(CROWDFLOWER, "flickr8k-crowdflower", captions=TOKENS)
    (bleu,), _ = correlate(flower, metrics=["Bleu_1"])
    assert bleu.tau_b == pytest.approx(1.0)


def test_correlate_command_names_the_protocol_and_the_reported_tau() -> None:
    result = CliRunner().invoke(app, [
        "correlate", str(EXPERT), "--layout", "flickr8k-expert", "--captions", str(TOKENS),
        "--metrics", "Bleu_1,CIDEr-D", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["judgements"] == {"layout": "flickr8k-expert", "protocol": "published",
                                  "pairs": 4, "dropped": 1, "rows": 9, "reported_tau": "c"}
    taus = {c["metric"]: c["tau_c"] for c in data["correlations"]}
    assert set(taus) == {"Bleu_1", "CIDEr"}
    assert taus["Bleu_1"] == pytest.approx(8 / 9)
    bad = CliRunner().invoke(app, ["correlate", str(EXPERT), "--layout", "flickr8k-expert",
                                   "--captions", str(TOKENS), "--protocol", "mine"])
    assert bad.exit_code == 2
    assert "error[invalid_argument]" in bad.output


def write_published_sized_files(folder: Path) -> tuple[Path, Path, Path]:
    """Files of the published sizes: 8,092 images x 5 captions = 40,460; 5,822 expert
    judgements; 47,830 CrowdFlower pairs."""
    images = [f"{1000000 + i}_{i:010x}.jpg" for i in range(8092)]
    tokens = folder / "Flickr8k.token.txt"
    tokens.write_text("".join(f"{im}#{k}\ta caption number {k} of image {i} .\n"
                              for i, im in enumerate(images) for k in range(5)))
    expert = folder / "ExpertAnnotations.txt"
    expert.write_text("".join(
        f"{images[i % 1000]}\t{images[(i * 7) % 8092]}#{i % 5}\t{1 + i % 4}\t{1 + i % 3}\t2\n"
        for i in range(5822)))
    flower = folder / "CrowdFlowerAnnotations.txt"
    flower.write_text("".join(
        f"{images[i % 1000]}\t{images[(i * 13) % 8092]}#{i % 5}\t0.333333\t1\t2\n"
        for i in range(47830)))
    return tokens, expert, flower


def test_loading_files_of_the_published_size_is_linear(tmp_path: Path) -> None:
    tokens, expert, flower = write_published_sized_files(tmp_path)
    started = time.perf_counter()
    loaded = load_judgements(expert, "flickr8k-expert", captions=tokens)
    expert_s = time.perf_counter() - started
    started = time.perf_counter()
    crowd = load_judgements(flower, "flickr8k-crowdflower", captions=tokens)
    flower_s = time.perf_counter() - started
    print(f"loaded 5,822 expert judgements in {expert_s:.3f} s, "  # noqa: T201
          f"47,830 CrowdFlower pairs in {flower_s:.3f} s")
    assert (loaded.pairs, crowd.pairs) == (5822, 47830)
    # Measured well under a second on a 2-core host; the bound only catches a quadratic scan
    # (minutes) without failing on a loaded machine.
    assert max(expert_s, flower_s / 2) < 5
