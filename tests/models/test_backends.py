"""Each backend end to end: tiny model saved to a folder, loaded through load_engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from PIL import Image

from schemas.checks import rules
from schemas.errors import ErrorCode, PermanentError, TransientError
from schemas.platforms import PLATFORMS
from schemas.settings import WorkerSettings
from worker.errors import OutOfMemoryError
from worker.models import Engine, load_engine
from worker.models.captioner import HFCaptioner
from worker.models.clip import HFClipScorer
from worker.models.device import pick_device, pick_dtype
from worker.models.loading import folder_fingerprint
from worker.models.prefix import PrefixWriter
from worker.models.rewriter import HFRewriter
from worker.models.vlm import HFChatVLM
from worker.pipeline import JobSpec, Written, write_batch

pytestmark = pytest.mark.unit

Settings = WorkerSettings

SPECS = [
    JobSpec("a", ("playful", "luxury"), ("x", "google_headline"), 2, seed=7),
    JobSpec("b", ("minimal",), ("tiktok", "instagram"), 1, brand_voice="calm, warm", seed=1),
    JobSpec("c", ("informative",), ("linkedin",), 1),
]


def _assert_valid(results: list[Written | PermanentError], engine: Engine) -> None:
    assert [r.job_id for r in results if isinstance(r, Written)] == ["a", "b", "c"]
    for result, spec in zip(results, SPECS, strict=True):
        assert isinstance(result, Written)
        assert result.model_id == engine.captioner.info.model_id
        assert str(result.model_revision).startswith("local-")
        assert len(result.variants) == len(spec.styles) * len(spec.platforms) * spec.variants
        for v in result.variants:
            # Compliant, or empty (random weights may write nothing) and flagged.
            assert not rules.check(v.text, PLATFORMS[v.platform]) or "empty" in v.flags
            assert 0.0 <= v.quality_score <= 1.0
            assert v.review_state == "pending_review"  # no threshold: never auto-approved
            p = v.provenance
            assert p["model_id"] == engine.writer.info.model_id
            assert p["model_revision"] == engine.writer.info.revision
            assert p["prompt_template"].startswith(v.style + "@")
            assert p["rules_version"]
            assert "max_new_tokens" in p["generation"]
            assert isinstance(p["seed"], int)


@pytest.mark.parametrize(
    ("name", "captioner_cls", "writer_cls"),
    [
        ("blip", HFCaptioner, PrefixWriter),
        ("git", HFCaptioner, PrefixWriter),
        ("idefics3", HFChatVLM, HFChatVLM),
    ],
)
def test_image_model_backends_write_valid_results(
    settings_for: Callable[..., Settings],
    tiny_models: dict[str, Path],
    images: list[Image.Image],
    name: str,
    captioner_cls: type,
    writer_cls: type,
) -> None:
    engine = load_engine(settings_for(tiny_models[name]))
    assert isinstance(engine.captioner, captioner_cls)
    assert isinstance(engine.writer, writer_cls)
    assert engine.captioner.info.model_id == tiny_models[name].name
    assert engine.captioner.info.source == str(tiny_models[name])
    _assert_valid(write_batch(SPECS, images, engine=engine), engine)


def test_rewriter_backend_writes_from_the_quoted_caption(
    settings_for: Callable[..., Settings],
    tiny_models: dict[str, Path],
    images: list[Image.Image],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = load_engine(settings_for(tiny_models["blip"],
                                      copywriter_model=str(tiny_models["qwen2"])))
    assert isinstance(engine.writer, HFRewriter)
    assert engine.writer.sees_image is False
    seen: list[str] = []
    original = engine.writer.write

    def spy(requests):  # type: ignore[no-untyped-def]
        seen.extend(r.instruction for r in requests)
        return original(requests)

    monkeypatch.setattr(engine.writer, "write", spy)
    results = write_batch(SPECS, images, engine=engine)
    _assert_valid(results, engine)
    caption = results[0].caption  # type: ignore[union-attr]
    assert f'"{caption}"' in seen[0]
    assert results[0].variants[0].provenance["model_role"] == "rewriter"  # type: ignore[union-attr]
    made = results[0].variants[0].provenance  # type: ignore[union-attr]
    assert made["caption_model_id"] == tiny_models["blip"].name
    assert made["caption_model_source"] == str(tiny_models["blip"])


def test_clip_scorer_adds_the_image_text_part(
    settings_for: Callable[..., Settings], tiny_models: dict[str, Path], images: list[Image.Image]
) -> None:
    engine = load_engine(settings_for(tiny_models["blip"], clip_model=str(tiny_models["clip"])))
    assert isinstance(engine.scorer, HFClipScorer)
    cos = engine.scorer.cosine(images[:2], ["a red dog", "green grass"])
    assert len(cos) == 2
    assert all(-1.0 <= c <= 1.0 for c in cos)
    results = write_batch(SPECS[:1], images[:1], engine=engine)
    variant = results[0].variants[0]  # type: ignore[union-attr]
    assert 0.0 <= variant.quality_parts["image_text"] <= 1.0
    assert variant.provenance["clip_model_id"] == tiny_models["clip"].name


def test_same_inputs_and_seeds_write_the_same_texts(
    settings_for: Callable[..., Settings], tiny_models: dict[str, Path], images: list[Image.Image]
) -> None:
    engine = load_engine(settings_for(tiny_models["idefics3"]))
    first = write_batch(SPECS, images, engine=engine)
    second = write_batch(SPECS, images, engine=engine)
    assert [[v.text for v in r.variants] for r in first] == [  # type: ignore[union-attr]
        [v.text for v in r.variants] for r in second  # type: ignore[union-attr]
    ]


class _OutOfMemoryOnForward(torch.nn.Module):
    """Wraps a submodule; its forward raises as CUDA does when memory runs out."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


