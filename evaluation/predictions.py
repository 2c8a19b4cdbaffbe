"""Prediction files: what a run writes and what ``eval score`` reads.

A run folder holds ``run.json`` (provenance) and ``predictions.jsonl``, one
``{"image_id": ..., "caption": ...}`` per line, appended and flushed batch by
batch so that an interrupted run loses at most the batch in flight. The scorer
also reads a COCO results file (``[{"image_id", "caption"}]``), any JSONL of the
same shape, and result lists that carry their own predictions (MAGIC's).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from evaluation.errors import DatasetError
from schemas.errors import ErrorCode

PREDICTIONS_FILE = "predictions.jsonl"
PROVENANCE_FILE = "run.json"


def load_predictions(path: Path) -> tuple[dict[str, str], dict[str, Any]]:
    """(image id -> caption, provenance) from a run folder or a predictions file."""
    if path.is_dir():
        provenance_path = path / PROVENANCE_FILE
        provenance = (
            json.loads(provenance_path.read_text(encoding="utf-8"))
            if provenance_path.is_file() else {}
        )
        return read_jsonl(path / PREDICTIONS_FILE), provenance
    if not path.is_file():
        raise DatasetError(ErrorCode.file_not_found, f"predictions not found: {path}")
    if path.suffix == ".jsonl":
        return read_jsonl(path), {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(ErrorCode.malformed, f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, list):
        raise DatasetError(ErrorCode.malformed, f"{path}: expected a list of predictions")
    rows = (
        {"image_id": r.get("image_name", r.get("image_id")), "caption": r.get("prediction")}
        if isinstance(r, dict) and "prediction" in r else r
        for r in data
    )
    return _collect(rows, path), {}


def read_jsonl(path: Path, *, repair: bool = False) -> dict[str, str]:
    """Predictions of a JSONL file. ``repair`` drops a torn last line (an interrupted write)."""
    if not path.is_file():
        if repair:
            return {}
        raise DatasetError(ErrorCode.file_not_found, f"predictions not found: {path}")
    raw = path.read_bytes()
    if repair and raw and not raw.endswith(b"\n"):
        raw = raw[: raw.rfind(b"\n") + 1]
        with path.open("r+b") as fh:
            fh.truncate(len(raw))
    rows = []
    for number, line in enumerate(raw.decode("utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DatasetError(ErrorCode.malformed, f"{path}:{number}: not JSON ({exc})") from exc
    return _collect(rows, path)


def append_predictions(path: Path, rows: Iterable[tuple[str, str]]) -> None:
    """Append and make durable before returning: the run can be resumed from here."""
    with path.open("a", encoding="utf-8") as fh:
        for image_id, caption in rows:
            fh.write(json.dumps({"image_id": image_id, "caption": caption}) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def _collect(rows: Iterable[Any], path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for row in rows:
        if not isinstance(row, dict) or row.get("image_id") is None or "caption" not in row:
            raise DatasetError(
                ErrorCode.malformed, f"{path}: each prediction needs 'image_id' and 'caption'"
            )
        image_id = str(row["image_id"])
        if image_id in out:
            raise DatasetError(ErrorCode.duplicate_id, f"{path}: two predictions for {image_id}")
        out[image_id] = str(row["caption"])
    return out
