"""The pipeline: a batch of jobs' image bytes in; each job's caption and scored ad-copy
variants, or the error that failed that job alone, out. Pure: no Celery, no database.

The hot path, one batched model call per stage::

    decode each image → check each job → caption all images (one call)
    → write every variant slot (one call; platform rules checked on each text)
    → mark near-duplicates → regenerate the offenders (one call) → repair what
    still breaks → copy policy + quality score (one CLIP call when configured)
    → assemble one Written per job

:func:`run` is the whole path; :func:`write_batch` is the path from decoded images
on (benchmarks call it directly), in two parts: :func:`draft` makes every model call
and :func:`finish` checks and scores what they wrote, with no model call, so that a
pipelined worker holds the GPU for :func:`draft` only. What comes back is one entry
per item, in order: a :class:`Written`, or the :class:`CaptionError` that failed that
job alone (an image that cannot be decoded, a job the catalogue refuses, a served
model's request for its caption or one of its variants that failed: the model returns
that error in the item's place, and the job's other slots are not written further).
An accelerator out of memory (``OutOfMemoryError``, transient) splits the batch and
retries the halves, down to a single item; any other exception of a model fails the
batch's jobs with ``model_error``, never the worker. The variant slots are ``worker.variants``; the
quality score is ``worker.quality``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from schemas.api import VariantBase, catalogue_problem
from schemas.checks import rules
from schemas.checks.policy import clean_brand_voice
from schemas.errors import CaptionError, ErrorCode, ImageError, PermanentError
from schemas.platforms import PLATFORMS
from schemas.styles import STYLES
from schemas.tables import ReviewState
from worker import quality, variants
from worker.errors import OutOfMemoryError
from worker.models import Engine
from worker.models.base import check_batch
from worker.variants import Slot


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
class Item:
    spec: JobSpec
    data: bytes | CaptionError  # the image bytes, or why they could not be had


@dataclass(frozen=True)
class Written:
    job_id: str
    caption: str
    model_id: str
    model_revision: str | None
    variants: tuple[VariantBase, ...]


Outcome = Written | CaptionError
Decoder = Callable[[bytes], Image.Image]


class Turns(Protocol):
    """A batch's model calls on a shared device (``worker.batch``): entered around
    them, called for each one's context, given whether that model is in the process."""

    def __enter__(self) -> object: ...

    def __exit__(self, *exc: object) -> None: ...

    def __call__(self, on_device: bool) -> AbstractContextManager[object]: ...


def run(
    items: Sequence[Item],
    *,
    engine: Engine,
    decode: Decoder,
    turns: Turns | None = None,
) -> list[Outcome]:
    """Decode each item's image, then write the batch of those that decoded.

    ``turns``, when given, is entered around the model calls (:func:`draft`) and gives
    each call its context (``Engine.turn_of``): in a pipelined worker the batch holds
    the device for its in-process calls, so that decoding comes before and the copy
    checks and scores (:func:`finish`) after, while another batch uses the model."""
    outcomes: list[Outcome | None] = [None] * len(items)
    ready: list[int] = []
    images: list[Image.Image] = []
    for i, item in enumerate(items):
        if isinstance(item.data, CaptionError):
            outcomes[i] = item.data
            continue
        try:
            images.append(decode(item.data))
        except CaptionError as exc:
            outcomes[i] = exc
            continue
        ready.append(i)
    specs = tuple(items[i].spec for i in ready)
    with turns if turns is not None else nullcontext():
        drafting = engine.taking_turns(turns) if turns is not None else engine
        parts = _draft_split(specs, tuple(images), drafting)
    written = _finish_parts(parts, engine)
    check_batch("write_batch", len(written), len(specs))
    for i, outcome in zip(ready, written, strict=True):
        outcomes[i] = outcome
    assert all(o is not None for o in outcomes)
    return outcomes  # type: ignore[return-value]


def _draft_split(
    specs: tuple[JobSpec, ...], images: tuple[Image.Image, ...], engine: Engine
) -> list[Draft | list[Outcome]]:
    """:func:`draft`, halving the batch on out-of-memory down to a single item: drafted
    stretches of the batch, or the errors that failed a stretch."""
    if not specs:
        return []
    try:
        return [draft(specs, images, engine=engine)]
    except OutOfMemoryError as exc:
        if len(specs) == 1:
            return [[exc]]
        half = len(specs) // 2
        return _draft_split(specs[:half], images[:half], engine) + _draft_split(
            specs[half:], images[half:], engine
        )
    except Exception as exc:
        return [_failed(exc, len(specs))]


def _finish_parts(parts: list[Draft | list[Outcome]], engine: Engine) -> list[Outcome]:
    out: list[Outcome] = []
    for part in parts:
        if not isinstance(part, Draft):
            out += part
            continue
        try:
            out += finish(part, engine=engine)
        except Exception as exc:
            out += _failed(exc, len(part.results))
    return out


def _failed(exc: Exception, n: int) -> list[Outcome]:
    """``n`` jobs failed by ``exc``: a caption error as it is; any other exception is a
    model bug, which must fail these jobs with ``model_error``, not the worker."""
    if isinstance(exc, CaptionError):
        return [exc] * n
    error = PermanentError(f"{type(exc).__name__}: {exc}", code=ErrorCode.model_error)
    error.__cause__ = exc
    return [error] * n


@dataclass
class _Job:
    """A job that passed its checks: its RGB image, its cleaned brand voice, and its
    caption once written."""

    position: int
    spec: JobSpec
    image: Image.Image
    brand_voice: str | None
    caption: str = ""
    error: CaptionError | None = None  # its caption or a variant failed on its own


