"""Quality score of one variant: a number in [0, 1] and the parts it is made of.

Parts (each in [0, 1]):

``compliance``  1.0 when the text met its platform's rules as written (first try or
                the one regeneration), 0.5 when it had to be repaired, 0.0 when it
                is still in breach (empty).
``policy``      1.0 with no copy-policy flag (``schemas.checks.policy.check_copy``), else 0.0.
``repetition``  distinct word uni- and bigram ratio: 1.0 for no repeated words.
``image_text``  CLIP-S (``worker.models.clip``: 2.5 * max(cos, 0) with the text prompted
                "A photo depicts ", the evaluator's CLIP-S), capped at 1, when a CLIP
                model is configured.

The score is the weighted mean of the parts present. ``QUALITY_SCORE_VERSION``
(``schemas.tables``) names this definition: each variant's provenance and each
stored threshold carry it, and a threshold fitted on another version is stale.
Flags (``policy:<rule id>``, ``near_duplicate``, ``repetitive``, ``empty``) block
auto-approval whatever the score.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from schemas.checks.policy import check_copy

WEIGHTS = {"compliance": 0.35, "policy": 0.25, "repetition": 0.2, "image_text": 0.2}
REPETITIVE_BELOW = 0.5


@dataclass(frozen=True)
class Quality:
    score: float
    parts: dict[str, float]
    flags: tuple[str, ...] = field(default=())

    def approvable(self, threshold: float | None) -> bool:
        """Auto-approve only with no flags and a score at or above the tenant's threshold."""
        return threshold is not None and not self.flags and self.score >= threshold


def image_text(clip_s: float) -> float:
    """The image-text part: CLIP-S capped to [0, 1]."""
    return min(1.0, max(0.0, clip_s))


def repetition(text: str) -> float:
    words = text.casefold().split()
    if len(words) < 2:
        return 1.0
    bigrams = list(zip(words, words[1:], strict=False))
    return (len(set(words)) / len(words) + len(set(bigrams)) / len(bigrams)) / 2


def policy_flags(
    text: str,
    *,
    banned_terms: Sequence[str] = (),
    allow_domains: Sequence[str] = (),
    allow_handles: Sequence[str] = (),
) -> list[str]:
    """``policy:<rule id>`` for each copy-policy finding on ``text``, sorted, unique."""
    flags = check_copy(
        text,
        banned_terms=tuple(banned_terms),
        allow_domains=tuple(allow_domains),
        allow_handles=tuple(allow_handles),
    )
    return sorted({f"policy:{flag.rule_id}" for flag in flags})


def assess(
    text: str,
    *,
    compliance: float,
    policy: Sequence[str],
    image_text: float | None = None,
    extra_flags: Sequence[str] = (),
) -> Quality:
    parts = {"compliance": compliance, "repetition": round(repetition(text), 4)}
    flags = list(extra_flags)
    parts["policy"] = 0.0 if policy else 1.0
    flags.extend(policy)
    if image_text is not None:
        parts["image_text"] = round(image_text, 4)
    if parts["repetition"] < REPETITIVE_BELOW:
        flags.append("repetitive")
    if not text.strip():
        flags.append("empty")
    total = sum(WEIGHTS[k] for k in parts)
    score = sum(WEIGHTS[k] * v for k, v in parts.items()) / total
    return Quality(
        score=round(min(1.0, max(0.0, score)), 4),
        parts=parts,
        flags=tuple(dict.fromkeys(flags)),
    )
