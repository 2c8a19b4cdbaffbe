"""Human judgements of candidate captions, in three layouts and two protocols.

Layouts:

- ``generic``: CSV or TSV with a header: ``image``, ``candidate`` (or
  ``caption``), ``score``, optional ``rater``. ``ratings="mean"`` averages the
  rows of one (image, candidate) pair into one; ``ratings="each"`` keeps
  every rating as its own row.
- ``flickr8k-expert``: ``ExpertAnnotations.txt`` (image, caption id, three
  expert scores 1-4), caption texts from ``Flickr8k.token.txt``.
- ``flickr8k-crowdflower``: ``CrowdFlowerAnnotations.txt`` (image, caption id,
  share of "yes", yes count, no count).

Protocols for the Flickr8K layouts:

- ``published`` (default), the protocol behind the published tables (the SPICE
  paper, then Hessel et al. 2021, CLIPScore, appendix A): for Expert, a
  judgement whose candidate text is one of the image's own captions is dropped,
  every other candidate is scored against all five references, and each of the
  three expert ratings is its own row (Kendall tau-c is the number reported);
  for CrowdFlower, every judgement is kept, one row per pair scored by its share
  of "yes", and an image's references are its captions minus every caption
  judged for that image (tau-b is reported).
- ``leave-one-out``: a judgement whose candidate is one of the image's captions
  is kept and scored against the other four (matched by caption id); the expert
  ratings are averaged into one row.

Captions are indexed by image once, so loading is linear in the file sizes.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from evaluation.errors import DatasetError
from schemas.errors import ErrorCode

Layout = Literal["generic", "flickr8k-expert", "flickr8k-crowdflower"]
Protocol = Literal["published", "leave-one-out"]
Ratings = Literal["mean", "each"]
LAYOUTS: tuple[str, ...] = ("generic", "flickr8k-expert", "flickr8k-crowdflower")
PROTOCOLS: tuple[str, ...] = ("published", "leave-one-out")
RATINGS: tuple[str, ...] = ("mean", "each")
# The Kendall variant each published table reports.
REPORTED_TAU = {"flickr8k-expert": "c", "flickr8k-crowdflower": "b", "generic": "c"}


@dataclass(frozen=True)
class Judgement:
    image: str
    candidate: str
    score: float
    ratings: int  # how many ratings this row stands for
    references: tuple[str, ...] | None = None  # known for the Flickr8K layouts


@dataclass(frozen=True)
class Judgements:
    """The rows to correlate, and how they were drawn from the file."""

    rows: list[Judgement]
    layout: str
    protocol: str
    pairs: int  # judged (image, candidate) pairs in the file
    dropped: int = 0  # pairs left out by the protocol
    notes: dict[str, str] = field(default_factory=dict)

    @property
    def reported_tau(self) -> str:
        return REPORTED_TAU[self.layout]

    def provenance(self) -> dict[str, object]:
        return {"layout": self.layout, "protocol": self.protocol, "pairs": self.pairs,
                "dropped": self.dropped, "rows": len(self.rows),
                "reported_tau": self.reported_tau, **self.notes}


def load_judgements(
    path: Path,
    layout: Layout,
    *,
    captions: Path | None = None,
    protocol: Protocol = "published",
    ratings: Ratings = "mean",
) -> Judgements:
    if layout not in LAYOUTS:
        raise DatasetError(ErrorCode.unknown_format, f"layout must be one of {LAYOUTS}")
    if protocol not in PROTOCOLS:
        raise DatasetError(ErrorCode.invalid_argument, f"protocol must be one of {PROTOCOLS}")
    if ratings not in RATINGS:
        raise DatasetError(ErrorCode.invalid_argument, f"ratings must be one of {RATINGS}")
    if not path.is_file():
        raise DatasetError(ErrorCode.file_not_found, f"judgements not found: {path}")
    if layout == "generic":
        return _generic(path, ratings)
    if captions is None or not captions.is_file():
        raise DatasetError(
            ErrorCode.file_not_found,
            f"the {layout} layout needs --captions Flickr8k.token.txt (got {captions})",
        )
    index = CaptionIndex.read(captions)
    lines = _flickr_lines(path)
    if layout == "flickr8k-expert":
        return _expert(lines, index, protocol)
    return _crowdflower(lines, index, protocol)


def normalize(text: str) -> str:
    """Whitespace folded, as the published protocol compares caption texts."""
    return " ".join(text.split())


@dataclass(frozen=True)
class CaptionIndex:
    """``Flickr8k.token.txt`` read once: caption id -> text, image -> its caption ids."""

    texts: dict[str, str]
    by_image: dict[str, list[str]]

    @classmethod
    def read(cls, path: Path) -> CaptionIndex:
        texts: dict[str, str] = {}
        by_image: dict[str, list[str]] = defaultdict(list)
        for number, row in enumerate(_split_lines(path), start=1):
            if len(row) < 2:
                raise DatasetError(ErrorCode.malformed,
                                   f"{path}:{number}: expected id<TAB>caption")
            caption_id, text = row[0], normalize(row[1])
            texts[caption_id] = text
            by_image[caption_id.split("#")[0]].append(caption_id)
        return cls(texts=texts, by_image=dict(by_image))

    def text(self, caption_id: str, where: str) -> str:
        if caption_id not in self.texts:
            raise DatasetError(ErrorCode.unknown_image, f"{where}: no caption {caption_id}")
        return self.texts[caption_id]

    def references(self, image: str, where: str, *, without: Collection[str] = ()
                   ) -> tuple[str, ...]:
        """The image's captions, less the caption ids in ``without``."""
        refs = tuple(self.texts[c] for c in self.by_image.get(image, ()) if c not in without)
        if not refs:
            raise DatasetError(ErrorCode.empty_references, f"{where}: {image} has no reference")
        return refs


