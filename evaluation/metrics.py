"""Corpus metrics as functions of summed per-image statistics.

Every corpus metric the toolkit reports is ``aggregate(sum_i stats_i)`` for a
per-image statistics row ``stats_i``:

- BLEU-n (pycocoevalcap's BleuScorer, ``closest`` reference length): the row is
  ``[testlen, reflen, guess_1..4, correct_1..4]``; corpus BLEU is computed from
  the summed counts, never by averaging sentence BLEU;
- METEOR: the row is the jar's 23 alignment statistics (see ``meteor.py``);
- ROUGE-L, CIDEr-D (with the document frequencies of the full reference set
  held fixed), SPICE, CLIP-S, RefCLIP-S: the row is ``[score, 1]`` and the
  aggregate is the mean.

That is what lets the bootstrap and the paired tests resample images with a
weight vector and a matrix product instead of re-running a scorer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.errors import EvaluationError
from evaluation.meteor import meteor_from_stats
from schemas.errors import ErrorCode

BLEU_ORDER = 4
COCO_METRICS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
CLIP_METRICS = ("CLIP-S", "RefCLIP-S")
KNOWN_METRICS = COCO_METRICS + CLIP_METRICS
# Other names people use for the same numbers: pycocoevalcap's "CIDEr" is CIDEr-D.
ALIASES = {"CIDEr-D": "CIDEr"}
# The pycocoevalcap guards against zero counts, reproduced exactly.
_TINY, _SMALL = 1e-15, 1e-9

Aggregate = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Statistic:
    """A metric's per-image statistics (n x k) and the function of their sum."""

    name: str
    rows: np.ndarray
    aggregate: Aggregate

    def corpus(self, weights: np.ndarray | None = None) -> np.ndarray:
        """The metric for each weighting of the images: weights (..., n) -> (...)."""
        if weights is None:
            return self.aggregate(self.rows.sum(axis=0))
        return self.aggregate(weights @ self.rows)


def bleu_from_counts(totals: np.ndarray, n: int) -> np.ndarray:
    """Corpus BLEU-n from summed ``[testlen, reflen, guess_1..4, correct_1..4]``."""
    t = np.asarray(totals, dtype=float)
    testlen, reflen = t[..., 0], t[..., 1]
    guess, correct = t[..., 2 : 2 + BLEU_ORDER], t[..., 2 + BLEU_ORDER :]
    product = np.ones(t.shape[:-1])
    for k in range(n):
        product = product * ((correct[..., k] + _TINY) / (guess[..., k] + _SMALL))
    bleu = product ** (1.0 / n)
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    with np.errstate(divide="ignore"):
        penalty = np.where(ratio < 1, np.exp(1 - 1 / ratio), 1.0)
    return bleu * penalty


def mean_of(values: np.ndarray) -> np.ndarray:
    return values[..., 0] / values[..., 1]


def bleu_statistic(n: int, rows: np.ndarray) -> Statistic:
    return Statistic(f"Bleu_{n}", rows, lambda totals: bleu_from_counts(totals, n))


def meteor_statistic(rows: np.ndarray) -> Statistic:
    return Statistic("METEOR", rows, meteor_from_stats)


def mean_statistic(name: str, scores: np.ndarray) -> Statistic:
    scores = np.asarray(scores, dtype=float)
    return Statistic(name, np.stack([scores, np.ones_like(scores)], axis=1), mean_of)


def resolve_metrics(names: str | Sequence[str]) -> list[str]:
    """Metric names as given (comma-separated or a list), checked, aliases resolved, once each.

    An unknown name is an error that lists the known ones; nothing is dropped silently.
    """
    given = names.split(",") if isinstance(names, str) else list(names)
    wanted = [n.strip() for n in given if n.strip()]
    unknown = [n for n in wanted if n not in KNOWN_METRICS and n not in ALIASES]
    if unknown:
        known = ", ".join([*KNOWN_METRICS, *ALIASES])
        raise EvaluationError(ErrorCode.invalid_argument,
                              f"unknown metric(s) {', '.join(unknown)}; known: {known}")
    if not wanted:
        raise EvaluationError(ErrorCode.invalid_argument, "no metric named")
    return list(dict.fromkeys(ALIASES.get(n, n) for n in wanted))
