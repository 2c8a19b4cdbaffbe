"""Bootstrap confidence intervals for corpus metrics.

Images are resampled with replacement; a resample is a vector of counts ``w``
(multinomial, summing to n), and every metric of the resample is
``aggregate(w @ stats)`` (see ``metrics.py``). The scorers never run again:
1,000 resamples of 5,000 images take a few matrix products. All metrics share
the same resamples, so their intervals are computed on the same draws.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from evaluation.errors import EvaluationError
from evaluation.metrics import Statistic
from schemas.errors import ErrorCode

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
# Resample weights are built in chunks of this many rows to bound memory.
_CHUNK = 250


@dataclass(frozen=True)
class Interval:
    value: float  # the metric on the full sample (equals the corpus metric)
    low: float
    high: float
    confidence: float
    resamples: int

    def as_dict(self) -> dict[str, float | int]:
        return {"value": self.value, "low": self.low, "high": self.high,
                "confidence": self.confidence, "resamples": self.resamples}


def resample_weights(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, n) counts: how often each image is drawn in each resample."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)


def distributions(
    statistics: Mapping[str, Statistic], *, resamples: int, seed: int
) -> dict[str, np.ndarray]:
    """The metric on every resample: name -> (resamples,)."""
    sizes = {len(s.rows) for s in statistics.values()}
    if len(sizes) > 1:
        raise EvaluationError(ErrorCode.invalid_argument, f"metrics over different images: {sizes}")
    if resamples < 1:
        raise EvaluationError(ErrorCode.invalid_argument, "resamples must be at least 1")
    n = sizes.pop() if sizes else 0
    if n == 0:  # nothing to resample: every draw is undefined, never a division by zero
        return {name: np.full(resamples, np.nan) for name in statistics}
    rng = np.random.default_rng(seed)
    out: dict[str, list[np.ndarray]] = {name: [] for name in statistics}
    for start in range(0, resamples, _CHUNK):
        weights = resample_weights(n, min(_CHUNK, resamples - start), rng)
        for name, statistic in statistics.items():
            out[name].append(statistic.corpus(weights))
    return {name: np.concatenate(parts) for name, parts in out.items()}


def confidence_intervals(
    statistics: Mapping[str, Statistic],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> dict[str, Interval]:
    """Percentile bootstrap interval of every metric, around its full-sample value."""
    if not 0 < confidence < 1:
        raise EvaluationError(ErrorCode.invalid_argument, "confidence must be in (0, 1)")
    draws = distributions(statistics, resamples=resamples, seed=seed)
    tail = (1 - confidence) / 2 * 100
    result = {}
    for name, statistic in statistics.items():
        if len(statistic.rows) == 0:
            result[name] = Interval(value=float("nan"), low=float("nan"), high=float("nan"),
                                    confidence=confidence, resamples=resamples)
            continue
        low, high = np.nanpercentile(draws[name], [tail, 100 - tail])
        result[name] = Interval(
            value=float(statistic.corpus()), low=float(low), high=float(high),
            confidence=confidence, resamples=resamples,
        )
    return result
