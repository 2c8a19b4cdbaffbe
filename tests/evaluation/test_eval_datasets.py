from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluation.datasets import check_images, load_dataset
from evaluation.errors import DatasetError
from evaluation.predictions import append_predictions, load_predictions, read_jsonl
from schemas.errors import ErrorCode

pytestmark = pytest.mark.unit


def write(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data))
    return path


def coco(tmp_path: Path, **changes: object) -> Path:
    data = {
        "images": [{"id": 1, "file_name": "a.jpg"}, {"id": 2, "file_name": "b.jpg"}],
        "annotations": [
            {"id": 10, "image_id": 1, "caption": "A dog."},
            {"id": 11, "image_id": 1, "caption": "A brown dog."},
            {"id": 12, "image_id": 2, "caption": "A cat."},
        ],
    }
    data.update(changes)
    return write(tmp_path / "captions.json", data)


def karpathy(tmp_path: Path) -> Path:
    def image(i: int, split: str) -> dict:
        return {"filepath": "val2014", "filename": f"{i}.jpg", "imgid": i, "cocoid": 100 + i,
                "split": split, "sentences": [
                    {"raw": "A Dog, running.", "tokens": ["a", "dog", "running"]},
                    {"raw": "Dog runs!", "tokens": ["dog", "runs"]}]}
    return write(tmp_path / "dataset_coco.json",
                 {"dataset": "coco", "images": [image(0, "test"), image(1, "train")]})


def test_coco_annotations(tmp_path: Path) -> None:
    ds = load_dataset(coco(tmp_path))
    assert ds.ids == ["1", "2"]
    assert ds.samples[0].references == ("A dog.", "A brown dog.")
    assert ds.samples[0].image_file == "a.jpg"
    assert not ds.references_tokenized


def test_karpathy_raw_or_tokens_is_explicit(tmp_path: Path) -> None:
    raw = load_dataset(karpathy(tmp_path), split="test")
    tokens = load_dataset(karpathy(tmp_path), split="test", references="tokens")
    assert raw.ids == ["100"]
    assert raw.samples[0].references[0] == "A Dog, running."
    assert tokens.samples[0].references == ("a dog running", "dog runs")
    assert tokens.references_tokenized
    assert not raw.references_tokenized
    assert raw.samples[0].image_file == "val2014/0.jpg"
    assert len(load_dataset(karpathy(tmp_path), split=None)) == 2


def test_every_layout_takes_every_route(tmp_path: Path) -> None:
    for route in ("raw", "tokens", "tokens-ptb"):
        assert load_dataset(coco(tmp_path), references=route).route == route
    with pytest.raises(DatasetError) as err:
        load_dataset(coco(tmp_path), references="ptb")  # type: ignore[arg-type]
    assert err.value.code is ErrorCode.invalid_argument


def test_jsonl_and_result_lists(tmp_path: Path) -> None:
    path = tmp_path / "refs.jsonl"
    path.write_text('{"image": "a.png", "references": ["x y"]}\n\n{"image": "b.png", '
                    '"references": ["z"], "id": "B"}\n')
    assert load_dataset(path).ids == ["a.png", "B"]
    results = write(tmp_path / "r.json", [{"image_name": "a.jpg", "captions": ["a b"],
                                           "prediction": "a c"}])
    ds = load_dataset(results)
    assert ds.predictions == {"a.jpg": "a c"}
    assert load_predictions(results)[0] == {"a.jpg": "a c"}


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"images": [{"id": 1}, {"id": 1}]}, ErrorCode.duplicate_id),
        ({"images": [{"id": 1}, {"id": 2}, {"id": 3}]}, ErrorCode.empty_references),
        ({"annotations": [{"id": 1, "image_id": 9, "caption": "x"}]}, ErrorCode.unknown_image),
        ({"annotations": [{"id": 1, "image_id": 1, "caption": " "},
                          {"id": 2, "image_id": 2, "caption": "x"}]}, ErrorCode.empty_references),
    ],
)
def test_clear_errors(tmp_path: Path, changes: dict, code: ErrorCode) -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset(coco(tmp_path, **changes))
    assert err.value.code is code


def test_unknown_layout_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError) as err:
        load_dataset(write(tmp_path / "x.json", {"hello": 1}))
    assert err.value.code is ErrorCode.unknown_format
    with pytest.raises(DatasetError) as err:
        load_dataset(tmp_path / "nope.json")
    assert err.value.code is ErrorCode.file_not_found


def test_missing_images_are_named(tmp_path: Path) -> None:
    ds = load_dataset(coco(tmp_path))
    (tmp_path / "a.jpg").write_bytes(b"x")
    with pytest.raises(DatasetError) as err:
        check_images(ds, tmp_path)
    assert err.value.code is ErrorCode.image_missing
    assert "b.jpg" in err.value.message
    (tmp_path / "b.jpg").write_bytes(b"x")
    assert check_images(ds, tmp_path) == {"1": tmp_path / "a.jpg", "2": tmp_path / "b.jpg"}


def test_predictions_files(tmp_path: Path) -> None:
    preds = write(tmp_path / "res.json", [{"image_id": 1, "caption": "a"},
                                         {"image_id": 2, "caption": "b"}])
    assert load_predictions(preds)[0] == {"1": "a", "2": "b"}
    dup = write(tmp_path / "dup.json", [{"image_id": 1, "caption": "a"}] * 2)
    with pytest.raises(DatasetError) as err:
        load_predictions(dup)
    assert err.value.code is ErrorCode.duplicate_id


def test_torn_last_line_is_dropped_on_repair(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    append_predictions(path, [("1", "a dog"), ("2", "a cat")])
    with path.open("a") as fh:
        fh.write('{"image_id": "3", "capt')
    with pytest.raises(DatasetError):
        read_jsonl(path)
    assert read_jsonl(path, repair=True) == {"1": "a dog", "2": "a cat"}
    assert path.read_text().endswith("\n")
