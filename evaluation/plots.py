"""Figures for the HTML report, drawn with matplotlib (Agg) and returned as base64 PNG.

Every axis is labelled; counts are whole numbers; floating-point noise is
rounded away before drawing (a metric that is 0 everywhere reads 0, not
``1e-13``), and a bar's value is printed on it, so a zero bar is still seen.
The ``*_figure`` functions return the figure itself, for tests to read.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator, ScalarFormatter  # noqa: E402

from evaluation.bootstrap import Interval  # noqa: E402

DECIMALS = 9  # scores agree to far fewer digits; anything below is rounding noise


def _png(fig: plt.Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def clean(values: Sequence[float]) -> np.ndarray:
    """Finite values with floating-point noise rounded off (-0.0 becomes 0.0)."""
    arr = np.asarray(values, dtype=float)
    return np.round(arr[np.isfinite(arr)], DECIMALS) + 0.0


def _plain(axis: object) -> None:
    formatter = ScalarFormatter(useOffset=False)
    formatter.set_scientific(False)
    axis.set_major_formatter(formatter)  # type: ignore[attr-defined]


def histogram_figure(per_image: Mapping[str, Sequence[float]]) -> plt.Figure:
    names = list(per_image)
    cols = min(3, max(1, len(names)))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 2.8 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names, strict=False):
        values = clean(per_image[name])
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
        bins = min(30, max(1, int(np.ceil(np.sqrt(values.size)))))
        if high - low < 10.0**-DECIMALS:  # one value: one bar of visible width around it
            low, high, bins = low - 0.5, high + 0.5, 1
        ax.hist(values, bins=bins, range=(low, high), color="#4c72b0", edgecolor="white")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel(f"{name} per image", fontsize=9)
        ax.set_ylabel("images", fontsize=9)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        _plain(ax.xaxis)
        ax.tick_params(labelsize=8)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def histograms(per_image: Mapping[str, Sequence[float]]) -> str:
    """One small histogram per metric of the per-image scores."""
    return _png(histogram_figure(per_image))


def metric_bars_figure(runs: Mapping[str, Mapping[str, Interval]]) -> plt.Figure:
    metrics = [m for m in next(iter(runs.values())) if all(m in r for r in runs.values())]
    width = 0.8 / max(1, len(runs))
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(metrics) * max(1, len(runs)) / 1.5), 3.4))
    x = np.arange(len(metrics))
    for k, (name, intervals) in enumerate(runs.items()):
        values = clean([intervals[m].value for m in metrics])
        low = values - clean([intervals[m].low for m in metrics])
        high = clean([intervals[m].high for m in metrics]) - values
        bars = ax.bar(x + k * width, values, width, yerr=[np.maximum(low, 0), np.maximum(high, 0)],
                      capsize=3, label=name)
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks(x + width * (len(runs) - 1) / 2, metrics, rotation=30, fontsize=8)
    ax.set_xlabel("metric", fontsize=8)
    ax.set_ylabel("corpus score (95% CI)", fontsize=8)
    _plain(ax.yaxis)
    ax.margins(y=0.15)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def metric_bars(runs: Mapping[str, Mapping[str, Interval]]) -> str:
    """Grouped bars: one group per metric, one bar per run, with the CI as error bars."""
    return _png(metric_bars_figure(runs))
