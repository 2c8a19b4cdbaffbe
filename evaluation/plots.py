"""Figures for the HTML report, drawn with matplotlib (Agg) and returned as base64 PNG."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from evaluation.bootstrap import Interval  # noqa: E402


def _png(fig: plt.Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def histograms(per_image: Mapping[str, Sequence[float]]) -> str:
    """One small histogram per metric of the per-image scores."""
    names = list(per_image)
    cols = min(3, max(1, len(names)))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        values = np.asarray(per_image[name], dtype=float)
        ax.hist(values[np.isfinite(values)], bins=30, color="#4c72b0")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return _png(fig)


def metric_bars(runs: Mapping[str, Mapping[str, Interval]]) -> str:
    """Grouped bars: one group per metric, one bar per run, with the CI as error bars."""
    metrics = [m for m in next(iter(runs.values())) if all(m in r for r in runs.values())]
    width = 0.8 / max(1, len(runs))
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(metrics) * max(1, len(runs)) / 1.5), 3.2))
    x = np.arange(len(metrics))
    for k, (name, intervals) in enumerate(runs.items()):
        values = np.array([intervals[m].value for m in metrics])
        low = values - np.array([intervals[m].low for m in metrics])
        high = np.array([intervals[m].high for m in metrics]) - values
        ax.bar(x + k * width, values, width, yerr=[np.maximum(low, 0), np.maximum(high, 0)],
               capsize=3, label=name)
    ax.set_xticks(x + width * (len(runs) - 1) / 2, metrics, rotation=30, fontsize=8)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)