@dataclass
class Draft:
    """A batch after its model calls: the errors of the jobs that failed their checks,
    and the variant slots (final texts) of the others, with their image-text agreement."""

    results: list[Outcome | None]
    jobs: list[_Job]
    slots: list[Slot]
    agreement: list[float | None]


def write_batch(
    specs: Sequence[JobSpec],
    images: Sequence[Image.Image],
    *,
    engine: Engine,
    regenerate: bool = True,
) -> list[Outcome]:
    """Caption every image in one call, then every variant slot in one call, then
    check and score every variant: :func:`finish` of :func:`draft`.

    ``regenerate=False`` skips the second writer call for breaching or duplicate
    variants (they are repaired or flagged directly): benchmarks use it to make
    exactly the model calls a raw ``generate`` loop makes.
    """
    return finish(draft(specs, images, engine=engine, regenerate=regenerate), engine=engine)


def draft(
    specs: Sequence[JobSpec],
    images: Sequence[Image.Image],
    *,
    engine: Engine,
    regenerate: bool = True,
) -> Draft:
    """Every model call of a batch: captions, variants, regenerations, CLIP scores."""
    check_batch("write_batch images", len(images), len(specs))
    results: list[Outcome | None] = [None] * len(specs)
    jobs: list[_Job] = []
    for position, (spec, image) in enumerate(zip(specs, images, strict=True)):
        try:
            jobs.append(_checked(position, spec, image))
        except PermanentError as exc:
            results[position] = exc
    slots: list[Slot] = []
    if jobs:
        _caption(jobs, engine)
        jobs, _ = _without_failed(jobs, [], results)
        slots = [slot for job in jobs for slot in _slots(job)]
        variants.write(slots, engine)
        jobs, slots = _without_failed(jobs, slots, results)
        variants.mark_duplicates(slots)
        variants.record(slots)
        if regenerate:
            variants.regenerate(slots, engine)
            jobs, slots = _without_failed(jobs, slots, results)
        variants.repair(slots)
        variants.mark_duplicates(slots)  # on the final, repaired texts
    return Draft(results, jobs, slots, _agreement(slots, engine))


def finish(drafted: Draft, *, engine: Engine) -> list[Outcome]:
    """No model call: copy policy and quality of each variant, one result per job."""
    results = list(drafted.results)
    if drafted.jobs:
        scored = _score(drafted, {job.position: job.spec for job in drafted.jobs}, engine)
        for job in drafted.jobs:
            results[job.position] = Written(
                job_id=job.spec.job_id,
                caption=job.caption,
                model_id=engine.captioner.info.model_id,
                model_revision=engine.captioner.info.revision,
                variants=tuple(scored[job.position]),
            )
    done = [r for r in results if r is not None]
    check_batch("write_batch", len(done), len(results))
    return done


def _checked(position: int, spec: JobSpec, image: object) -> _Job:
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


def _caption(jobs: Sequence[_Job], engine: Engine) -> None:
    with engine.turn_of(engine.captioner):
        captions = engine.captioner.caption([job.image for job in jobs])
    check_batch(engine.captioner.info.model_id, len(captions), len(jobs))
    for job, caption in zip(jobs, captions, strict=True):
        if isinstance(caption, CaptionError):
            job.error = caption
        else:
            job.caption = rules.clean_generated(caption)


def _without_failed(
    jobs: list[_Job], slots: list[Slot], results: list[Outcome | None]
) -> tuple[list[_Job], list[Slot]]:
    """Fail each job whose caption or a variant failed on its own (a served model's
    request) with that error; the other jobs and their slots go on."""
    by_position = {job.position: job for job in jobs}
    for slot in slots:
        job = by_position[slot.job]
        if slot.error is not None and job.error is None:
            job.error = slot.error
    for job in jobs:
        if job.error is not None:
            results[job.position] = job.error
    kept = [job for job in jobs if job.error is None]
    alive = {job.position for job in kept}
    return kept, [slot for slot in slots if slot.job in alive]


def _slots(job: _Job) -> list[Slot]:
    spec = job.spec
    combos = [(s, p, i) for s in spec.styles for p in spec.platforms for i in range(spec.variants)]
    return [
        Slot(job.position, job.image, job.caption, job.brand_voice, STYLES[s], PLATFORMS[p], i,
             spec.seed + n)
        for n, (s, p, i) in enumerate(combos)
    ]


def _agreement(slots: Sequence[Slot], engine: Engine) -> list[float | None]:
    """Image-text agreement of every variant (one CLIP call for the batch when a
    scorer is configured), else None each."""
    scorer = engine.scorer
    if scorer is None or not slots:
        return [None] * len(slots)
    with engine.turn_of(scorer):
        scores = scorer.clip_s([s.image for s in slots], [s.text for s in slots])
    check_batch(scorer.info.model_id, len(scores), len(slots))
    return [quality.image_text(s) for s in scores]


def _score(
    drafted: Draft, specs: dict[int, JobSpec], engine: Engine
) -> dict[int, list[VariantBase]]:
    """Copy policy and quality of every variant; keyed by job position, in slot order."""
    out: dict[int, list[VariantBase]] = {}
    for slot, image_text in zip(drafted.slots, drafted.agreement, strict=True):
        out.setdefault(slot.job, []).append(_variant(slot, specs[slot.job], engine, image_text))
    return out


def _variant(
    slot: Slot, spec: JobSpec, engine: Engine, image_text: float | None
) -> VariantBase:
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
    return VariantBase(
        style=slot.style.name,
        platform=slot.platform.name,
        index=slot.index,
        text=slot.text,
        quality_score=assessed.score,
        quality_parts=assessed.parts,
        flags=assessed.flags,
        review_state=ReviewState.auto_approved if approved else ReviewState.pending_review,
        provenance=variants.provenance(slot, engine),
    )
