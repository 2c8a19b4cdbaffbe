"""Is run B better than run A? Paired tests per metric over the same images.

For each metric: the difference ``B - A`` on the full sample, a paired
bootstrap interval of that difference (the same resampled images for both
runs), and a two-sided p-value from a paired approximate-randomisation
(permutation) test: under the null hypothesis the two systems are
exchangeable on each image, so each image's statistics are swapped between A
and B with probability 1/2 and the metric difference recomputed. A
difference is *significant* when ``p < alpha``. Both procedures work on the
per-image statistics, never re-running a scorer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from evaluation.bootstrap import resample_weights
from evaluation.errors import EvaluationError
from evaluation.metrics import Statistic
from schemas.errors import ErrorCode

_CHUNK = 250


@dataclass(frozen=True)
class Difference:
    metric: str
    a: float
    b: float
    delta: float  # b - a
    low: float
    high: float
    p_value: float
    significant: bool

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def align_rows(
    ids_a: Sequence[str], ids_b: Sequence[str], b: Mapping[str, Statistic]
) -> dict[str, Statistic]:
    """B's statistics reordered to A's image order; both runs must cover the same images."""
    if set(ids_a) != set(ids_b) or len(ids_a) != len(ids_b):
        only_a = sorted(set(ids_a) - set(ids_b))[:5]
        only_b = sorted(set(ids_b) - set(ids_a))[:5]
        raise EvaluationError(
            ErrorCode.mismatched_images,
            f"the runs score different images (only in A: {only_a}, only in B: {only_b})",
        )
    index = {image_id: i for i, image_id in enumerate(ids_b)}
    order = np.array([index[i] for i in ids_a], dtype=int)
    return {m: Statistic(s.name, s.rows[order], s.aggregate) for m, s in b.items()}


def compare(
    a: Mapping[str, Statistic],
    b: Mapping[str, Statistic],
    *,
    resamples: int = 1000,
    permutations: int = 1000,
    confidence: float = 0.95,
    alpha: float = 0.05,
    seed: int = 0,
) -> list[Difference]:
    """Per metric present in both runs; rows of ``a`` and ``b`` must be the same images."""
    rng = np.random.default_rng(seed)
    names = [m for m in a if m in b]
    n = len(next(iter(a.values())).rows) if a else 0
    tail = (1 - confidence) / 2 * 100
    boot = {m: [] for m in names}
    perm_extreme = dict.fromkeys(names, 0)
    observed = {m: float(b[m].corpus() - a[m].corpus()) for m in names}
    for start in range(0, resamples, _CHUNK):
        weights = resample_weights(n, min(_CHUNK, resamples - start), rng)
        for m in names:
            boot[m].append(b[m].corpus(weights) - a[m].corpus(weights))
    for start in range(0, permutations, _CHUNK):
        swap = rng.integers(0, 2, size=(min(_CHUNK, permutations - start), n)).astype(float)
        keep = 1.0 - swap
        for m in names:
            ra, rb = a[m].rows, b[m].rows
            delta = b[m].aggregate(swap @ ra + keep @ rb) - a[m].aggregate(swap @ rb + keep @ ra)
            perm_extreme[m] += int(np.sum(np.abs(delta) >= abs(observed[m]) - 1e-12))
    out = []
    for m in names:
        low, high = np.nanpercentile(np.concatenate(boot[m]), [tail, 100 - tail])
        p_value = (perm_extreme[m] + 1) / (permutations + 1)
        out.append(Difference(
            metric=m, a=float(a[m].corpus()), b=float(b[m].corpus()), delta=observed[m],
            low=float(low), high=float(high), p_value=p_value, significant=p_value < alpha,
        ))
    return out
