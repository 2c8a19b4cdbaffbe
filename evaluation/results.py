"""The scores file that ``eval score`` writes and ``compare``/``report`` read.

One JSON document per scored run: the corpus metrics with their bootstrap
intervals, the metrics that could not run (with the reason), the scorer
details (PTB token counts, BLEU n-gram counts), the run's provenance, and one
record per image with its prediction, references, per-image scores and the
sufficient statistics the bootstrap needs (BLEU counts, METEOR alignment
statistics). ``statistics()`` rebuilds the per-metric statistics from it, so a
comparison never re-runs a scorer.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evaluation.bootstrap import Interval
from evaluation.errors import DatasetError
from evaluation.metrics import (
    Statistic,
    bleu_statistic,
    mean_statistic,
    meteor_statistic,
)
from schemas.errors import ErrorCode

SCHEMA_VERSION = 1


@dataclass
class ImageRecord:
    image_id: str
    prediction: str
    references: list[str]
    image_file: str | None = None
    scores: dict[str, float] = field(default_factory=dict)
    stats: dict[str, list[float]] = field(default_factory=dict)


@dataclass
class EvaluationResult:
    name: str
    dataset: str
    metrics: dict[str, Interval]
    images: list[ImageRecord]
    unavailable: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def image_ids(self) -> list[str]:
        return [r.image_id for r in self.images]

    def statistics(self) -> dict[str, Statistic]:
        """Per-image statistics of every metric, rebuilt from the records."""
        out: dict[str, Statistic] = {}
        for name in self.metrics:
            if name.startswith("Bleu_"):
                rows = np.array([r.stats["bleu"] for r in self.images], dtype=float)
                out[name] = bleu_statistic(int(name.split("_")[1]), rows)
            elif name == "METEOR":
                out[name] = meteor_statistic(
                    np.array([r.stats["meteor"] for r in self.images], dtype=float)
                )
            else:
                out[name] = mean_statistic(
                    name, np.array([r.scores[name] for r in self.images], dtype=float)
                )
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "dataset": self.dataset,
            "metrics": {m: i.as_dict() for m, i in self.metrics.items()},
            "unavailable": self.unavailable,
            "details": self.details,
            "provenance": self.provenance,
            "images": [r.__dict__ for r in self.images],
        }

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(_finite(self.to_json()), indent=1), encoding="utf-8")
        tmp.replace(path)


def load_result(path: Path) -> EvaluationResult:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DatasetError(ErrorCode.file_not_found, f"scores file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(ErrorCode.malformed, f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
        raise DatasetError(
            ErrorCode.malformed, f"{path}: not a scores file of schema {SCHEMA_VERSION}"
        )
    return EvaluationResult(
        name=data["name"],
        dataset=data["dataset"],
        metrics={m: Interval(**{k: _num(v) for k, v in i.items()})
                 for m, i in data["metrics"].items()},
        images=[ImageRecord(**r) for r in data["images"]],
        unavailable=data.get("unavailable", {}),
        details=data.get("details", {}),
        provenance=data.get("provenance", {}),
    )


def _finite(value: Any) -> Any:
    """JSON has no NaN: write None, read back as NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, np.generic):
        return _finite(value.item())
    return value


def _num(value: Any) -> Any:
    return math.nan if value is None else value
