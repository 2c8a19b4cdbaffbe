"""Platform counters and deterministic repairs against edge cases."""

from __future__ import annotations

import json

import pytest

from schemas.checks import rules
from schemas.checks.rules import check, measure, repair
from schemas.platforms import PLATFORMS, RULES_VERSION, Platform

pytestmark = pytest.mark.unit

X, IG, TT, GH = (PLATFORMS[n] for n in ("x", "instagram", "tiktok", "google_headline"))
FAMILY = "\U0001F468\u200d\U0001F469\u200d\U0001F467"  # 👨‍👩‍👧, 5 code points, 8 UTF-16 units
FLAG = "\U0001F1FA\U0001F1F8"
THUMB_SKIN = "\U0001F44D\U0001F3FD"
KEYCAP = "1\ufe0f\u20e3"


def breaches(text: str, platform: Platform) -> list[str]:
    return [b.rule for b in check(text, platform)]


def test_rules_file_is_versioned_with_sources() -> None:
    assert RULES_VERSION
    assert set(PLATFORMS) == {"x", "instagram", "facebook", "facebook_headline",
                              "google_headline", "google_description", "tiktok", "linkedin"}
    for platform in PLATFORMS.values():
        assert platform.source.startswith("https://")
        assert platform.checked
    assert (X.max_chars, IG.max_chars, IG.max_hashtags, TT.max_chars) == (280, 2200, 5, 100)
    assert (PLATFORMS["facebook"].max_chars, PLATFORMS["facebook_headline"].max_chars) == (125, 40)
    assert (GH.max_chars, PLATFORMS["google_description"].max_chars) == (30, 90)
    assert PLATFORMS["linkedin"].max_chars == 150


@pytest.mark.parametrize(
    ("text", "weight"),
    [
        ("a" * 280, 280),
        ("漢" * 140, 280),
        ("\U0001F600" * 140, 280),
        (FAMILY, 2),
        (FLAG, 2),
        (THUMB_SKIN, 2),
        (KEYCAP, 2),
        ("\u2764\ufe0f", 2),
        ("\u00e9", 1),
        ("e\u0301", 1),  # NFC composes to é
        ("\u2014\u2019", 2),  # em dash and right quote are in the weight-1 ranges
        ("https://example.com/a/very/long/path?with=query&and=more", 23),
        ("see example.com now", 4 + 23 + 4),
        ("http://a.co, then", 23 + 6),
    ],
)
def test_x_weighted_length(text: str, weight: int) -> None:
    assert measure(text, X) == weight


def test_x_exact_limit_and_one_over() -> None:
    assert breaches("a" * 280, X) == []
    assert breaches("a" * 281, X) == ["too_long"]
    assert breaches("漢" * 140, X) == []
    assert breaches("漢" * 140 + "a", X) == ["too_long"]
    url = "https://example.com/" + "x" * 100
    assert breaches("a" * 256 + " " + url, X) == []  # 256 + 1 + 23 = 280
    assert breaches("a" * 257 + " " + url, X) == ["too_long"]
    assert breaches(FAMILY * 140, X) == []
    assert breaches(FAMILY * 141, X) == ["too_long"]


def test_utf16_counting_for_meta_and_linkedin() -> None:
    assert measure("\U0001F600", IG) == 2
    assert measure(FAMILY, IG) == 8
    assert measure("漢", IG) == 1
    assert breaches("a" * 2200, IG) == []
    assert breaches("a" * 2199 + "\U0001F600", IG) == ["too_long"]


def test_wide_grapheme_counting_for_google_and_tiktok() -> None:
    assert measure("e\u0301" * 30, GH) == 30
    assert breaches("漢" * 15, GH) == []
    assert breaches("漢" * 15 + "a", GH) == ["too_long"]
    assert measure("ｱ", GH) == 1  # halfwidth katakana is narrow
    assert measure("Ａ", GH) == 2  # fullwidth Latin is wide


def test_hashtag_limit() -> None:
    five = " ".join(f"#tag{i}" for i in range(5))
    assert breaches(f"Sunny day {five}", IG) == []
    assert breaches(f"Sunny day {five} #six", IG) == ["too_many_hashtags"]
    assert rules.hashtags("we are #1 at a#b and #été #x_y") == ["#été", "#x_y"]


def test_tiktok_forbids_emoji_and_hash() -> None:
    assert breaches("Fresh drop \U0001F525 #sale", TT) == ["emoji_not_allowed", "hash_not_allowed"]
    text, done = repair("Fresh drop \U0001F525 #sale today " + FAMILY, TT)
    assert text == "Fresh drop sale today"
    assert done == ["strip_emoji", "strip_hash"]
    assert breaches(text, TT) == []
    assert breaches("©2026 brand", TT) == []  # text-presentation © is not an emoji


def test_repair_drops_surplus_hashtags_keeping_the_first() -> None:
    text, done = repair("Beach day #a #b #c #d #e #f #g", IG)
    assert text == "Beach day #a #b #c #d #e"
    assert done == ["drop_hashtags"]


def test_cut_at_word_boundary() -> None:
    text, done = repair("Fresh bread from our own oven every morning", GH)
    assert done == ["cut_at_word"]
    assert text == "Fresh bread from our own oven"
    assert measure(text, GH) <= 30
    exact = "a" * 30
    assert repair(exact, GH) == (exact, [])


def test_cut_never_splits_a_grapheme_or_a_url() -> None:
    text, _ = repair("漢" * 20, GH)  # no spaces: cut between graphemes
    assert text == "漢" * 15
    text, _ = repair(FAMILY * 141, X)
    assert text == FAMILY * 140
    url = "https://example.com/" + "x" * 300
    text, _ = repair("b" * 270 + " " + url, X)
    assert text == "b" * 270


def test_clean_generated_drops_controls_and_bidi_keeps_emoji_sequences() -> None:
    raw = "Hi\u202e there\u200b\x07 " + FAMILY + "\n\n\n\nBye\u2066"
    assert rules.clean_generated(raw) == "Hi there " + FAMILY + "\n\nBye"
    # A lone surrogate (a served model's JSON can escape one) is dropped: it cannot be
    # encoded, so neither a database nor a callback body would take the text.
    served = json.loads('"Sunny\\ud800 day \\ud83d\\ude0e\\udfff"')
    assert rules.clean_generated(served) == "Sunny day \U0001F60E"
    rules.clean_generated(served).encode("utf-8")


def test_near_duplicate_similarity() -> None:
    a = rules.normalise("Sunny beach, cold drinks! \U0001F60E")
    b = rules.normalise("sunny beach cold drinks")
    c = rules.normalise("A quiet street at night")
    assert rules.similarity(a, b) == 1.0
    assert rules.similarity(a, c) < rules.SIMILAR_THRESHOLD
    near = rules.normalise("Sunny beach, cold drinks today")
    far = rules.normalise("Sunny beach, cold drinks and warm sand all day")
    assert rules.similarity(a, near) >= rules.SIMILAR_THRESHOLD
    assert rules.similarity(a, far) < rules.SIMILAR_THRESHOLD
