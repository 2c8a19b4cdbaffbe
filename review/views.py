"""What the templates show, computed in Python: variant cards, diffs, chart geometry.

Nothing here builds markup: templates receive plain values and autoescape them, so
model text is always text.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby

from schemas.checks import rules
from schemas.platforms import PLATFORMS
from schemas.store.review_queue import Tally
from schemas.tables import ReviewState, Variant

STATE_LABELS = {
    ReviewState.pending_review: "Waiting",
    ReviewState.approved: "Approved",
    ReviewState.edited: "Edited",
    ReviewState.rejected: "Rejected",
    ReviewState.auto_approved: "Auto-approved",
}
PART_LABELS = {
    "compliance": "Platform rules",
    "policy": "Copy policy",
    "repetition": "Variety of words",
    "image_text": "Matches the image",
}


@dataclass(frozen=True)
class Card:
    """One variant as the page shows it."""

    id: str
    job_id: str
    style: str
    platform: str
    platform_label: str
    text: str
    length: int
    limit: int
    counting: str
    score: float
    parts: list[tuple[str, float]]
    flags: list[str]
    state: str
    state_label: str

    @property
    def over(self) -> bool:
        return self.length > self.limit

    @property
    def pending(self) -> bool:
        return self.state == ReviewState.pending_review


def card(variant: Variant) -> Card:
    platform = PLATFORMS.get(variant.platform)
    length = rules.measure(variant.text, platform) if platform else len(variant.text)
    return Card(
        id=variant.id,
        job_id=variant.job_id,
        style=variant.style,
        platform=variant.platform,
        platform_label=platform.label if platform else variant.platform,
        text=variant.text,
        length=length,
        limit=platform.max_chars if platform else 0,
        counting=platform.counting if platform else "utf16",
        score=variant.quality_score,
        parts=[(PART_LABELS.get(k, k), v) for k, v in sorted(variant.quality_parts.items())],
        flags=list(variant.flags),
        state=variant.review_state,
        state_label=STATE_LABELS.get(ReviewState(variant.review_state), variant.review_state),
    )


@dataclass(frozen=True)
class PlatformGroup:
    platform: str
    label: str
    rules: str
    styles: list[tuple[str, list[Card]]]


def grouped(variants: Iterable[Variant]) -> list[PlatformGroup]:
    """Variants by platform, then style, each in index order."""
    ordered = sorted(variants, key=lambda v: (v.platform, v.style, v.index))
    out = []
    for name, same_platform in groupby(ordered, key=lambda v: v.platform):
        platform = PLATFORMS.get(name)
        styles = [
            (style, [card(v) for v in same_style])
            for style, same_style in groupby(same_platform, key=lambda v: v.style)
        ]
        out.append(
            PlatformGroup(
                platform=name,
                label=platform.label if platform else name,
                rules=rules.rules_text(platform) if platform else "",
                styles=styles,
            )
        )
    return out


_TOKENS = re.compile(r"\s+|\S+\s*")
REWRITE_BELOW = 0.4  # less alike than this: shown as the old text out, the new text in


def word_diff(before: str, after: str) -> list[tuple[str, str]]:
    """``before`` → ``after`` as (kind, text) pieces: ``same``, ``removed``, ``added``.
    Words carry their trailing space; a rewrite shows as one removal and one addition
    rather than a confetti of coincidental matches."""
    a, b = _TOKENS.findall(before), _TOKENS.findall(after)
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    if matcher.ratio() < REWRITE_BELOW:
        return [("removed", before), ("added", after)]
    pieces: list[tuple[str, str]] = []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            pieces.append(("same", "".join(a[i1:i2])))
            continue
        if i2 > i1:
            pieces.append(("removed", "".join(a[i1:i2])))
        if j2 > j1:
            pieces.append(("added", "".join(b[j1:j2])))
    return pieces


# Charts: server-rendered SVG. Geometry here, drawing in templates/stats.html.


def model_label(model_id: str) -> str:
    """A model id as a chart shows it: a local folder by its last part."""
    return model_id.rstrip("/").rsplit("/", 1)[-1] if model_id.startswith("/") else model_id


@dataclass(frozen=True)
class Bar:
    label: str
    decided: int
    acceptance: float
    edit_rate: float
    y: float
    acceptance_w: float
    edit_w: float


@dataclass(frozen=True)
class BarChart:
    title: str
    width: int
    height: int
    plot_x: int
    plot_w: int
    bars: list[Bar]
    ticks: list[tuple[float, str]] = field(default_factory=list)


ROW_H = 34
BAR_H = 11


def bar_chart(title: str, tallies: Sequence[Tally], *, width: int = 560) -> BarChart:
    """Acceptance and edit rate per group, one pair of bars per row, busiest first."""
    plot_x, plot_w = 170, width - 170 - 70
    ordered = sorted((t for t in tallies if t.decided), key=lambda t: (-t.decided, t.key))
    bars = [
        Bar(
            label=t.key,
            decided=t.decided,
            acceptance=t.acceptance,
            edit_rate=t.edit_rate,
            y=26 + i * ROW_H,
            acceptance_w=round(plot_w * t.acceptance, 1),
            edit_w=round(plot_w * t.edit_rate, 1),
        )
        for i, t in enumerate(ordered)
    ]
    ticks = [(plot_x + plot_w * f, f"{f:.0%}") for f in (0.0, 0.25, 0.5, 0.75, 1.0)]
    height = 26 + max(len(bars), 1) * ROW_H + 24
    return BarChart(title, width, height, plot_x, plot_w, bars, ticks)


@dataclass(frozen=True)
class LineChart:
    width: int
    height: int
    left: int
    top: int
    plot_w: int
    plot_h: int
    acceptance: str  # SVG polyline points
    edits: str
    dots: list[tuple[float, float, float, str]]  # x, y acceptance, y edit rate, day
    volume: list[tuple[float, float, float, int, str]]  # x, y, h, count, day
    x_labels: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    max_volume: int


def line_chart(days: Sequence[Tally], *, width: int = 1100, height: int = 260) -> LineChart:
    """Acceptance and edit rate per day as lines (days without decisions skipped), over
    the number of decisions per day as bars."""
    left, top, right, bottom = 56, 16, 56, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(len(days), 1)
    step = plot_w / n
    most = max((d.decided for d in days), default=0) or 1

    def x(i: int) -> float:
        return round(left + step * (i + 0.5), 1)

    def y(rate: float) -> float:
        return round(top + plot_h * (1 - rate), 1)

    decided = [(i, d) for i, d in enumerate(days) if d.decided]
    volume = []
    for i, d in enumerate(days):
        h = round(plot_h * d.decided / most * 0.9, 1)
        volume.append((round(left + step * i + step * 0.2, 1), round(top + plot_h - h, 1), h,
                       d.decided, d.key))  # fmt: skip
    label_every = max(1, n // 8)
    return LineChart(
        width=width,
        height=height,
        left=left,
        top=top,
        plot_w=plot_w,
        plot_h=plot_h,
        acceptance=" ".join(f"{x(i)},{y(d.acceptance)}" for i, d in decided),
        edits=" ".join(f"{x(i)},{y(d.edit_rate)}" for i, d in decided),
        dots=[(x(i), y(d.acceptance), y(d.edit_rate), d.key) for i, d in decided],
        volume=volume,
        x_labels=[(x(i), d.key[5:]) for i, d in enumerate(days) if i % label_every == 0],
        y_ticks=[(y(f), f"{f:.0%}") for f in (0.0, 0.25, 0.5, 0.75, 1.0)],
        max_volume=most,
    )
