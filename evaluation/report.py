"""Self-contained HTML reports: one file per run or per comparison.

Everything is inside the file: the metric table with its confidence
intervals, histograms and bar charts as base64 PNG, the best and worst
examples with base64 JPEG thumbnails and their references (never one image
in both lists), the ad-copy checks by style and by platform when variants
are given, and the provenance. Every piece of text from data or models is HTML-escaped.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable, Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

from PIL import Image

from evaluation.adcopy import breakdown
from evaluation.compare import Difference
from evaluation.datasets import Dataset, Sample, check_images
from evaluation.errors import DatasetError
from evaluation.plots import histograms, metric_bars
from evaluation.results import EvaluationResult, ImageRecord
from schemas.errors import ErrorCode

THUMBNAIL = (192, 192)
_STYLE = """
body{font-family:system-ui,sans-serif;margin:2rem;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem}
th{background:#f3f3f3}.num{text-align:right;font-variant-numeric:tabular-nums}
.ex{display:flex;gap:1rem;margin:.6rem 0;padding:.6rem;border:1px solid #ddd}
.ex img{width:192px;height:144px;object-fit:contain;background:#f7f7f7;flex:none}
.sig{color:#0a7d20;font-weight:600}pre{background:#f7f7f7;padding:1rem}
"""


def render_run(result: EvaluationResult, *, images_dir: Path | None = None,
               examples: int = 5, rank_by: str | None = None,
               variants: Sequence[Mapping[str, Any]] | None = None,
               warn: Callable[[str], None] | None = None) -> str:
    rank = rank_by or next((m for m in ("CIDEr", "CLIP-S", "METEOR") if m in result.metrics),
                           next(iter(result.metrics), None))
    body = [f"<h1>Evaluation: {escape(result.name)}</h1>",
            f"<p>Data set <b>{escape(result.dataset)}</b>, {len(result.images)} images.</p>",
            "<h2>Metrics</h2>", _metric_table({result.name: result})]
    if result.unavailable:
        body.append("<h3>Unavailable</h3><ul>" + "".join(
            f"<li><b>{escape(m)}</b>: {escape(r)}</li>" for m, r in result.unavailable.items()
        ) + "</ul>")
    per_image = {m: [r.scores.get(m, float("nan")) for r in result.images]
                 for m in result.metrics if m in (result.images[0].scores if result.images else {})}
    if per_image:
        body += ["<h2>Per-image scores</h2>", _img_png(histograms(per_image), "histograms")]
    if result.metrics:
        body += ["<h2>Corpus metrics</h2>", _img_png(metric_bars({result.name: result.metrics}),
                                                      "metric bars")]
    if rank is not None and result.images and rank in result.images[0].scores:
        best, worst = best_and_worst(result.images, rank, examples)
        thumbs = _thumbnails(best + worst, images_dir, warn)
        body += [f"<h2>Best {len(best)} by {escape(rank)}</h2>",
                 *(_example(r, rank, thumbs) for r in best),
                 f"<h2>Worst {len(worst)} by {escape(rank)}</h2>",
                 *(_example(r, rank, thumbs) for r in worst)]
    if variants:
        body += ad_copy_section(variants)
    about = {"details": result.details, "provenance": result.provenance}
    body += ["<h2>Details and provenance</h2>", _json_block(about)]
    return _page(f"captionq eval: {result.name}", body)


def best_and_worst(records: Sequence[ImageRecord], rank: str,
                   examples: int) -> tuple[list[ImageRecord], list[ImageRecord]]:
    """The ``examples`` best (highest first) and worst (lowest first) images by ``rank``;
    with fewer than twice as many images, the better half and the rest, never one twice."""
    ranked = sorted(records, key=lambda r: _rank_key(r.scores[rank]), reverse=True)
    shown = min(examples, len(ranked) // 2 + len(ranked) % 2)
    worst = min(examples, len(ranked) - shown)
    return ranked[:shown], ranked[len(ranked) - worst:][::-1]


_ADCOPY_COLUMNS = (("texts", "variants"), ("compliance_rate", "complies"),
                   ("flagged_rate", "flagged"), ("length_chars", "mean chars"),
                   ("distinct_2", "distinct-2"), ("self_bleu_4", "self-BLEU-4"))


def ad_copy_section(variants: Sequence[Mapping[str, Any]]) -> list[str]:
    """Two tables: the ad-copy checks of each style, and of each platform."""
    by = breakdown(variants)
    out = [f"<h2>Ad-copy checks ({len(variants)} variants)</h2>"]
    for key, rows in by.items():
        head = "".join(f"<th>{label}</th>" for _, label in _ADCOPY_COLUMNS)
        lines = "".join(
            f"<tr><td>{escape(name)}</td>"
            + "".join(f"<td class=num>{_cell(column, m[column])}</td>"
                      for column, _ in _ADCOPY_COLUMNS)
            + f"<td>{escape(', '.join(f'{f} ({n})' for f, n in m['flags'].items()) or '-')}"
            "</td></tr>" for name, m in rows.items())  # type: ignore[union-attr]
        out.append(f"<h3>By {key}</h3><table><tr><th>{key}</th>{head}<th>policy flags</th>"
                   f"</tr>{lines}</table>")
    return out


def _cell(column: str, value: Any) -> str:
    if value is None:
        return "-"
    if column == "texts":
        return str(value)
    if column == "length_chars":
        return f"{value['mean']:.0f}"
    return f"{value:.1%}" if column.endswith("_rate") else f"{value:.3f}"


def render_comparison(results: Sequence[EvaluationResult],
                      differences: Sequence[Difference] | None = None) -> str:
    body = ["<h1>Comparison: " + escape(" vs ".join(r.name for r in results)) + "</h1>",
            _metric_table({r.name: r for r in results}),
            _img_png(metric_bars({r.name: r.metrics for r in results}), "metric bars")]
    if differences:
        body += ["<h2>Paired tests (B - A)</h2>", difference_table(differences)]
    body += ["<h2>Provenance</h2>", *(
        f"<h3>{escape(r.name)}</h3>{_json_block(r.provenance)}" for r in results)]
    return _page("captionq eval comparison", body)


def difference_table(differences: Sequence[Difference]) -> str:
    rows = "".join(
        f"<tr><td>{escape(d.metric)}</td><td class=num>{d.a:.4f}</td><td class=num>{d.b:.4f}</td>"
        f"<td class=num>{d.delta:+.4f}</td><td class=num>[{d.low:+.4f}, {d.high:+.4f}]</td>"
        f"<td class=num>{d.p_value:.4f}</td>"
        f"<td{' class=sig' if d.significant else ''}>{'yes' if d.significant else 'no'}</td></tr>"
        for d in differences)
    return ("<table><tr><th>metric</th><th>A</th><th>B</th><th>B - A</th><th>95% CI</th>"
            f"<th>p</th><th>significant</th></tr>{rows}</table>")


def _metric_table(results: Mapping[str, EvaluationResult]) -> str:
    metrics = list(dict.fromkeys(m for r in results.values() for m in r.metrics))
    head = "".join(f"<th>{escape(name)}</th>" for name in results)
    rows = []
    for m in metrics:
        cells = []
        for r in results.values():
            i = r.metrics.get(m)
            cells.append("<td>-</td>" if i is None else
                         f"<td class=num>{i.value:.4f} [{i.low:.4f}, {i.high:.4f}]</td>")
        rows.append(f"<tr><td>{escape(m)}</td>{''.join(cells)}</tr>")
    return f"<table><tr><th>metric (95% CI)</th>{head}</tr>{''.join(rows)}</table>"


def _example(record: ImageRecord, rank: str, thumbs: Mapping[str, str]) -> str:
    thumb = thumbs.get(record.image_id)
    img = (f'<img alt="{escape(record.image_id)}" src="data:image/jpeg;base64,{thumb}">'
           if thumb else "<div>(no image)</div>")
    refs = "".join(f"<li>{escape(ref)}</li>" for ref in record.references)
    return (f'<div class=ex>{img}<div><b>{escape(record.image_id)}</b> '
            f"{escape(rank)} = {record.scores[rank]:.4f}<br>"
            f"prediction: <i>{escape(record.prediction)}</i><ul>{refs}</ul></div></div>")


def _thumbnails(records: Sequence[ImageRecord], images_dir: Path | None,
                warn: Callable[[str], None] | None = None) -> dict[str, str]:
    """Thumbnails of the shown images; none of them under ``images_dir`` is an error
    (``image_missing``: the wrong folder), some of them a warning."""
    if images_dir is None or not records:
        return {}
    dataset = Dataset(name="report", samples=tuple(
        Sample(r.image_id, tuple(r.references) or ("-",), r.image_file) for r in records))
    try:
        paths = check_images(dataset, images_dir)
    except DatasetError as exc:
        paths = {s.image_id: images_dir / s.image_file for s in dataset.samples
                 if s.image_file and (images_dir / s.image_file).is_file()}
        if not paths:
            raise DatasetError(ErrorCode.image_missing,
                               f"--images {images_dir} holds none of the report's images "
                               f"({exc.message})") from exc
        if warn is not None:
            warn(f"{exc.message}; the report shows them as (no image)")
    return {image_id: _thumbnail(path) for image_id, path in paths.items()}


def _thumbnail(path: Path) -> str:
    with Image.open(path) as image:
        small = image.convert("RGB")
        small.thumbnail(THUMBNAIL)
        buffer = io.BytesIO()
        small.save(buffer, format="JPEG", quality=80)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _rank_key(value: float | None) -> float:
    return float("-inf") if value is None or value != value else value


def _json_block(data: object) -> str:
    return f"<pre>{escape(json.dumps(data, indent=1, default=str))}</pre>"


def _img_png(data: str, alt: str) -> str:
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _page(title: str, body: Sequence[str]) -> str:
    return (f"<!doctype html><html><head><meta charset=utf-8><title>{escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{''.join(body)}</body></html>")
