"""Platform rules applied to written copy: measure, check, repair, compare.

How each platform counts is documented in :mod:`schemas.platforms`. Repairs
are deterministic and applied in a fixed order: strip what the platform
forbids (emoji, ``#``), drop surplus hashtags, then cut at a word boundary.
"""

from __future__ import annotations

import difflib
import unicodedata
from dataclasses import dataclass

import regex

from schemas.platforms import Platform

_CLUSTER = regex.compile(r"\X")
_EMOJI_PART = regex.compile(
    r"\p{Emoji_Presentation}|\uFE0F|\u20E3|\p{Regional_Indicator}|[\U0001F000-\U0001FAFF]"
)
_HASHTAG = regex.compile(r"(?<![\w&#＃])[#＃](?!\d+\b)\w+")
_HASH = regex.compile(r"[#＃]")
_URL = regex.compile(
    r"(?<![\w@.])(?:https?://[^\s<>\"]+"
    r"|(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+"
    r"(?:com|net|org|io|co|ai|app|dev|shop|store|info|biz|me|tv|us|uk|de|fr|jp|cn|eu)"
    r"\b(?:/[^\s<>\"]*)?)",
    regex.IGNORECASE,
)
_URL_TRAILING = ".,:;!?'\")]}"
_SPACES = regex.compile(r"[ \t]+")
_BLANK_LINES = regex.compile(r"\n{3,}")
# Generated text keeps newlines, ZWJ (emoji sequences) and tag characters (subdivision
# flags); other controls, bidi marks and zero-width spaces are dropped, and so are lone
# surrogates (a served model's JSON may escape one: no database or callback takes it).
_INVISIBLE = regex.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064"
    r"\u2066-\u2069\ufeff\ud800-\udfff]"
)
_CUT_TRAILING = " \t\n,;:-–—/&(["

# twitter-text v3: code points in these ranges weigh 1, all others 2.
_LIGHT_RANGES = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))
_TWITTER_URL_WEIGHT = 23
_TWITTER_EMOJI_WEIGHT = 2

SIMILAR_THRESHOLD = 0.85


@dataclass(frozen=True)
class Breach:
    rule: str  # too_long, too_many_hashtags, emoji_not_allowed, hash_not_allowed, empty
    detail: str


def is_emoji(cluster: str) -> bool:
    """Whether a grapheme cluster is an emoji (presentation, keycap, flag, ZWJ sequence)."""
    return _EMOJI_PART.search(cluster) is not None


def urls(text: str) -> list[str]:
    return [m.group().rstrip(_URL_TRAILING) for m in _URL.finditer(text)]


def hashtags(text: str) -> list[str]:
    return _HASHTAG.findall(text)


def _twitter_weight(text: str) -> int:
    text = unicodedata.normalize("NFC", text)
    total = 0
    for url in urls(text):
        text = text.replace(url, " ", 1)
        total += _TWITTER_URL_WEIGHT - 1  # the placeholder space below counts 1
    if text.isascii():  # no emoji, every character in the first light range
        return total + len(text)
    for cluster in _CLUSTER.findall(text):
        if is_emoji(cluster):
            total += _TWITTER_EMOJI_WEIGHT
            continue
        for ch in cluster:
            cp = ord(ch)
            total += 1 if any(lo <= cp <= hi for lo, hi in _LIGHT_RANGES) else 2
    return total


def _wide_graphemes(text: str) -> int:
    return sum(
        2 if unicodedata.east_asian_width(cluster[0]) in ("W", "F") else 1
        for cluster in _CLUSTER.findall(unicodedata.normalize("NFC", text))
    )


def measure(text: str, platform: Platform) -> int:
    """The length of ``text`` as ``platform`` counts it."""
    if platform.counting == "twitter_weighted":
        return _twitter_weight(text)
    if platform.counting == "wide_graphemes":
        return _wide_graphemes(text)
    return len(text.encode("utf-16-le")) // 2


