"""The report's figures read as people expect: labelled axes, whole counts, no exponents."""

from __future__ import annotations

import matplotlib.pyplot as plt

from evaluation.bootstrap import Interval
from evaluation.plots import histogram_figure, metric_bars_figure

NOISE = {"SPICE": [0.0, 1e-13, -2e-14, 0.0, 3e-15], "CIDEr": [0.12, 0.5, 0.52, 0.9, 0.31]}


def _labels(axis: object) -> list[str]:
    return [t.get_text() for t in axis.get_ticklabels()]  # type: ignore[attr-defined]


def test_histograms_label_axes_count_whole_images_and_show_no_noise() -> None:
    fig = histogram_figure(NOISE)
    fig.canvas.draw()
    for ax in fig.axes[:2]:
        assert ax.get_xlabel()
        assert ax.get_ylabel() == "images"
        assert all(float(y).is_integer() for y in ax.get_yticks())
        assert ax.xaxis.get_offset_text().get_text() == ""
        assert not any("e" in label.lower() for label in _labels(ax.xaxis))
    spice = fig.axes[0]
    assert sum(p.get_height() for p in spice.patches) == 5  # every zero counted, in one bar
    assert max(p.get_width() for p in spice.patches) >= 0.5
    plt.close(fig)


def test_metric_bars_label_axes_and_show_a_zero_bar() -> None:
    runs = {"run": {"CIDEr": Interval(0.8, 0.7, 0.9, 0.95, 5),
                    "SPICE": Interval(1e-13, 0.0, 2e-13, 0.95, 5)}}
    fig = metric_bars_figure(runs)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.get_xlabel() == "metric"
    assert ax.get_ylabel()
    texts = [t.get_text() for t in ax.texts]
    assert "0.000" in texts
    assert "0.800" in texts
    assert ax.yaxis.get_offset_text().get_text() == ""
    plt.close(fig)
