"""The platforms a variant can be written for, with their rules.

The rules live in ``platform_rules.json`` (versioned, each rule with its source
and the date it was checked); this module loads them once. How text is
*measured* differs per platform, and is named by ``Platform.counting``:

``twitter_weighted``
    X: twitter-text v3 weighting. Text is NFC-normalised; each URL counts 23;
    each emoji (a whole grapheme cluster, ZWJ sequences, flags and skin tones
    included) counts 2; other code points count 1 inside the ranges
    U+0000-U+10FF, U+2000-U+200D, U+2010-U+201F, U+2032-U+2037 and 2 outside
    them (CJK, for example).
``utf16``
    Meta (Instagram, Facebook) and LinkedIn: UTF-16 code units, what their web
    composers' ``maxlength`` counts. It never counts fewer than the platform
    does, so a text we pass is never cut: an emoji outside the BMP counts 2, a
    ZWJ family counts all its parts.
``wide_graphemes``
    Google Ads and TikTok: user-perceived characters (extended grapheme
    clusters), where East Asian wide and fullwidth characters count 2, as both
    platforms document for double-width characters.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Counting = Literal["twitter_weighted", "utf16", "wide_graphemes"]

RULES_FILE = Path(__file__).with_name("platform_rules.json")


@dataclass(frozen=True)
class Platform:
    name: str
    max_chars: int
    label: str = ""
    limit_kind: Literal["hard", "recommended"] = "hard"
    counting: Counting = "utf16"
    max_hashtags: int | None = None  # None: no limit
    allow_emoji: bool = True
    allow_hash: bool = True
    source: str = ""
    checked: str = ""


def _load(path: Path) -> tuple[str, dict[str, Platform]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    platforms = {
        name: Platform(
            name=name,
            max_chars=int(rule["max_length"]),
            label=rule["label"],
            limit_kind=rule["limit_kind"],
            counting=rule["counting"],
            max_hashtags=rule["max_hashtags"],
            allow_emoji=bool(rule["allow_emoji"]),
            allow_hash=bool(rule["allow_hash"]),
            source=rule["source"],
            checked=rule["checked"],
        )
        for name, rule in data["platforms"].items()
    }
    return str(data["version"]), platforms


RULES_VERSION, PLATFORMS = _load(RULES_FILE)

PLATFORM_NAMES: frozenset[str] = frozenset(PLATFORMS)
