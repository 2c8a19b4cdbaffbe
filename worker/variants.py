"""Variant slots: one per style × platform × variant of a job, drafted, checked and
mended in batches. Pure: no Celery, no database.

The pipeline (``worker.pipeline``) makes the slots of a batch's jobs, then::

    write every slot (one writer call; platform rules checked on each text)
    → mark near-duplicates → regenerate the offenders with the breach stated
    (one call) → repair what still breaks → near-duplicates again, on the final texts

Each slot keeps its history (seed, breaches, near-duplicate, per attempt) and its
repairs, for the variant's provenance.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from schemas.checks import rules
from schemas.errors import CaptionError
from schemas.platforms import RULES_VERSION, Platform
from schemas.styles import Style
from schemas.tables import QUALITY_SCORE_VERSION
from worker.models import Engine, WriteRequest
from worker.models.base import check_batch

REGENERATE_SEED_STEP = 1_000_003
DUPLICATE_HINT = "it repeated another variant almost word for word; write a different one"


@dataclass
class Slot:
    job: int  # the job's position in its batch: near-duplicates are looked for per job
    image: Image.Image
    caption: str
    brand_voice: str | None
    style: Style
    platform: Platform
    index: int
    seed: int
    text: str = ""
    breaches: list[rules.Breach] = field(default_factory=list)
    duplicate: bool = False
    attempts: list[dict[str, Any]] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)
    error: CaptionError | None = None  # the writer failed this slot alone (served models)
    mode: str | None = None  # how a served writer was asked for the text (models.Drafted)


def _request(slot: Slot, engine: Engine, hint: str | None) -> WriteRequest:
    instruction = slot.style.instruction(
        platform=slot.platform.label,
        rules=rules.rules_text(slot.platform),
        caption=None if engine.writer.sees_image else slot.caption,
        brand_voice=slot.brand_voice,
        hint=hint,
    )
    return WriteRequest(slot.image, slot.caption, instruction, slot.style.prefix, slot.seed,
                        job=slot.job)


def write(
    slots: Sequence[Slot], engine: Engine, hints: Sequence[str | None] | None = None
) -> None:
    """One batched writer call for ``slots``; each text and its platform-rule breaches
    land on its slot."""
    hints = hints if hints is not None else [None] * len(slots)
    requests = [_request(s, engine, h) for s, h in zip(slots, hints, strict=True)]
    with engine.turn_of(engine.writer):
        texts = engine.writer.write(requests)
    check_batch(f"{engine.writer.info.model_id} write", len(texts), len(slots))
    for slot, text in zip(slots, texts, strict=True):
        if isinstance(text, CaptionError):
            slot.error, slot.text, slot.breaches = text, "", []
            continue
        slot.mode = getattr(text, "mode", None)
        slot.text = rules.clean_generated(text)
        slot.breaches = rules.check(text, slot.platform)


def mark_duplicates(slots: Sequence[Slot]) -> None:
    """Within each job, in slot order: a variant that is nearly the same text as an
    earlier kept variant is a near-duplicate."""
    kept: dict[int, list[str]] = {}
    for slot in slots:
        normal = rules.normalise(slot.text)
        earlier = kept.setdefault(slot.job, [])
        slot.duplicate = any(
            rules.similarity(normal, other) >= rules.SIMILAR_THRESHOLD for other in earlier
        )
        if not slot.duplicate:
            earlier.append(normal)


def record(slots: Sequence[Slot]) -> None:
    """Add this attempt (seed, breaches, near-duplicate) to each slot's history."""
    for slot in slots:
        slot.attempts.append({
            "seed": slot.seed,
            "breaches": [b.rule for b in slot.breaches],
            "near_duplicate": slot.duplicate,
            **({"served_mode": slot.mode} if slot.mode is not None else {}),
        })


def regenerate(slots: Sequence[Slot], engine: Engine) -> None:
    """Write once more, with a new seed and the breach stated, every variant that broke
    a platform rule or duplicated another."""
    redo = [s for s in slots if s.breaches or s.duplicate]
    if not redo:
        return
    hints = ["; ".join([*(b.detail for b in s.breaches), *([DUPLICATE_HINT] * s.duplicate)])
             for s in redo]
    for slot in redo:
        slot.seed += REGENERATE_SEED_STEP
    write(redo, engine, hints)
    mark_duplicates(slots)
    record(redo)


def repair(slots: Sequence[Slot]) -> None:
    """Mend by rule (cut at a word, strip emoji or hashtags) what still breaks a rule."""
    for slot in slots:
        if slot.breaches and slot.text.strip():
            slot.text, slot.repairs = rules.repair(slot.text, slot.platform)
            slot.breaches = rules.check(slot.text, slot.platform)


def provenance(slot: Slot, engine: Engine) -> dict[str, Any]:
    """How the slot's text was made: the models, prompt, rules and its attempts."""
    writer, captioner = engine.writer.info, engine.captioner.info
    made: dict[str, Any] = {
        "model_id": writer.model_id,
        "model_revision": writer.revision,
        "model_role": writer.role,
        "model_source": writer.source or writer.model_id,
        "caption_model_id": captioner.model_id,
        "caption_model_revision": captioner.revision,
        "caption_model_source": captioner.source or captioner.model_id,
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
    if slot.mode is not None:
        made["served_mode"] = slot.mode  # list, or per_variant (worker/models/served.py)
    made["quality_score_version"] = QUALITY_SCORE_VERSION
    if engine.scorer is not None:
        made["clip_model_id"] = engine.scorer.info.model_id
        made["clip_model_revision"] = engine.scorer.info.revision
    return made
