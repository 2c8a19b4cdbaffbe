"""Writing: images in, caption and scored ad-copy variants out. Pure: no Celery, no database.

The pipeline hands this module decoded images and the job specs; what comes
back is what the task stores, one entry per spec and in order: a
:class:`Written`, or the :class:`PermanentError` that failed that job alone.
A :class:`TransientError` (``OutOfMemoryError``) is raised for the whole call; the
pipeline splits the batch and retries.

The hot path, one batched model call per stage::

    validate each job → caption all images → write all variant slots
    → check platform rules + near-duplicates → regenerate the offenders (one call)
    → repair what still breaks → score (one CLIP call when configured) → assemble
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from schemas.api import VariantBase, catalogue_problem
from schemas.checks import rules
from schemas.checks.policy import clean_brand_voice
from schemas.errors import ErrorCode, ImageError, PermanentError
from schemas.platforms import PLATFORMS, RULES_VERSION, Platform
from schemas.styles import STYLES, Style
from schemas.tables import ReviewState
from worker import quality
from worker.models import Engine, WriteRequest
from worker.models.base import check_batch

REGENERATE_SEED_STEP = 1_000_003
DUPLICATE_HINT = "it repeated another variant almost word for word; write a different one"


@dataclass(frozen=True)
class JobSpec:
    job_id: str
    styles: tuple[str, ...]
    platforms: tuple[str, ...]
    variants: int
    brand_voice: str | None = None
    seed: int = 0
    auto_approve_threshold: float | None = None
    # The tenant's copy policy (schemas.checks.policy.check_copy).
    banned_terms: tuple[str, ...] = ()
    allow_domains: tuple[str, ...] = ()
    allow_handles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Written:
    job_id: str
    caption: str
    model_id: str
    model_revision: str | None
    variants: tuple[VariantBase, ...]


@dataclass
class _Job:
    position: int
    spec: JobSpec
    image: Image.Image
    brand_voice: str | None
    caption: str = ""


@dataclass
class _Slot:
    job: _Job
    style: Style
    platform: Platform
    index: int
    seed: int
    text: str = ""
    breaches: list[rules.Breach] = field(default_factory=list)
    duplicate: bool = False
    attempts: list[dict[str, Any]] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)


def _validated(position: int, spec: JobSpec, image: object) -> _Job:
    problem = catalogue_problem(
        styles=spec.styles, platforms=spec.platforms, variants=spec.variants
    )
    if problem is not None:
        code, message = problem
        raise PermanentError(message, code=code)
    if not isinstance(image, Image.Image):
        raise ImageError(f"not a decoded image: {type(image).__name__}")
    if image.width < 1 or image.height < 1:
        raise ImageError("image has no pixels", code=ErrorCode.image_dimensions)
    threshold = spec.auto_approve_threshold
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise PermanentError(f"auto-approve threshold {threshold} is outside [0, 1]")
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    voice = clean_brand_voice(spec.brand_voice) if spec.brand_voice is not None else None
    return _Job(position, spec, rgb, voice or None)


def _slots(job: _Job) -> list[_Slot]:
    spec = job.spec
    combos = [(s, p, i) for s in spec.styles for p in spec.platforms for i in range(spec.variants)]
    return [_Slot(job, STYLES[s], PLATFORMS[p], i, spec.seed + n)
            for n, (s, p, i) in enumerate(combos)]


def _request(slot: _Slot, engine: Engine, hint: str | None) -> WriteRequest:
    instruction = slot.style.instruction(
        platform=slot.platform.label,
        rules=rules.rules_text(slot.platform),
        caption=None if engine.writer.sees_image else slot.job.caption,
        brand_voice=slot.job.brand_voice,
        hint=hint,
    )
    return WriteRequest(slot.job.image, slot.job.caption, instruction, slot.style.prefix,
                        slot.seed)


def _write(slots: Sequence[_Slot], engine: Engine, hints: Sequence[str | None]) -> None:
    """One batched writer call for ``slots``; texts land on the slots."""
    requests = [_request(s, engine, h) for s, h in zip(slots, hints, strict=True)]
    texts = engine.writer.write(requests)
    check_batch(f"{engine.writer.info.model_id} write", len(texts), len(slots))
    for slot, text in zip(slots, texts, strict=True):
        slot.text = rules.clean_generated(text)
        slot.breaches = rules.check(text, slot.platform)


def _mark_duplicates(slots: Sequence[_Slot]) -> None:
    """Within each job, in slot order: a variant that is nearly the same text as an
    earlier kept variant is a near-duplicate."""
    kept: dict[int, list[str]] = {}
    for slot in slots:
        normal = rules.normalise(slot.text)
        earlier = kept.setdefault(slot.job.position, [])
        slot.duplicate = any(
            rules.similarity(normal, other) >= rules.SIMILAR_THRESHOLD
            for other in earlier
        )
        if not slot.duplicate:
            earlier.append(normal)


def _record(slots: Sequence[_Slot]) -> None:
    for slot in slots:
        slot.attempts.append({
            "seed": slot.seed,
            "breaches": [b.rule for b in slot.breaches],
            "near_duplicate": slot.duplicate,
        })


def _regenerate(slots: Sequence[_Slot], engine: Engine) -> None:
    """Write once more, with a new seed and the breach stated, every variant that broke
    a platform rule or duplicated another."""
    redo = [s for s in slots if s.breaches or s.duplicate]
    if not redo:
        return
    hints = ["; ".join([*(b.detail for b in s.breaches), *([DUPLICATE_HINT] * s.duplicate)])
             for s in redo]
    for slot in redo:
        slot.seed += REGENERATE_SEED_STEP
    _write(redo, engine, hints)
    _mark_duplicates(slots)
    _record(redo)


def _repair(slot: _Slot) -> None:
    if slot.breaches and slot.text.strip():
        slot.text, slot.repairs = rules.repair(slot.text, slot.platform)
        slot.breaches = rules.check(slot.text, slot.platform)


def write_batch(
    specs: Sequence[JobSpec],
    images: Sequence[Image.Image],
    *,
    engine: Engine,
    regenerate: bool = True,
) -> list[Written | PermanentError]:
    """Caption every image in one call, then every variant slot in one call.

    ``regenerate=False`` skips the second writer call for breaching or duplicate
    variants (they are repaired or flagged directly): benchmarks use it to make
    exactly the model calls a raw ``generate`` loop makes.
    """
    check_batch("write_batch images", len(images), len(specs))
    results: list[Written | PermanentError | None] = [None] * len(specs)
    jobs: list[_Job] = []
    for position, (spec, image) in enumerate(zip(specs, images, strict=True)):
        try:
            jobs.append(_validated(position, spec, image))
        except PermanentError as exc:
            results[position] = exc
    if jobs:
        captions = engine.captioner.caption([job.image for job in jobs])
        check_batch(engine.captioner.info.model_id, len(captions), len(jobs))
        for job, caption in zip(jobs, captions, strict=True):
            job.caption = rules.clean_generated(caption)
        slots = [slot for job in jobs for slot in _slots(job)]
        _write(slots, engine, [None] * len(slots))
        _mark_duplicates(slots)
        _record(slots)
        if regenerate:
            _regenerate(slots, engine)
        for slot in slots:
            _repair(slot)
        _mark_duplicates(slots)  # on the final, repaired texts
        drafts = _drafts(slots, engine)
        for job in jobs:
            results[job.position] = Written(
                job_id=job.spec.job_id,
                caption=job.caption,
                model_id=engine.captioner.info.model_id,
                model_revision=engine.captioner.info.revision,
                variants=tuple(drafts[job.position]),
            )
    done = [r for r in results if r is not None]
    check_batch("write_batch", len(done), len(specs))
    return done


def _drafts(slots: Sequence[_Slot], engine: Engine) -> dict[int, list[VariantBase]]:
    """Score and assemble every variant; keyed by job position, in slot order."""
    agreement: list[float | None] = [None] * len(slots)
    scorer = engine.scorer
    if scorer is not None and slots:
        cosines = scorer.cosine([s.job.image for s in slots], [s.text for s in slots])
        check_batch(scorer.info.model_id, len(cosines), len(slots))
        agreement = [quality.clip_s(c) for c in cosines]
    out: dict[int, list[VariantBase]] = {}
    for slot, image_text in zip(slots, agreement, strict=True):
        out.setdefault(slot.job.position, []).append(_draft(slot, engine, image_text))
    return out


def _draft(slot: _Slot, engine: Engine, image_text: float | None) -> VariantBase:
    spec = slot.job.spec
    compliance = 0.0 if slot.breaches else (0.5 if slot.repairs else 1.0)
    assessed = quality.assess(
        slot.text,
        compliance=compliance,
        policy=quality.policy_flags(slot.text, banned_terms=spec.banned_terms,
                                    allow_domains=spec.allow_domains,
                                    allow_handles=spec.allow_handles),
        image_text=image_text,
        extra_flags=["near_duplicate"] if slot.duplicate else [],
    )
    approved = assessed.approvable(spec.auto_approve_threshold)
    writer, captioner = engine.writer.info, engine.captioner.info
    provenance: dict[str, Any] = {
        "model_id": writer.model_id,
        "model_revision": writer.revision,
        "model_role": writer.role,
        "caption_model_id": captioner.model_id,
        "caption_model_revision": captioner.revision,
        "prompt_template": slot.style.template_version,
        "style_version": slot.style.version,
        "rules_version": RULES_VERSION,
        "counting": slot.platform.counting,
        "length": rules.measure(slot.text, slot.platform),
        "limit": slot.platform.max_chars,
        "generation": writer.generation,
        "seed": slot.seed,
        "attempts": slot.attempts,
        "regenerated": len(slot.attempts) > 1,
        "repairs": slot.repairs,
    }
    if engine.scorer is not None:
        provenance["clip_model_id"] = engine.scorer.info.model_id
        provenance["clip_model_revision"] = engine.scorer.info.revision
    return VariantBase(
        style=slot.style.name,
        platform=slot.platform.name,
        index=slot.index,
        text=slot.text,
        quality_score=assessed.score,
        quality_parts=assessed.parts,
        flags=assessed.flags,
        review_state=ReviewState.auto_approved if approved else ReviewState.pending_review,
        provenance=provenance,
    )
