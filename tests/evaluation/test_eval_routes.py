"""Every route references take to the scorer, for every layout, against plain pycocoevalcap.

The references hold what PTB changes (``cannot``, brackets, ``&amp;``) and, like
Karpathy's, tokens without the brackets, so the three routes give three different
sets of numbers; each must be the number
pycocoevalcap gives when fed the same way.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import pytest
from pycocoevalcap.bleu.bleu import Bleu
from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge
from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer as ReferenceTokenizer

from evaluation.coco import score_captions
from evaluation.datasets import ROUTES, load_dataset

pytestmark = pytest.mark.unit

# image id -> (raw caption, its tokens) per reference
REFS = {
    "1": [("A man (on a horse) rides.", ["a", "man", "on", "a", "horse", "rides"]),
          ("You cannot see the sea.", ["you", "cannot", "see", "the", "sea"])],
    "2": [("Rice & broccoli on a plate.", ["rice", "&amp;", "broccoli", "on", "a", "plate"]),
          ("A plate of rice, broccoli.", ["a", "plate", "of", "rice", "broccoli"])],
    "3": [("A red car [parked] here.", ["a", "red", "car", "parked", "here"]),
          ("The car cannot move.", ["the", "car", "cannot", "move"])],
}
PREDS = {"1": "A man on a horse rides by the sea.", "2": "Rice and broccoli on a plate.",
         "3": "A red car that cannot move."}
METRICS = ("Bleu_1", "Bleu_4", "ROUGE_L", "CIDEr")
LAYOUTS = ("karpathy", "jsonl", "coco", "results")


def write(layout: str, folder: Path) -> Path:
    if layout == "karpathy":
        path = folder / "dataset_tiny.json"
        path.write_text(json.dumps({"images": [
            {"cocoid": int(i), "split": "test", "filename": f"{i}.jpg",
             "sentences": [{"raw": raw, "tokens": tokens} for raw, tokens in refs]}
            for i, refs in REFS.items()]}))
    elif layout == "jsonl":
        path = folder / "refs.jsonl"
        path.write_text("".join(json.dumps(
            {"id": i, "image": f"{i}.jpg", "references": [raw for raw, _ in refs],
             "tokens": [tokens for _, tokens in refs]}) + "\n" for i, refs in REFS.items()))
    elif layout == "coco":
        path = folder / "captions.json"
        path.write_text(json.dumps({
            "images": [{"id": int(i), "file_name": f"{i}.jpg"} for i in REFS],
            "annotations": [{"id": 10 * int(i) + k, "image_id": int(i), "caption": raw,
                             "tokens": tokens}
                            for i, refs in REFS.items() for k, (raw, tokens) in enumerate(refs)],
        }))
    else:  # a result list carries raw captions only: their words are the tokens
        path = folder / "results.json"
        path.write_text(json.dumps([{"image_name": i, "captions": [raw for raw, _ in refs],
                                     "prediction": PREDS[i]} for i, refs in REFS.items()]))
    return path


def tokens_of(layout: str, raw: str, tokens: list[str]) -> str:
    return " ".join(raw.split()) if layout == "results" else " ".join(tokens)


@cache
def pycocoevalcap_scores(layout: str, route: str) -> dict[str, float]:
    """pycocoevalcap's own tokenizer and scorers, fed as the route says."""
    tokenizer = ReferenceTokenizer()
    if route == "raw":
        texts = {i: [raw for raw, _ in refs] for i, refs in REFS.items()}
    else:
        texts = {i: [tokens_of(layout, raw, tokens) for raw, tokens in refs]
                 for i, refs in REFS.items()}
    if route == "tokens":
        gts = texts
    else:
        gts = tokenizer.tokenize({i: [{"caption": t} for t in ts] for i, ts in texts.items()})
    res = tokenizer.tokenize({i: [{"caption": PREDS[i]}] for i in REFS})
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    return {"Bleu_1": bleu[0], "Bleu_4": bleu[3], "ROUGE_L": Rouge().compute_score(gts, res)[0],
            "CIDEr": Cider().compute_score(gts, res)[0]}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("route", ROUTES)
def test_route_matches_pycocoevalcap(layout: str, route: str, tmp_path: Path) -> None:
    data = load_dataset(write(layout, tmp_path), split="test", references=route)  # type: ignore[arg-type]
    assert data.route == route
    ours = score_captions(data, {s.image_id: PREDS[s.image_id] for s in data.samples},
                          metrics=METRICS)
    assert ours.details["references_route"] == route
    expected = pycocoevalcap_scores(layout, route)
    for name in METRICS:
        assert ours.corpus[name] == pytest.approx(expected[name], rel=1e-12, abs=1e-15), name


def test_the_three_routes_give_three_results(tmp_path: Path) -> None:
    cider = {route: pycocoevalcap_scores("karpathy", route)["CIDEr"] for route in ROUTES}
    assert len(set(cider.values())) == 3, cider
