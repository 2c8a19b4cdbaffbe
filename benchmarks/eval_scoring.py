"""Scoring speed: captionq's COCO scorer versus calling pycocoevalcap directly.

Both score the same 4,982 MAGIC predictions x 5 references with BLEU-1..4,
METEOR, ROUGE-L and CIDEr-D (PTB tokenisation included, SPICE excluded), in
the same process, alternating, ``--repeat`` times each; prints the median wall
times and their ratio, the first-call times (captionq's METEOR JVM starts on
the first call only), and the time of 1,000 bootstrap resamples. Prints
numbers; never passes or fails on them.

    .venv/bin/python benchmarks/eval_scoring.py [--data PATH] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.meteor.meteor import Meteor
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

from evaluation.bootstrap import confidence_intervals
from evaluation.coco import score_captions
from evaluation.datasets import load_dataset

DEFAULT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / \
    "coco-karpathy-magic" / "magic_result.json"
METRICS = ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"]


def reference(dataset, predictions) -> dict[str, float]:  # noqa: ANN001
    """What COCOEvalCap.evaluate does, minus SPICE and the prints."""
    gts = {s.image_id: [{"caption": r} for r in s.references] for s in dataset.samples}
    res = {s.image_id: [{"caption": predictions[s.image_id]}] for s in dataset.samples}
    tokenizer = PTBTokenizer()
    gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    out = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    out.update({f"Bleu_{i + 1}": b for i, b in enumerate(bleu)})
    meteor = Meteor()
    out["METEOR"], _ = meteor.compute_score(gts, res)
    meteor.meteor_p.stdout.close()
    meteor.meteor_p.stderr.close()
    out["ROUGE_L"], _ = Rouge().compute_score(gts, res)
    out["CIDEr"], _ = Cider().compute_score(gts, res)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    dataset = load_dataset(args.data)
    predictions = dict(dataset.predictions or {})
    ours_t, ref_t, ours = [], [], None
    for _ in range(args.repeat):
        start = time.perf_counter()
        ours = score_captions(dataset, predictions, metrics=METRICS)
        ours_t.append(time.perf_counter() - start)
        start = time.perf_counter()
        ref = reference(dataset, predictions)
        ref_t.append(time.perf_counter() - start)
        assert all(abs(ours.corpus[m] - ref[m]) < 1e-12 for m in METRICS), (ours.corpus, ref)
    start = time.perf_counter()
    confidence_intervals(ours.statistics, resamples=1000)
    boot = time.perf_counter() - start
    o, r = statistics.median(ours_t), statistics.median(ref_t)
    out = sys.stdout
    refs = sum(len(s.references) for s in dataset.samples)
    out.write(f"images: {len(dataset)}, references: {refs}\n")
    out.write(f"captionq   median {o:.2f}s  runs {[round(t, 2) for t in ours_t]}\n")
    out.write(f"pycocoeval median {r:.2f}s  runs {[round(t, 2) for t in ref_t]}\n")
    out.write(f"ratio captionq/pycocoevalcap: median {o / r:.2f}, first call "
              f"{ours_t[0] / ref_t[0]:.2f}\n")
    out.write(f"bootstrap, 1000 resamples x {len(METRICS)} metrics: {boot:.2f}s\n")


if __name__ == "__main__":
    main()
