"""BLEU-1..4, METEOR, ROUGE-L, CIDEr-D and SPICE with the COCO caption evaluation code.

The scores come from ``pycocoevalcap`` itself (BleuScorer, Rouge, CiderScorer,
the METEOR and SPICE jars) after the same PTB tokenisation, so they match the
COCO leaderboard's code digit for digit; ``CIDEr`` here is that code's CIDEr-D
(clipped n-gram counts, Gaussian length penalty, sigma = 6). Differences from
calling pycocoevalcap's ``COCOEvalCap`` directly are operational only:

- Java is checked before anything starts (``java_missing`` if absent);
- nothing is written into the installed package (read-only installs work);
- the two tokenizer JVMs run in parallel; METEOR's JVM is started once per
  process, fed without a round trip per image, and runs while Python computes
  BLEU, ROUGE-L and CIDEr;
- per-image sufficient statistics are kept, for the bootstrap;
- SPICE without its CoreNLP jars is reported unavailable, with the reason.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pycocoevalcap.bleu.bleu_scorer import BleuScorer
from pycocoevalcap.cider.cider_scorer import CiderScorer
from pycocoevalcap.rouge.rouge import Rouge

from evaluation import spice
from evaluation.datasets import Dataset
from evaluation.errors import DatasetError
from evaluation.java import CocoJars, require_java
from evaluation.meteor import parse_stats, shared_meteor
from evaluation.metrics import (
    BLEU_ORDER,
    COCO_METRICS,
    Statistic,
    bleu_statistic,
    mean_statistic,
    meteor_statistic,
)
from evaluation.tokenizer import PTBTokenizer
from schemas.errors import ErrorCode


@dataclass
class CaptionScores:
    image_ids: list[str]
    statistics: dict[str, Statistic]
    per_image: dict[str, np.ndarray]
    # What the reference code reports for the corpus; equals statistics[m].corpus().
    corpus: dict[str, float]
    unavailable: dict[str, str] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)


def align(dataset: Dataset, predictions: Mapping[str, str]) -> list[str]:
    """The predictions in data-set order; every image needs exactly one."""
    missing = [i for i in dataset.ids if i not in predictions]
    if missing:
        raise DatasetError(
            ErrorCode.missing_prediction,
            f"{len(missing)} image(s) have no prediction, e.g. {', '.join(missing[:5])}",
        )
    known = set(dataset.ids)
    extra = [i for i in predictions if i not in known]
    if extra:
        raise DatasetError(
            ErrorCode.unknown_image,
            f"{len(extra)} prediction(s) for images not in the data set, e.g. "
            f"{', '.join(extra[:5])}",
        )
    return [predictions[i] for i in dataset.ids]


def score_captions(
    dataset: Dataset,
    predictions: Mapping[str, str],
    *,
    metrics: Collection[str] = COCO_METRICS,
    jars: CocoJars | None = None,
    corenlp_dir: Path | None = None,
    spice_cache: Path = spice.DEFAULT_CACHE,
    on_stage: Callable[[str], None] = lambda _: None,
) -> CaptionScores:
    unknown = set(metrics) - set(COCO_METRICS)
    if unknown:
        raise DatasetError(ErrorCode.invalid_argument, f"unknown metric(s): {sorted(unknown)}")
    require_java()
    jars = jars or CocoJars.installed()
    hyps_raw = align(dataset, predictions)
    on_stage(f"PTB tokenizer ({dataset.route} references, {len(dataset)} images)")
    refs, hyps, details = _tokenize(dataset, hyps_raw, jars)
    scores = CaptionScores(
        image_ids=dataset.ids, statistics={}, per_image={}, corpus={}, details=details
    )
    with ThreadPoolExecutor(max_workers=1) as pool:
        meteor = pool.submit(_meteor, jars, hyps, refs) if "METEOR" in metrics else None
        if any(m.startswith("Bleu_") for m in metrics):
            on_stage("BLEU")
            _bleu(scores, hyps, refs, metrics)
        if "ROUGE_L" in metrics:
            on_stage("ROUGE-L")
            _rouge(scores, hyps, refs)
        if "CIDEr" in metrics:
            on_stage("CIDEr-D")
            _cider(scores, hyps, refs)
        if meteor is not None:
            on_stage("METEOR")
            rows, per_image, corpus = meteor.result()
            scores.statistics["METEOR"] = meteor_statistic(rows)
            scores.per_image["METEOR"] = np.asarray(per_image)
            scores.corpus["METEOR"] = corpus
    if "SPICE" in metrics:
        on_stage("SPICE")
        _spice(scores, hyps, refs, jars, corenlp_dir, spice_cache)
    return scores


def _tokenize(
    dataset: Dataset, hyps_raw: list[str], jars: CocoJars
) -> tuple[list[list[str]], list[str], dict[str, Any]]:
    counts = [len(s.references) for s in dataset.samples]
    flat_refs = [r for s in dataset.samples for r in s.references]
    tokenizer = PTBTokenizer(jars.tokenizer)
    with tempfile.TemporaryDirectory(prefix="captionq-ptb-") as work:
        pending_hyps = tokenizer.start(hyps_raw, Path(work))
        pending_refs = None if dataset.references_tokenized else tokenizer.start(
            flat_refs, Path(work)
        )
        hyps = pending_hyps.result()
        refs = pending_refs.result() if pending_refs is not None else None
    ref_texts = refs.texts if refs is not None else flat_refs
    grouped, start = [], 0
    for count in counts:
        grouped.append(ref_texts[start : start + count])
        start += count
    details = {
        "tokenization": {"raw": "raw references through PTB",
                         "tokens": "references' tokens as they are",
                         "tokens-ptb": "references' tokens through PTB"}[dataset.route],
        "references_route": dataset.route,
        "ptb_tokens": {
            "references": refs.token_count if refs is not None else None,
            "predictions": hyps.token_count,
        },
    }
    return grouped, hyps.texts, details


def _bleu(scores: CaptionScores, hyps: list[str], refs: list[list[str]], metrics: Collection[str]
          ) -> None:
    scorer = BleuScorer(n=BLEU_ORDER)
    for hyp, ref in zip(hyps, refs, strict=True):
        scorer += (hyp, ref)
    corpus, per_image = scorer.compute_score(option="closest", verbose=0)
    rows = np.array(
        [
            [c["testlen"], min((abs(r - c["testlen"]), r) for r in c["reflen"])[1],
             *c["guess"], *c["correct"]]
            for c in scorer.ctest
        ],
        dtype=float,
    ).reshape(len(hyps), -1)
    totals = rows.sum(axis=0)
    scores.details["bleu_counts"] = {
        "testlen": int(totals[0]),
        "reflen": int(totals[1]),
        "guess": [int(v) for v in totals[2 : 2 + BLEU_ORDER]],
        "correct": [int(v) for v in totals[2 + BLEU_ORDER :]],
        "ratio": (totals[0] + 1e-15) / (totals[1] + 1e-9),
    }
    for n in range(1, BLEU_ORDER + 1):
        name = f"Bleu_{n}"
        if name in metrics:
            scores.statistics[name] = bleu_statistic(n, rows)
            scores.per_image[name] = np.asarray(per_image[n - 1])
            scores.corpus[name] = float(corpus[n - 1])


def _rouge(scores: CaptionScores, hyps: list[str], refs: list[list[str]]) -> None:
    rouge = Rouge()
    values = np.array([rouge.calc_score([h], r) for h, r in zip(hyps, refs, strict=True)])
    scores.statistics["ROUGE_L"] = mean_statistic("ROUGE_L", values)
    scores.per_image["ROUGE_L"] = values
    scores.corpus["ROUGE_L"] = float(np.mean(values))


def _cider(scores: CaptionScores, hyps: list[str], refs: list[list[str]]) -> None:
    scorer = CiderScorer(n=4, sigma=6.0)
    for hyp, ref in zip(hyps, refs, strict=True):
        scorer += (hyp, ref)
    corpus, values = scorer.compute_score()
    scores.statistics["CIDEr"] = mean_statistic("CIDEr", values)
    scores.per_image["CIDEr"] = np.asarray(values, dtype=float)
    scores.corpus["CIDEr"] = float(corpus)


def _meteor(
    jars: CocoJars, hyps: list[str], refs: list[list[str]]
) -> tuple[np.ndarray, list[float], float]:
    process = shared_meteor(jars.meteor)
    lines = process.stats(hyps, refs)
    per_image, corpus = process.evaluate(lines)
    return parse_stats(lines), per_image, corpus


def _spice(
    scores: CaptionScores,
    hyps: list[str],
    refs: list[list[str]],
    jars: CocoJars,
    corenlp_dir: Path | None,
    cache: Path,
) -> None:
    setup = spice.locate(jars, corenlp_dir)
    if setup.classpath is None:
        scores.unavailable["SPICE"] = setup.reason or "unavailable"
        return
    values = spice.run_spice(setup.classpath, hyps, refs, cache_dir=cache)
    scores.statistics["SPICE"] = mean_statistic("SPICE", values)
    scores.per_image["SPICE"] = values
    scores.corpus["SPICE"] = float(np.mean(values))
