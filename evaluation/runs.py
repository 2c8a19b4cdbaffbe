"""Generation runs: caption every image of a data set with a served model backend.

The captioner is the worker's own (``worker.models.load_engine``), so what is
evaluated is what is served. A run writes into one folder:

- ``run.json``: provenance (model id and revision, prompt and its version,
  generation parameters, seed, data set, library versions, timestamps);
- ``predictions.jsonl``: appended batch by batch and fsynced.

Running the same command again resumes: images already in
``predictions.jsonl`` are skipped, a torn last line is dropped, and a run
folder written with other settings is refused (``run_mismatch``) rather than
mixed.
"""

from __future__ import annotations

import hashlib
import json
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from evaluation.datasets import Dataset
from evaluation.errors import EvaluationError
from evaluation.predictions import (
    PREDICTIONS_FILE,
    PROVENANCE_FILE,
    append_predictions,
    read_jsonl,
)
from schemas.errors import CaptionError, ErrorCode

if TYPE_CHECKING:  # at run time the worker's models are imported by load_captioner only
    from worker.models import Captioner


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides the captions; a resumed run must match it exactly."""

    model: str
    revision: str | None = None
    prompt: str | None = None
    prompt_version: str | None = None
    max_new_tokens: int = 40
    num_beams: int = 1
    sample: bool = False
    seed: int = 0
    batch_size: int = 8
    device: str = "auto"

    def key(self) -> dict[str, Any]:
        """Settings that change captions (batch size and device do not, by contract)."""
        return {
            "model": self.model, "revision": self.revision, "prompt": self.prompt,
            "prompt_version": self.effective_prompt_version, "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams, "sample": self.sample, "seed": self.seed,
        }

    @property
    def effective_prompt_version(self) -> str | None:
        if self.prompt_version is not None or self.prompt is None:
            return self.prompt_version
        return "sha256:" + hashlib.sha256(self.prompt.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class RunSummary:
    out_dir: Path
    total: int
    already_done: int
    generated: int


def load_captioner(config: RunConfig) -> Captioner:
    """The worker's captioner for ``config``, loaded as a worker process loads it."""
    from schemas.settings import WorkerSettings
    from worker.models import load_engine

    settings = WorkerSettings(
        captioner_model=config.model,
        captioner_revision=config.revision,
        max_new_tokens=config.max_new_tokens,
        num_beams=config.num_beams,
        model_device=config.device,
    )
    try:
        return load_engine(settings).captioner
    except (OSError, ValueError) as exc:
        raise EvaluationError(
            ErrorCode.model_error, f"cannot load captioner {config.model}: {exc}"
        ) from exc


def run_captions(
    *,
    captioner: Captioner,
    config: RunConfig,
    dataset: Dataset,
    images: Mapping[str, Path],
    out_dir: Path,
    on_batch: Callable[[int], None] | None = None,
    dataset_source: Mapping[str, str] | None = None,
) -> RunSummary:
    """Caption every image not yet in ``out_dir``; ``on_batch(n)`` after each batch.

    ``dataset_source`` (the data set's file, format and split) is kept in ``run.json``,
    so that ``eval score RUN`` finds the references without ``--dataset``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    provenance = _open_provenance(out_dir, config, captioner, dataset)
    if dataset_source is not None:
        provenance["dataset_source"] = dict(dataset_source)
    done = read_jsonl(out_dir / PREDICTIONS_FILE, repair=True)
    unknown = sorted(set(done) - set(dataset.ids))
    if unknown:
        raise EvaluationError(
            ErrorCode.run_mismatch,
            f"{out_dir} holds predictions for images not in {dataset.name}: {unknown[:5]}",
        )
    todo = [i for i in dataset.ids if i not in done]
    for start in range(0, len(todo), config.batch_size):
        batch = todo[start : start + config.batch_size]
        pictures = [_open_image(images[i]) for i in batch]
        prompts = [config.prompt] * len(batch) if config.prompt else None
        try:
            captions = captioner.caption(
                pictures, prompts=prompts, seed=config.seed if config.sample else None
            )
        except (RuntimeError, ValueError) as exc:
            raise EvaluationError(ErrorCode.model_error, f"captioning failed: {exc}") from exc
        failed = next((c for c in captions if isinstance(c, CaptionError)), None)
        if failed is not None:  # a served model's request for one image failed
            raise EvaluationError(failed.code, f"captioning failed: {failed.message}")
        if len(captions) != len(batch):
            raise EvaluationError(
                ErrorCode.model_error,
                f"model returned {len(captions)} captions for {len(batch)} images",
            )
        append_predictions(out_dir / PREDICTIONS_FILE, zip(batch, captions, strict=True))
        if on_batch is not None:
            on_batch(len(batch))
    provenance["finished_at"] = _now()
    _write_json(out_dir / PROVENANCE_FILE, provenance)
    return RunSummary(out_dir=out_dir, total=len(dataset), already_done=len(done),
                      generated=len(todo))


def _open_provenance(
    out_dir: Path, config: RunConfig, captioner: Captioner, dataset: Dataset
) -> dict[str, Any]:
    path = out_dir / PROVENANCE_FILE
    info = captioner.info
    served = {
        "model_id": getattr(info, "model_id", config.model),
        "source": getattr(info, "source", "") or config.model,
        "revision": getattr(info, "revision", config.revision),
        "generation": dict(getattr(info, "generation", {}) or {}),
    }
    if path.is_file():
        previous = json.loads(path.read_text(encoding="utf-8"))
        if previous.get("config") != config.key() or previous.get("dataset") != dataset.name:
            raise EvaluationError(
                ErrorCode.run_mismatch,
                f"{out_dir} was written with other settings ({previous.get('config')}, "
                f"{previous.get('dataset')}); use a new --out folder",
            )
        if previous.get("served", {}).get("revision") != served["revision"]:
            raise EvaluationError(
                ErrorCode.run_mismatch,
                f"{out_dir} was written by revision {previous['served'].get('revision')}, "
                f"the model now loads revision {served['revision']}",
            )
        previous.setdefault("resumed_at", []).append(_now())
        _write_json(path, previous)
        return previous
    provenance = {
        "config": config.key(),
        "dataset": dataset.name,
        "images": len(dataset),
        "served": served,
        "generation": {"max_new_tokens": config.max_new_tokens, "num_beams": config.num_beams,
                       "do_sample": config.sample, "seed": config.seed,
                       "batch_size": config.batch_size},
        "versions": _versions(),
        "started_at": _now(),
    }
    _write_json(path, provenance)
    return provenance


def _open_image(path: Path) -> Image.Image:
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except (OSError, ValueError) as exc:
        raise EvaluationError(
            ErrorCode.image_unreadable, f"cannot read image {path}: {exc}"
        ) from exc


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for package in ("captionq", "torch", "transformers", "pycocoevalcap"):
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    tmp.replace(path)
