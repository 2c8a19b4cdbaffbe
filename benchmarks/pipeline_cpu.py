"""Pipeline vs raw generate: images/s through ``write_batch`` against the same model's
batched ``generate`` making the identical calls on the same inputs, same batch size.

Each batch is two ``generate`` calls in both paths: caption every image (greedy),
then write one variant per image (sampled, the style prefix for a captioner, the
style instruction through the chat template for a chat VLM). Regeneration is off
(``regenerate=False``) so the pipeline makes no extra model call; repairs,
near-duplicate checks and scoring still run. ``min_new_tokens = max_new_tokens``
makes every call generate the same number of tokens in both paths.

Prints ratios; never passes or fails on time.

    .venv/bin/python benchmarks/pipeline_cpu.py [--images 32] [--reps 3] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from schemas.checks import rules
from schemas.platforms import PLATFORMS
from schemas.settings import WorkerSettings
from schemas.styles import STYLES
from worker.models import Engine, load_engine
from worker.models.captioner import HFCaptioner
from worker.models.tiny import build_blip_from_config
from worker.models.vlm import CAPTION_INSTRUCTION, HFChatVLM
from worker.pipeline import JobSpec, write_batch

CONFIGS = Path(__file__).with_name("configs")
STYLE, PLATFORM = "promotional", "instagram"


def load_config(name: str) -> dict[str, Any]:
    return json.loads((CONFIGS / name).read_text())


def make_images(n: int, size: tuple[int, int] = (320, 240)) -> list[Image.Image]:
    gen = torch.Generator().manual_seed(0)
    return [
        Image.fromarray(torch.randint(0, 256, (size[1], size[0], 3), generator=gen,
                                      dtype=torch.uint8).numpy())
        for _ in range(n)
    ]


def equal_work(engine: Engine) -> None:
    """Every generate call runs to max_new_tokens, in both paths."""
    model = engine.captioner
    gen = model.generation  # type: ignore[attr-defined]
    model.generation = replace(gen, min_new_tokens=gen.max_new_tokens)  # type: ignore[attr-defined]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _generate(model: Any, inputs: Any, kwargs: dict[str, Any]) -> torch.Tensor:
    with torch.inference_mode():
        return model.generate(**inputs, **kwargs)


def raw_batch(engine: Engine) -> Callable[[Sequence[Image.Image], int], None]:
    """The same two generate calls per batch, written by hand against the model."""
    model = engine.captioner
    if isinstance(model, HFChatVLM):
        instruction = STYLES[STYLE].instruction(
            platform=PLATFORMS[PLATFORM].label, rules=rules.rules_text(PLATFORMS[PLATFORM]))

        def prompt(text: str) -> str:
            content = [{"type": "image"}, {"type": "text", "text": text}]
            return model.processor.apply_chat_template([{"role": "user", "content": content}],
                                                       add_generation_prompt=True)

        prompts = (prompt(CAPTION_INSTRUCTION), prompt(instruction))

        def vlm(images: Sequence[Image.Image], seed: int) -> None:
            for text, sampled in zip(prompts, (False, True), strict=True):
                inputs = model.processor(text=[text] * len(images),
                                         images=[[im] for im in images],
                                         padding=True, return_tensors="pt").to(model.device)
                inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
                if sampled:
                    torch.manual_seed(seed)
                out = _generate(model.model, inputs, model.generation.kwargs(sampled=sampled))
                model.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:],
                                             skip_special_tokens=True)

        return vlm
    assert isinstance(model, HFCaptioner), type(model)
    prefix = STYLES[STYLE].prefix

    def captioner(images: Sequence[Image.Image], seed: int) -> None:
        for text, sampled in ((None, False), (prefix, True)):
            kwargs: dict[str, Any] = {"images": list(images), "return_tensors": "pt"}
            if text is not None:
                kwargs["text"] = [text] * len(images)
            inputs = model.processor(**kwargs).to(model.device)
            inputs["pixel_values"] = inputs["pixel_values"].to(model.dtype)
            if sampled:
                torch.manual_seed(seed)
            out = _generate(model.model, inputs, model.generation.kwargs(sampled=sampled))
            model.processor.batch_decode(out, skip_special_tokens=True)

    return captioner


def pipeline_batch(engine: Engine) -> Callable[[Sequence[Image.Image], int], None]:
    def run(images: Sequence[Image.Image], seed: int) -> None:
        specs = [JobSpec(f"job-{seed}-{i}", (STYLE,), (PLATFORM,), 1, seed=seed + i)
                 for i in range(len(images))]
        results = write_batch(specs, images, engine=engine, regenerate=False)
        assert all(not isinstance(r, Exception) for r in results), results

    return run


def _timed(fn: Callable[[Sequence[Image.Image], int], None], images: Sequence[Image.Image],
           batch: int, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    for i in range(0, len(images), batch):
        fn(images[i:i + batch], i)
    _sync(device)
    return len(images) / (time.perf_counter() - start)


def compare(engine: Engine, images: Sequence[Image.Image], *, batch_sizes: Sequence[int],
            reps: int) -> list[dict[str, Any]]:
    """Median images/s of both paths per batch size, interleaved rep by rep."""
    equal_work(engine)
    device = engine.captioner.device  # type: ignore[attr-defined]
    raw, pipe = raw_batch(engine), pipeline_batch(engine)
    rows = []
    for batch in batch_sizes:
        raw(images[:batch], 0)  # warm-up at this shape
        pipe(images[:batch], 0)
        raw_ips, pipe_ips = [], []
        for _ in range(reps):
            raw_ips.append(_timed(raw, images, batch, device))
            pipe_ips.append(_timed(pipe, images, batch, device))
        row = {
            "batch_size": batch,
            "images": len(images),
            "raw_images_per_s": round(statistics.median(raw_ips), 3),
            "pipeline_images_per_s": round(statistics.median(pipe_ips), 3),
        }
        row["ratio"] = round(row["pipeline_images_per_s"] / row["raw_images_per_s"], 3)
        rows.append(row)
        print(f"  batch {batch:>3}: raw {row['raw_images_per_s']:8.2f} img/s   "  # noqa: T201
              f"pipeline {row['pipeline_images_per_s']:8.2f} img/s   ratio {row['ratio']:.3f}",
              flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="images per timed rep")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config("blip-cpu-small.json")["config"]
        folder = build_blip_from_config(Path(tmp) / "blip", config)
        engine = load_engine(WorkerSettings(captioner_model=str(folder), model_device="cpu",
                                            model_dtype="float32",
                                            max_new_tokens=args.max_new_tokens))
        print(f"blip-cpu-small on cpu, {torch.get_num_threads()} threads, "  # noqa: T201
              f"max_new_tokens {args.max_new_tokens}, median of {args.reps}")
        rows = compare(engine, make_images(args.images), batch_sizes=args.batch_sizes,
                       reps=args.reps)
    if args.out:
        args.out.write_text(json.dumps({"device": "cpu", "model": "blip-cpu-small",
                                        "threads": torch.get_num_threads(),
                                        "max_new_tokens": args.max_new_tokens,
                                        "results": rows}, indent=2))


if __name__ == "__main__":
    main()
