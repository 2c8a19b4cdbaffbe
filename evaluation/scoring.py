"""From a data set and its predictions to an :class:`EvaluationResult`.

Runs the COCO metrics (``coco.py``), optionally CLIP-S and RefCLIP-S
(``clipscore.py``, needs the images and a CLIP model), and the bootstrap
intervals (``bootstrap.py``), and keeps every per-image number for the report
and for later comparisons.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.bootstrap import DEFAULT_RESAMPLES, confidence_intervals
from evaluation.clipscore import ClipScorer
from evaluation.coco import align, score_captions
from evaluation.datasets import Dataset, check_images
from evaluation.errors import EvaluationError
from evaluation.metrics import CLIP_METRICS, COCO_METRICS, Statistic, mean_statistic
from evaluation.results import EvaluationResult, ImageRecord
from evaluation.spice import DEFAULT_CACHE
from schemas.errors import ErrorCode


def evaluate(
    dataset: Dataset,
    predictions: Mapping[str, str],
    *,
    name: str,
    metrics: Collection[str] = COCO_METRICS,
    images_dir: Path | None = None,
    clip_model: str | None = None,
    corenlp_dir: Path | None = None,
    spice_cache: Path = DEFAULT_CACHE,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    provenance: Mapping[str, Any] | None = None,
    on_stage: Callable[[str], None] = lambda _: None,
) -> EvaluationResult:
    coco_metrics = [m for m in metrics if m in COCO_METRICS]
    if clip_model is None and set(metrics) & set(CLIP_METRICS):
        raise EvaluationError(ErrorCode.invalid_argument,
                              "CLIP-S and RefCLIP-S need --clip-model (and --images)")
    scores = score_captions(dataset, predictions, metrics=coco_metrics,
                            corenlp_dir=corenlp_dir, spice_cache=spice_cache,
                            on_stage=on_stage)
    statistics: dict[str, Statistic] = dict(scores.statistics)
    per_image = dict(scores.per_image)
    if clip_model is not None:
        if images_dir is None:
            raise EvaluationError(ErrorCode.invalid_argument, "CLIP-S needs --images")
        paths = check_images(dataset, images_dir)
        on_stage(f"CLIP-S ({clip_model})")
        scorer = ClipScorer(clip_model)
        clip = scorer.score([paths[i] for i in dataset.ids], align(dataset, predictions),
                            [list(s.references) for s in dataset.samples])
        per_image["CLIP-S"] = clip.clip_s
        statistics["CLIP-S"] = mean_statistic("CLIP-S", clip.clip_s)
        if clip.refclip_s is not None:
            per_image["RefCLIP-S"] = clip.refclip_s
            statistics["RefCLIP-S"] = mean_statistic("RefCLIP-S", clip.refclip_s)
        scores.details["clip_model"] = clip_model
    on_stage(f"bootstrap intervals ({resamples} resamples)")
    intervals = confidence_intervals(statistics, resamples=resamples, seed=seed)
    for metric, value in scores.corpus.items():  # report the reference code's own number
        intervals[metric] = replace(intervals[metric], value=value)
    return EvaluationResult(
        name=name,
        dataset=dataset.name,
        metrics=intervals,
        images=_records(dataset, predictions, statistics, per_image),
        unavailable=scores.unavailable,
        details={**scores.details, "bootstrap_seed": seed},
        provenance=dict(provenance or {}),
    )


def _records(
    dataset: Dataset,
    predictions: Mapping[str, str],
    statistics: Mapping[str, Statistic],
    per_image: Mapping[str, np.ndarray],
) -> list[ImageRecord]:
    bleu = next((s.rows for m, s in statistics.items() if m.startswith("Bleu_")), None)
    meteor = statistics["METEOR"].rows if "METEOR" in statistics else None
    records = []
    for i, sample in enumerate(dataset.samples):
        stats: dict[str, list[float]] = {}
        if bleu is not None:
            stats["bleu"] = bleu[i].tolist()
        if meteor is not None:
            stats["meteor"] = meteor[i].tolist()
        records.append(ImageRecord(
            image_id=sample.image_id,
            prediction=predictions[sample.image_id],
            references=list(sample.references),
            image_file=sample.image_file,
            scores={m: float(v[i]) for m, v in per_image.items()},
            stats=stats,
        ))
    return records
