"""Human judgements of candidate captions, in three layouts.

- ``generic``: CSV or TSV with a header: ``image``, ``candidate`` (or
  ``caption``), ``score``, optional ``rater``. Several rows for the same
  (image, candidate) — several raters — are averaged.
- ``flickr8k-expert``: ``ExpertAnnotations.txt`` (image, caption id, three
  expert scores 1-4, averaged), with the caption texts from
  ``Flickr8k.token.txt``.
- ``flickr8k-crowdflower``: ``CrowdFlowerAnnotations.txt`` (image, caption id,
  share of "yes" votes, yes count, no count); the score is the share of yes.

For the Flickr8K layouts the references of an image are its five captions in
``Flickr8k.token.txt``, minus the candidate itself when the candidate is one
of them (a caption must not be scored against itself).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from evaluation.errors import DatasetError
from schemas.errors import ErrorCode

Layout = Literal["generic", "flickr8k-expert", "flickr8k-crowdflower"]
LAYOUTS: tuple[str, ...] = ("generic", "flickr8k-expert", "flickr8k-crowdflower")


@dataclass(frozen=True)
class Judgement:
    image: str
    candidate: str
    score: float
    ratings: int
    references: tuple[str, ...] | None = None  # known for the Flickr8K layouts


def load_judgements(path: Path, layout: Layout, *, captions: Path | None = None
                    ) -> list[Judgement]:
    if not path.is_file():
        raise DatasetError(ErrorCode.file_not_found, f"judgements not found: {path}")
    if layout == "generic":
        return _generic(path)
    if captions is None or not captions.is_file():
        raise DatasetError(
            ErrorCode.file_not_found,
            f"the {layout} layout needs --captions Flickr8k.token.txt (got {captions})",
        )
    texts = _flickr_captions(captions)
    rows = _rows(path, "\t")
    out = []
    for number, row in enumerate(rows, start=1):
        if len(row) < 5:
            raise DatasetError(ErrorCode.malformed, f"{path}:{number}: expected 5 columns")
        image, caption_id = row[0], row[1]
        if caption_id not in texts:
            raise DatasetError(ErrorCode.unknown_image, f"{path}:{number}: no caption {caption_id}")
        values = [float(v) for v in row[2:5]]
        if layout == "flickr8k-expert":
            score, ratings = sum(values) / 3, 3
        else:
            score, ratings = values[0], int(values[1] + values[2])
        refs = tuple(t for cid, t in texts.items()
                     if cid.split("#")[0] == image and cid != caption_id)
        if not refs:
            raise DatasetError(ErrorCode.empty_references, f"{path}:{number}: {image} has none")
        out.append(Judgement(image, texts[caption_id], score, ratings, refs))
    return out


def _generic(path: Path) -> list[Judgement]:
    delimiter = "\t" if path.suffix.lower() in {".tsv", ".tab"} else ","
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        fields = {f.strip().lower() for f in reader.fieldnames or []}
        text_field = "candidate" if "candidate" in fields else "caption"
        if not {"image", text_field, "score"} <= fields:
            raise DatasetError(
                ErrorCode.malformed,
                f"{path}: needs columns image, candidate (or caption), score; has {sorted(fields)}",
            )
        scores: dict[tuple[str, str], list[float]] = defaultdict(list)
        raters: dict[tuple[str, str], set[str]] = defaultdict(set)
        for number, raw in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
            key = (row["image"], row[text_field])
            try:
                scores[key].append(float(row["score"]))
            except ValueError as exc:
                raise DatasetError(ErrorCode.malformed, f"{path}:{number}: bad score") from exc
            rater = row.get("rater")
            if rater:
                if rater in raters[key]:
                    raise DatasetError(
                        ErrorCode.duplicate_id, f"{path}:{number}: rater {rater} twice for {key}"
                    )
                raters[key].add(rater)
    if not scores:
        raise DatasetError(ErrorCode.malformed, f"{path}: no judgement")
    return [Judgement(image, cand, sum(v) / len(v), len(v)) for (image, cand), v in scores.items()]


def _flickr_captions(path: Path) -> dict[str, str]:
    out = {}
    for number, row in enumerate(_rows(path, "\t"), start=1):
        if len(row) < 2:
            raise DatasetError(ErrorCode.malformed, f"{path}:{number}: expected id<TAB>caption")
        out[row[0]] = row[1]
    return out


def _rows(path: Path, delimiter: str) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as fh:
        return [[c.strip() for c in row] for row in csv.reader(fh, delimiter=delimiter) if row]
