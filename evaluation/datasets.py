"""Evaluation data sets: images with their human reference captions.

Four layouts load into one :class:`Dataset`:

- ``coco``: COCO-caption annotation JSON (``images`` + ``annotations``);
- ``karpathy``: Karpathy's ``dataset_{coco,flickr8k,flickr30k}.json`` splits;
- ``jsonl``: one ``{"image": ..., "references": [...]}`` object per line, beside a
  folder of images;
- ``results``: result lists such as MAGIC's ``magic_result.json`` (``image_name``,
  ``captions``, ``prediction``), which carry the predictions too.

References reach the scorer by one of three routes, each one a published
pipeline took; the choice is the loader's, recorded on the data set and named in
the scores' provenance:

- ``raw``: the raw captions through the PTB tokenizer (the COCO code as shipped;
  reproduces the COCO leaderboard and papers that call ``COCOEvalCap``);
- ``tokens``: the tokens as they are, no PTB (pipelines that fed pre-tokenised
  references straight to the scorers);
- ``tokens-ptb``: the tokens joined by spaces, then through PTB (pipelines that
  handed Karpathy's ``tokens`` to ``COCOEvalCap``, which tokenises them again).

The tokens of a reference are the layout's own token list where it has one
(Karpathy's ``tokens``; a ``tokens`` list beside ``references`` in JSONL, or on a
COCO annotation), otherwise its text, taken as already tokenised. Predictions
always go through PTB, as in the COCO code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from evaluation.errors import DatasetError
from schemas.errors import ErrorCode

Format = Literal["auto", "coco", "karpathy", "jsonl", "results"]
ReferenceForm = Literal["raw", "tokens", "tokens-ptb"]
FORMATS: tuple[str, ...] = ("auto", "coco", "karpathy", "jsonl", "results")
ROUTES: tuple[str, ...] = ("raw", "tokens", "tokens-ptb")


@dataclass(frozen=True)
class Sample:
    image_id: str
    references: tuple[str, ...]
    image_file: str | None = None


@dataclass(frozen=True)
class Dataset:
    name: str
    samples: tuple[Sample, ...]
    route: ReferenceForm = "raw"  # how the references reach the scorer (see the docstring)
    # Result lists carry one prediction per image; other layouts carry none.
    predictions: Mapping[str, str] | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def ids(self) -> list[str]:
        return [s.image_id for s in self.samples]

    @property
    def references_tokenized(self) -> bool:
        """The references skip the PTB tokenizer."""
        return self.route == "tokens"

    def by_id(self) -> dict[str, Sample]:
        return {s.image_id: s for s in self.samples}


def load_dataset(
    path: Path,
    *,
    fmt: Format = "auto",
    split: str | None = "test",
    references: ReferenceForm = "raw",
) -> Dataset:
    """Load any supported layout; ``fmt="auto"`` looks at the file to decide."""
    if not path.is_file():
        raise DatasetError(ErrorCode.file_not_found, f"data set file not found: {path}")
    if references not in ROUTES:
        raise DatasetError(ErrorCode.invalid_argument, f"references route must be one of {ROUTES}")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "coco":
        data = load_coco(path, references=references)
    elif fmt == "karpathy":
        data = load_karpathy(path, split=split, references=references)
    elif fmt == "jsonl":
        data = load_jsonl(path, references=references)
    elif fmt == "results":
        data = load_results(path, references=references)
    else:
        raise DatasetError(ErrorCode.unknown_format, f"unknown data set format {fmt!r}")
    return replace(data, route=references)


def reference_texts(raw: Sequence[Any], tokens: Sequence[Any] | None, route: ReferenceForm
                    ) -> list[str]:
    """What the scorer is given for one image: raw texts, or the tokens joined by spaces."""
    if route == "raw":
        return [str(r) for r in raw]
    if tokens is None:
        return [" ".join(str(r).split()) for r in raw]
    return [" ".join(t) if isinstance(t, list) else " ".join(str(t).split()) for t in tokens]


def detect_format(path: Path) -> Format:
    if path.suffix == ".jsonl":
        return "jsonl"
    data = _read_json(path)
    if isinstance(data, dict) and "annotations" in data and "images" in data:
        return "coco"
    if isinstance(data, dict) and isinstance(data.get("images"), list):
        first = data["images"][0] if data["images"] else {}
        if isinstance(first, dict) and "sentences" in first:
            return "karpathy"
    if (isinstance(data, list) and data and isinstance(data[0], dict)
            and {"captions", "prediction"} <= data[0].keys()):
        return "results"
    raise DatasetError(
        ErrorCode.unknown_format,
        f"{path}: not a COCO annotation file, a Karpathy split, a JSONL reference file "
        "or a result list; pass --format",
    )


def load_coco(path: Path, *, references: ReferenceForm = "raw") -> Dataset:
    data = _read_json(path)
    if not isinstance(data, dict) or "annotations" not in data or "images" not in data:
        raise DatasetError(ErrorCode.malformed, f"{path}: expected 'images' and 'annotations'")
    files: dict[str, str | None] = {}
    for image in data["images"]:
        image_id = _id(image, "id", path)
        if image_id in files:
            raise DatasetError(ErrorCode.duplicate_id, f"{path}: image id {image_id} twice")
        files[image_id] = image.get("file_name")
    refs: dict[str, list[str]] = {i: [] for i in files}
    raw_route = references == "raw"
    seen_ann: set[str] = set()
    for ann in data["annotations"]:
        ann_id = str(ann.get("id", len(seen_ann)))
        if ann_id in seen_ann:
            raise DatasetError(ErrorCode.duplicate_id, f"{path}: annotation id {ann_id} twice")
        seen_ann.add(ann_id)
        image_id = _id(ann, "image_id", path)
        if image_id not in refs:
            raise DatasetError(
                ErrorCode.unknown_image,
                f"{path}: annotation {ann_id} names unknown image {image_id}",
            )
        caption = str(ann.get("caption", ""))
        refs[image_id].extend(reference_texts(
            [caption], None if raw_route or "tokens" not in ann else [ann["tokens"]],
            references))
    samples = [_sample(i, refs[i], files[i], path) for i in files]
    return Dataset(name=path.stem, samples=tuple(samples))


def load_karpathy(
    path: Path, *, split: str | None = "test", references: ReferenceForm = "raw"
) -> Dataset:
    """``split=None`` keeps every image; ``restval`` is its own split, as Karpathy ships it."""
    data = _read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetError(ErrorCode.malformed, f"{path}: expected an 'images' list")
    samples: list[Sample] = []
    for image in data["images"]:
        if split is not None and image.get("split") != split:
            continue
        key = "cocoid" if "cocoid" in image else "imgid"
        image_id = _id(image, key, path)
        sentences = image.get("sentences") or []
        texts = reference_texts([s.get("raw", "") for s in sentences],
                                [s.get("tokens") or [] for s in sentences], references)
        filename = image.get("filename")
        if filename and image.get("filepath"):
            filename = f"{image['filepath']}/{filename}"
        samples.append(_sample(image_id, texts, filename, path))
    if not samples:
        raise DatasetError(ErrorCode.malformed, f"{path}: no image in split {split!r}")
    _check_unique(samples, path)
    return Dataset(name=f"{path.stem}:{split or 'all'}", samples=tuple(samples))


def load_jsonl(path: Path, *, references: ReferenceForm = "raw") -> Dataset:
    """Lines of ``{"image": "a.jpg", "references": ["...", ...], "id": optional}``, with an
    optional ``"tokens"``: one token list per reference."""
    samples: list[Sample] = []
    for number, row in _read_jsonl(path):
        image = row.get("image")
        if not isinstance(image, str) or not image:
            raise DatasetError(ErrorCode.malformed, f"{path}:{number}: 'image' is missing")
        refs = row.get("references")
        if not isinstance(refs, list):
            raise DatasetError(ErrorCode.malformed, f"{path}:{number}: 'references' is not a list")
        tokens = row.get("tokens")
        if tokens is not None and (not isinstance(tokens, list) or len(tokens) != len(refs)):
            raise DatasetError(ErrorCode.malformed,
                               f"{path}:{number}: 'tokens' needs one list per reference")
        samples.append(_sample(str(row.get("id", image)),
                               reference_texts(refs, tokens, references), image, path))
    _check_unique(samples, path)
    return Dataset(name=path.stem, samples=tuple(samples))


def load_results(path: Path, *, references: ReferenceForm = "raw") -> Dataset:
    """A result list: ``image_name`` (or ``image_id``), ``captions``, ``prediction``."""
    data = _read_json(path)
    if not isinstance(data, list):
        raise DatasetError(ErrorCode.malformed, f"{path}: expected a list of results")
    samples: list[Sample] = []
    predictions: dict[str, str] = {}
    for row in data:
        name = row.get("image_name", row.get("image_id"))
        if name is None:
            raise DatasetError(ErrorCode.malformed, f"{path}: a result has no image_name")
        image_id = str(name)
        texts = reference_texts(row.get("captions") or [], None, references)
        samples.append(_sample(image_id, texts, str(name), path))
        if image_id in predictions:
            raise DatasetError(ErrorCode.duplicate_id, f"{path}: image {image_id} twice")
        predictions[image_id] = str(row.get("prediction", ""))
    return Dataset(name=path.stem, samples=tuple(samples), predictions=predictions)


def check_images(dataset: Dataset, images_dir: Path) -> dict[str, Path]:
    """Resolve every sample's image under ``images_dir``; name the missing ones."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for sample in dataset.samples:
        name = sample.image_file
        candidates = [name, Path(name).name if name else None]
        path = next(
            (images_dir / c for c in candidates if c and (images_dir / c).is_file()), None
        )
        if path is None:
            missing.append(sample.image_file or sample.image_id)
        else:
            found[sample.image_id] = path
    if missing:
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DatasetError(
            ErrorCode.image_missing,
            f"{len(missing)} image(s) not found under {images_dir}: {', '.join(missing[:5])}{more}",
        )
    return found


