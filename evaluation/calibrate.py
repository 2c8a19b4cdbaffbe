"""Calibrating the quality gate: the auto-approve threshold that reaches a target precision.

Reviewers' decisions are the labels: ``approved`` is positive; ``edited`` and
``rejected`` are negative (an edited variant was not publishable as written).
Variants still ``pending_review`` and those ``auto_approved`` (never seen by
a reviewer) are left out.

For every candidate threshold t (each distinct quality score), the variants
with score >= t are the ones that would be auto-approved; precision is the
share of them a reviewer approved, recall the share of all approved variants
they cover. The fitted threshold is the *lowest* t whose precision reaches the
target with at least ``min_support`` variants above it, i.e. the one that
auto-approves the most while keeping the target; ``None`` when no t does
(the tenant should then not auto-approve at all).

A threshold is only as good as the scores it was fitted on: a tenant is fitted on
the variants scored under today's ``QUALITY_SCORE_VERSION`` only, and says how
many reviewed variants scored under an older version it left out.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from evaluation.errors import EvaluationError
from schemas.errors import ErrorCode

if TYPE_CHECKING:
    from sqlmodel import Session

POSITIVE = frozenset({"approved"})
NEGATIVE = frozenset({"edited", "rejected"})
IGNORED = frozenset({"pending_review", "auto_approved"})


@dataclass(frozen=True)
class CurvePoint:
    threshold: float
    precision: float
    recall: float
    auto_approved: int  # variants with score >= threshold among the reviewed ones


@dataclass(frozen=True)
class AtThreshold:
    """Precision and recall at the chosen threshold, with 95% bootstrap intervals over the
    reviewed variants, and the share of them that would be auto-approved."""

    precision: tuple[float, float, float]  # value, low, high
    recall: tuple[float, float, float]
    auto_approved_share: float


@dataclass(frozen=True)
class Calibration:
    threshold: float | None
    target_precision: float
    min_support: int
    positives: int
    negatives: int
    curve: list[CurvePoint]
    at_threshold: AtThreshold | None = None
    left_out_older: int = 0  # reviewed variants scored under an older quality score

    def summary(self) -> str:
        at = self.at_threshold
        text = (f"threshold: {self.threshold} (precision {at.precision[0]:.3f} "
                f"[{at.precision[1]:.3f}, {at.precision[2]:.3f}], recall {at.recall[0]:.3f} "
                f"[{at.recall[1]:.3f}, {at.recall[2]:.3f}], {at.auto_approved_share:.1%} of "
                "reviewed variants auto-approved)" if at else
                f"no threshold reaches precision {self.target_precision} with "
                f"{self.min_support}+ variants")
        if self.left_out_older:
            text += (f"\n{self.left_out_older} reviewed variant(s) scored under an older "
                     "quality score left out")
        return text

    @property
    def point(self) -> CurvePoint | None:
        return next((p for p in self.curve if p.threshold == self.threshold), None)

    def as_dict(self) -> dict[str, object]:
        return {
            "threshold": self.threshold, "target_precision": self.target_precision,
            "min_support": self.min_support, "positives": self.positives,
            "negatives": self.negatives, "curve": [p.__dict__ for p in self.curve],
            "at_threshold": None if self.at_threshold is None else self.at_threshold.__dict__,
            "left_out_older": self.left_out_older,
        }


def fit_threshold(
    pairs: Iterable[tuple[float, str]], target_precision: float, *, min_support: int = 1
) -> Calibration:
    """Fit on (quality score, review decision) pairs; see the module docstring."""
    if not 0 < target_precision <= 1:
        raise EvaluationError(ErrorCode.invalid_argument, "target precision must be in (0, 1]")
    if min_support < 1:
        raise EvaluationError(ErrorCode.invalid_argument, "min_support must be at least 1")
    scores, labels = [], []
    for score, decision in pairs:
        if decision in IGNORED:
            continue
        if decision not in POSITIVE and decision not in NEGATIVE:
            raise EvaluationError(ErrorCode.invalid_argument, f"unknown decision {decision!r}")
        if not np.isfinite(score):
            raise EvaluationError(ErrorCode.invalid_argument, f"quality score {score!r}")
        scores.append(float(score))
        labels.append(decision in POSITIVE)
    if not scores:
        raise EvaluationError(ErrorCode.no_decisions, "no approved, edited or rejected variant")
    order = np.argsort(-np.asarray(scores), kind="stable")
    s, y = np.asarray(scores)[order], np.asarray(labels)[order]
    tp, count = np.cumsum(y), np.arange(1, len(y) + 1)
    last = np.r_[s[1:] != s[:-1], True]  # the last row of each run of equal scores
    positives = int(y.sum())
    curve = [
        CurvePoint(threshold=float(s[i]), precision=float(tp[i] / count[i]),
                   recall=float(tp[i] / positives) if positives else 0.0,
                   auto_approved=int(count[i]))
        for i in np.flatnonzero(last)
    ]
    eligible = [p for p in curve
                if p.precision >= target_precision and p.auto_approved >= min_support]
    threshold = min((p.threshold for p in eligible), default=None)
    at = None if threshold is None else at_threshold(s, y, threshold)
    return Calibration(threshold=threshold, target_precision=target_precision,
                       min_support=min_support, positives=positives,
                       negatives=len(y) - positives, curve=curve, at_threshold=at)


def at_threshold(scores: np.ndarray, labels: np.ndarray, threshold: float, *,
                 resamples: int = 1000, seed: int = 0) -> AtThreshold:
    """Resample the reviewed variants (multinomial counts); the threshold stays fixed."""
    above = scores >= threshold
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(scores), np.full(len(scores), 1 / len(scores)),
                             size=resamples).astype(float)
    tp, chosen, pos = counts @ (above & labels), counts @ above, counts @ labels
    with np.errstate(divide="ignore", invalid="ignore"):
        precision, recall = tp / chosen, tp / pos

    def band(value: float, draws: np.ndarray) -> tuple[float, float, float]:
        finite = draws[np.isfinite(draws)]
        if not finite.size:
            return (value, value, value)
        low, high = np.percentile(finite, [2.5, 97.5])
        return (value, float(low), float(high))

    hits = int((above & labels).sum())
    return AtThreshold(
        precision=band(hits / int(above.sum()), precision),
        recall=band(hits / int(labels.sum()) if labels.any() else 0.0, recall),
        auto_approved_share=float(above.mean()),
    )


def calibrate_tenant(
    *, session: Session, tenant: str, target_precision: float, store: bool,
    min_support: int = 1,
) -> Calibration:
    """Fit the tenant's threshold (``tenant``: its name, or its id) from its reviewed
    variants scored under today's quality score (provenance ``quality_score_version``;
    the older ones are counted and left out); ``store`` writes it with that version.

    Storing an unreachable target writes ``None``: the tenant stops auto-approving.
    """
    from sqlmodel import select

    from schemas.tables import QUALITY_SCORE_VERSION, Job, Tenant, Variant

    row = session.exec(select(Tenant).where(Tenant.name == tenant)).first() or session.get(
        Tenant, tenant)
    if row is None:
        raise EvaluationError(ErrorCode.tenant_not_found, f"no tenant named {tenant!r}")
    tenant_id = row.id
    reviewed = sorted(POSITIVE | NEGATIVE)
    rows = session.exec(
        select(Variant.quality_score, Variant.review_state, Variant.provenance)
        .join(Job, Job.id == Variant.job_id)  # type: ignore[arg-type]
        .where(Job.tenant_id == tenant_id, Variant.review_state.in_(reviewed))  # type: ignore[attr-defined]
    ).all()
    current = [(float(q), str(r)) for q, r, made in rows if score_version(made) ==
               QUALITY_SCORE_VERSION]
    older = len(rows) - len(current)
    if not current and older:
        raise EvaluationError(
            ErrorCode.no_decisions,
            f"all {older} reviewed variants of {tenant!r} were scored under an older quality "
            f"score than version {QUALITY_SCORE_VERSION}; review newer ones first")
    result = replace(fit_threshold(current, target_precision, min_support=min_support),
                     left_out_older=older)
    if store:
        row.auto_approve_threshold = result.threshold
        row.auto_approve_score_version = (
            QUALITY_SCORE_VERSION if result.threshold is not None else None)
        session.add(row)
        session.commit()
    return result


def score_version(provenance: dict[str, object] | None) -> int:
    """The quality-score version a variant was scored under (1: before versions)."""
    version = (provenance or {}).get("quality_score_version")
    return version if isinstance(version, int) else 1


def read_decisions(path: Path) -> list[tuple[float, str]]:
    """(score, decision) rows of a CSV with columns score, decision."""
    if not path.is_file():
        raise EvaluationError(ErrorCode.file_not_found, f"decisions not found: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    try:
        return [(float(r["score"]), r["decision"].strip()) for r in rows]
    except (KeyError, ValueError) as exc:
        raise EvaluationError(ErrorCode.malformed,
                              f"{path}: needs columns score, decision ({exc})") from exc
