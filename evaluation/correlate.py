"""How well does each metric agree with people? Kendall's tau per metric.

Each row of the judgements (see ``judgements.py`` for which rows a protocol
keeps) is scored like a one-image prediction against its references, all rows
in one pass (CIDEr's document frequencies come from all the rows' references,
as in the published Flickr8K code), and the per-row metric values are
correlated with the human scores: Kendall tau-b (ties in both) and tau-c
(Stuart's, for rectangular tables, as reported for Flickr8K-Expert in the
CLIPScore paper). Which of the two a published table reports is named in the
output.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from evaluation.clipscore import ClipScorer
from evaluation.coco import score_captions
from evaluation.datasets import Dataset, Sample, check_images
from evaluation.errors import DatasetError
from evaluation.judgements import Judgement, Judgements
from evaluation.metrics import COCO_METRICS, resolve_metrics
from schemas.errors import ErrorCode


@dataclass(frozen=True)
class Correlation:
    metric: str
    tau_b: float
    p_b: float
    tau_c: float
    p_c: float
    pairs: int

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def kendall(metric: str, values: Sequence[float], humans: Sequence[float]) -> Correlation:
    tau_b = kendalltau(values, humans, variant="b")
    tau_c = kendalltau(values, humans, variant="c")
    return Correlation(metric, float(tau_b.statistic), float(tau_b.pvalue),
                       float(tau_c.statistic), float(tau_c.pvalue), len(values))


def judged_dataset(
    judgements: Sequence[Judgement], references: Mapping[str, Sequence[str]] | None
) -> tuple[Dataset, dict[str, str]]:
    """One sample per judged pair (id = its index), with the image's references."""
    samples, predictions = [], {}
    for i, j in enumerate(judgements):
        refs = j.references or (references or {}).get(j.image)
        if not refs:
            raise DatasetError(
                ErrorCode.empty_references,
                f"no references for judged image {j.image}; pass --dataset with its references",
            )
        samples.append(Sample(image_id=str(i), references=tuple(refs), image_file=j.image))
        predictions[str(i)] = j.candidate
    return Dataset(name="judgements", samples=tuple(samples)), predictions


def correlate(
    judgements: Judgements | Sequence[Judgement],
    *,
    references: Mapping[str, Sequence[str]] | None = None,
    metrics: Collection[str] = COCO_METRICS,
    images_dir: Path | None = None,
    clip_model: str | None = None,
) -> tuple[list[Correlation], dict[str, str]]:
    """Correlations per metric, and the metrics that could not run (with the reason)."""
    rows = judgements.rows if isinstance(judgements, Judgements) else list(judgements)
    metrics = resolve_metrics(list(metrics))
    dataset, predictions = judged_dataset(rows, references)
    humans = [j.score for j in rows]
    scores = score_captions(dataset, predictions, metrics=[m for m in metrics
                                                           if m in COCO_METRICS])
    per_metric = dict(scores.per_image)
    if clip_model is not None and images_dir is not None:
        paths = check_images(dataset, images_dir)
        clip = ClipScorer(clip_model).score(
            [paths[i] for i in dataset.ids], [predictions[i] for i in dataset.ids],
            [list(s.references) for s in dataset.samples],
        )
        per_metric["CLIP-S"] = clip.clip_s
        if clip.refclip_s is not None:
            per_metric["RefCLIP-S"] = clip.refclip_s
    results = [kendall(m, np.asarray(v, dtype=float).tolist(), humans)
               for m, v in per_metric.items()]
    return results, scores.unavailable
