"""Evaluation data sets: images with their human reference captions.

Four layouts load into one :class:`Dataset`:

- ``coco``: COCO-caption annotation JSON (``images`` + ``annotations``);
- ``karpathy``: Karpathy's ``dataset_{coco,flickr8k,flickr30k}.json`` splits;
- ``jsonl``: one ``{"image": ..., "references": [...]}`` object per line, beside a
  folder of images;
- ``results``: result lists such as MAGIC's ``magic_result.json`` (``image_name``,
  ``captions``, ``prediction``), which carry the predictions too.

References are *raw* (the scorer tokenises them with the PTB tokenizer, as the
COCO code does) or *tokens* (already tokenised, e.g. Karpathy's ``tokens``; the
scorer leaves them as they are). Which one is an explicit choice of the loader,
recorded on the data set.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from evaluation.errors import DatasetError
from schemas.errors import ErrorCode

Format = Literal["auto", "coco", "karpathy", "jsonl", "results"]
ReferenceForm = Literal["raw", "tokens"]
FORMATS: tuple[str, ...] = ("auto", "coco", "karpathy", "jsonl", "results")


@dataclass(frozen=True)
class Sample:
    image_id: str
    references: tuple[str, ...]
    image_file: str | None = None


@dataclass(frozen=True)
class Dataset:
    name: str
    samples: tuple[Sample, ...]
    references_tokenized: bool = False
    # Result lists carry one prediction per image; other layouts carry none.
    predictions: Mapping[str, str] | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def ids(self) -> list[str]:
        return [s.image_id for s in self.samples]

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
    if fmt == "auto":
        fmt = detect_format(path)
    if references == "tokens" and fmt != "karpathy":
        raise DatasetError(
            ErrorCode.invalid_argument,
            f"--references tokens needs a layout that ships tokens (karpathy), not {fmt}",
        )
    if fmt == "coco":
        return load_coco(path)
    if fmt == "karpathy":
        return load_karpathy(path, split=split, references=references)
    if fmt == "jsonl":
        return load_jsonl(path)
    if fmt == "results":
        return load_results(path)
    raise DatasetError(ErrorCode.unknown_format, f"unknown data set format {fmt!r}")


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


def load_coco(path: Path) -> Dataset:
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
        refs[image_id].append(str(ann.get("caption", "")))
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
        if references == "tokens":
            texts = [" ".join(s.get("tokens") or []) for s in sentences]
        else:
            texts = [str(s.get("raw", "")) for s in sentences]
        filename = image.get("filename")
        if filename and image.get("filepath"):
            filename = f"{image['filepath']}/{filename}"
        samples.append(_sample(image_id, texts, filename, path))
    if not samples:
        raise DatasetError(ErrorCode.malformed, f"{path}: no image in split {split!r}")
    _check_unique(samples, path)
    return Dataset(
        name=f"{path.stem}:{split or 'all'}",
        samples=tuple(samples),
        references_tokenized=references == "tokens",
    )


def load_jsonl(path: Path) -> Dataset:
    """Lines of ``{"image": "a.jpg", "references": ["...", ...], "id": optional}``."""
    samples: list[Sample] = []
    for number, row in _read_jsonl(path):
        image = row.get("image")
        if not isinstance(image, str) or not image:
            raise DatasetError(ErrorCode.malformed, f"{path}:{number}: 'image' is missing")
        refs = row.get("references")
        if not isinstance(refs, list):
            raise DatasetError(ErrorCode.malformed, f"{path}:{number}: 'references' is not a list")
        samples.append(_sample(str(row.get("id", image)), refs, image, path))
    _check_unique(samples, path)
    return Dataset(name=path.stem, samples=tuple(samples))


def load_results(path: Path) -> Dataset:
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
        samples.append(_sample(image_id, row.get("captions") or [], str(name), path))
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