def test_forward_out_of_memory_becomes_transient_out_of_memory(
    settings_for: Callable[..., Settings],
    tiny_models: dict[str, Path],
    images: list[Image.Image],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = load_engine(settings_for(tiny_models["blip"]))
    model = engine.captioner.model  # type: ignore[attr-defined]
    monkeypatch.setattr(model, "vision_model", _OutOfMemoryOnForward(model.vision_model))
    with pytest.raises(OutOfMemoryError) as caught:
        write_batch(SPECS, images, engine=engine)
    assert isinstance(caught.value, TransientError)
    assert caught.value.code == ErrorCode.out_of_memory
    assert isinstance(caught.value.__cause__, torch.OutOfMemoryError)


def test_offline_mode_never_reaches_for_the_network(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    attempts: list[object] = []

    def connect(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError("network is off in this test")

    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(socket.socket, "connect", connect)
    with pytest.raises(OSError, match="cached files"):
        HFCaptioner("captionq-test/not-in-any-cache", offline=True, device="cpu")
    assert attempts == []


def test_device_and_dtype_choice() -> None:
    cpu = torch.device("cpu")
    assert pick_device("cpu") == cpu
    assert pick_dtype("auto", cpu) is torch.float32
    assert pick_dtype("bfloat16", cpu) is torch.bfloat16
    if not torch.cuda.is_available():
        assert pick_device("auto") == cpu


def test_local_revision_fingerprint_follows_the_weights(tmp_path: Path) -> None:
    from worker.models.tiny import build_tiny_blip

    one = build_tiny_blip(tmp_path / "one", seed=0)
    two = build_tiny_blip(tmp_path / "two", seed=1)
    assert folder_fingerprint(one) == folder_fingerprint(one)
    assert folder_fingerprint(one) != folder_fingerprint(two)


def test_noop_engine_needs_no_weights(images: list[Image.Image]) -> None:
    engine = load_engine(WorkerSettings(captioner_model="captionq/noop"))
    results = write_batch(SPECS, images, engine=engine)
    assert all(isinstance(r, Written) for r in results)
    assert results[0].caption == "an image of 48x32 pixels"  # type: ignore[union-attr]