def _sample(image_id: str, refs: Iterable[Any], image_file: str | None, path: Path) -> Sample:
    texts = tuple(str(r).strip() for r in refs)
    if not texts or not all(texts):
        raise DatasetError(
            ErrorCode.empty_references,
            f"{path}: image {image_id} has no references or an empty one",
        )
    return Sample(image_id=image_id, references=texts, image_file=image_file)


def _check_unique(samples: list[Sample], path: Path) -> None:
    seen: set[str] = set()
    for sample in samples:
        if sample.image_id in seen:
            raise DatasetError(ErrorCode.duplicate_id, f"{path}: image id {sample.image_id} twice")
        seen.add(sample.image_id)


def _id(row: Mapping[str, Any], key: str, path: Path) -> str:
    if key not in row:
        raise DatasetError(ErrorCode.malformed, f"{path}: an entry has no {key!r}")
    return str(row[key])


def _read_json(path: Path) -> Any:
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError as exc:
        raise DatasetError(ErrorCode.file_not_found, f"file not found: {path}") from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(ErrorCode.malformed, f"{path}: not valid JSON ({exc})") from exc


def _read_jsonl(path: Path) -> Iterable[tuple[int, dict[str, Any]]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as exc:
        raise DatasetError(ErrorCode.file_not_found, f"file not found: {path}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(ErrorCode.malformed, f"{path}:{number}: not JSON ({exc})") from exc
        if not isinstance(row, dict):
            raise DatasetError(ErrorCode.malformed, f"{path}:{number}: not a JSON object")
        yield number, row