@dataclass(frozen=True)
class _Line:
    where: str
    image: str
    caption_id: str
    values: tuple[float, float, float]


def _flickr_lines(path: Path) -> list[_Line]:
    out = []
    for number, row in enumerate(_split_lines(path), start=1):
        where = f"{path}:{number}"
        if len(row) < 5:
            raise DatasetError(ErrorCode.malformed, f"{where}: expected 5 columns")
        try:
            values = (float(row[2]), float(row[3]), float(row[4]))
        except ValueError as exc:
            raise DatasetError(ErrorCode.malformed, f"{where}: bad score") from exc
        out.append(_Line(where, row[0], row[1], values))
    return out


def _expert(lines: list[_Line], index: CaptionIndex, protocol: Protocol) -> Judgements:
    rows, dropped = [], 0
    for line in lines:
        candidate = index.text(line.caption_id, line.where)
        if protocol == "leave-one-out":
            refs = index.references(line.image, line.where, without={line.caption_id})
            rows.append(Judgement(line.image, candidate, sum(line.values) / 3, 3, refs))
            continue
        refs = index.references(line.image, line.where)
        if candidate in refs:
            dropped += 1
            continue
        rows.extend(Judgement(line.image, candidate, value, 1, refs) for value in line.values)
    return Judgements(rows=rows, layout="flickr8k-expert", protocol=protocol,
                      pairs=len(lines), dropped=dropped)


def _crowdflower(lines: list[_Line], index: CaptionIndex, protocol: Protocol) -> Judgements:
    judged: dict[str, set[str]] = defaultdict(set)
    for line in lines:
        judged[line.image].add(index.text(line.caption_id, line.where))
    rows = []
    for line in lines:
        candidate = index.text(line.caption_id, line.where)
        if protocol == "published":
            own = {c for c in index.by_image.get(line.image, ())
                   if index.texts[c] in judged[line.image]}
        else:
            own = {line.caption_id}
        refs = index.references(line.image, line.where, without=own)
        share, yes, no = line.values
        rows.append(Judgement(line.image, candidate, share, int(yes + no), refs))
    return Judgements(rows=rows, layout="flickr8k-crowdflower", protocol=protocol,
                      pairs=len(lines))


def _generic(path: Path, ratings: Ratings) -> Judgements:
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
    if ratings == "each":
        rows = [Judgement(image, cand, value, 1)
                for (image, cand), values in scores.items() for value in values]
    else:
        rows = [Judgement(image, cand, sum(v) / len(v), len(v))
                for (image, cand), v in scores.items()]
    return Judgements(rows=rows, layout="generic", protocol=f"ratings-{ratings}",
                      pairs=len(scores))


def _split_lines(path: Path) -> list[list[str]]:
    """Tab-separated rows, split as they are (captions may hold quotes)."""
    with path.open(encoding="utf-8") as fh:
        return [[c.strip() for c in line.rstrip("\r\n").split("\t")]
                for line in fh if line.strip()]