def check(text: str, platform: Platform) -> list[Breach]:
    """Every rule of ``platform`` that ``text`` breaks; empty when it complies."""
    breaches: list[Breach] = []
    if not text.strip():
        return [Breach("empty", "the text is empty")]
    if not platform.allow_emoji and any(is_emoji(c) for c in _CLUSTER.findall(text)):
        breaches.append(Breach("emoji_not_allowed", f"{platform.label} allows no emoji"))
    if not platform.allow_hash and _HASH.search(text):
        breaches.append(Breach("hash_not_allowed", f"{platform.label} allows no '#'"))
    elif platform.max_hashtags is not None and len(hashtags(text)) > platform.max_hashtags:
        breaches.append(
            Breach(
                "too_many_hashtags",
                f"it had {len(hashtags(text))} hashtags; at most {platform.max_hashtags}",
            )
        )
    length = measure(text, platform)
    if length > platform.max_chars:
        breaches.append(
            Breach("too_long", f"it measured {length}; at most {platform.max_chars} characters")
        )
    return breaches


def rules_text(platform: Platform) -> str:
    """The platform's rules in words, for the prompt."""
    parts = [f"Rules: at most {platform.max_chars} characters"]
    if platform.counting == "twitter_weighted":
        parts[0] += " (a link counts 23, an emoji or CJK character counts 2)"
    elif platform.counting == "wide_graphemes":
        parts[0] += " (a CJK character counts 2)"
    if not platform.allow_hash:
        parts.append("no hashtags and no '#'")
    elif platform.max_hashtags is not None:
        parts.append(f"at most {platform.max_hashtags} hashtags")
    if not platform.allow_emoji:
        parts.append("no emoji")
    return "; ".join(parts) + "."


def _tidy(text: str) -> str:
    """Single spaces, no space at line ends, at most one blank line in a row."""
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def clean_generated(text: str) -> str:
    """Model output as copy: no control or bidi characters, tidy spaces."""
    return _tidy(_INVISIBLE.sub("", unicodedata.normalize("NFC", text)))


def strip_emoji(text: str) -> str:
    if text.isascii():  # no emoji to strip
        return _tidy(text)
    return _tidy("".join(c for c in _CLUSTER.findall(text) if not is_emoji(c)))


def drop_hashtags(text: str, keep: int) -> str:
    """Keep the first ``keep`` hashtags, remove the rest."""
    seen = 0

    def replace(match: regex.Match[str]) -> str:
        nonlocal seen
        seen += 1
        return match.group() if seen <= keep else ""

    return _tidy(_HASHTAG.sub(replace, text))


def cut(text: str, platform: Platform) -> str:
    """The longest prefix that fits, ended at a word boundary where there is one."""
    clusters = _CLUSTER.findall(text)
    lo, hi = 0, len(clusters)  # fits(lo) holds, find the largest
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if measure("".join(clusters[:mid]), platform) <= platform.max_chars:
            lo = mid
        else:
            hi = mid - 1
    head = "".join(clusters[:lo])
    if lo < len(clusters) and not clusters[lo].isspace():
        space = max(head.rfind(" "), head.rfind("\n"))
        if space > 0:
            head = head[:space]
    return head.rstrip(_CUT_TRAILING)


def repair(text: str, platform: Platform) -> tuple[str, list[str]]:
    """Make ``text`` comply, deterministically; returns the text and what was done."""
    done: list[str] = []
    rules = {b.rule for b in check(text, platform)}
    if "emoji_not_allowed" in rules:
        text = strip_emoji(text)
        done.append("strip_emoji")
    if "hash_not_allowed" in rules:
        text = _tidy(_HASH.sub("", text))
        done.append("strip_hash")
    if "too_many_hashtags" in rules and platform.max_hashtags is not None:
        text = drop_hashtags(text, platform.max_hashtags)
        done.append("drop_hashtags")
    if measure(text, platform) > platform.max_chars:
        text = cut(text, platform)
        done.append("cut_at_word")
    return text, done


def normalise(text: str) -> str:
    """Text as compared for near-duplicates: NFKC, casefolded, no emoji, no punctuation."""
    text = strip_emoji(unicodedata.normalize("NFKC", text)).casefold()
    return " ".join(regex.sub(r"[^\w\s]", " ", text).split())


def similarity(a: str, b: str) -> float:
    """Similarity of two already-normalised texts in [0, 1]."""
    if a == b:
        return 1.0
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    if matcher.real_quick_ratio() < SIMILAR_THRESHOLD:
        return matcher.real_quick_ratio()
    return matcher.ratio()
