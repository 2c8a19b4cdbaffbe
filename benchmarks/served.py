"""Served models against in-process ones, on one host, in one run.

1. Per-image overhead: the same tiny random Idefics3 folder captions and writes two
   variants per image (``write_batch``: one caption + two variant requests per image)
   in-process (one batched ``generate`` per stage) and through ``transformers serve``
   (one request per image or variant). Reps alternate the two; medians of ``--reps``.
2. Throughput of one worker process as requests in flight grow (1, 4, 16): the
   served text copywriter (tiny Qwen2) against ``transformers serve
   --continuous-batching``, and the served VLM against ``transformers serve`` without
   it (transformers 5.24 falls back to one request at a time for vision models).
3. The quality score's CLIP, in the worker's process on the CPU: ms per image of a
   tiny CLIP and of a random-weight CLIP ViT-B/32 (the default ``CLIPConfig``: the
   size of openai/clip-vit-base-patch32).

No network: every model is built from a config and saved to a temporary folder.

    .venv/bin/python benchmarks/served.py --out benchmarks/results/served_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import CLIPConfig, CLIPModel, CLIPProcessor  # noqa: E402

from schemas.settings import WorkerSettings  # noqa: E402
from tests.support.model_servers import ModelServer  # noqa: E402
from worker.models import WriteRequest, load_engine, tiny  # noqa: E402
from worker.models.clip import HFClipScorer  # noqa: E402
from worker.pipeline import JobSpec, write_batch  # noqa: E402


def images(n: int) -> list[Image.Image]:
    return [Image.new("RGB", (64 + 8 * i, 48), (30 * i % 255, 90, 160)) for i in range(n)]


def timed(run: Callable[[], object]) -> float:
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def overhead(root: Path, logs: Path, n_images: int, reps: int, threads: int) -> dict[str, Any]:
    folder = tiny.build_tiny_idefics3(root / "tiny-idefics3")
    server = ModelServer(folder, logs, threads=threads).start()
    try:
        common = {"captioner_model": str(folder), "max_new_tokens": 8, "model_device": "cpu"}
        inprocess = load_engine(WorkerSettings(**common))
        served = load_engine(WorkerSettings(
            **common, captioner_backend="served", captioner_base_url=server.base_url,
            captioner_served_model=folder.name, served_max_in_flight=16,
        ))  # fmt: skip
        specs = [JobSpec(job_id=str(i), styles=("minimal",), platforms=("x",), variants=2)
                 for i in range(n_images)]
        batch = images(n_images)
        rows: dict[str, list[float]] = {"inprocess": [], "served": []}
        for _ in range(reps):
            for name, engine in (("inprocess", inprocess), ("served", served)):
                rows[name].append(timed(lambda e=engine: write_batch(specs, batch, engine=e,
                                                                     regenerate=False)))
    finally:
        server.stop()
    median = {k: statistics.median(v) for k, v in rows.items()}
    per_image = {k: 1000 * v / n_images for k, v in median.items()}
    return {
        "images": n_images, "requests_per_image": 3, "reps_s": rows,
        "ms_per_image": per_image,
        "overhead_ms_per_image": per_image["served"] - per_image["inprocess"],
        "ratio_served_to_inprocess": median["served"] / median["inprocess"],
    }  # fmt: skip


def in_flight(root: Path, logs: Path, role: str, requests: int, reps: int,
              threads: int) -> dict[str, Any]:  # fmt: skip
    text = role == "copywriter"
    folder = (tiny.build_tiny_qwen2(root / "tiny-qwen2") if text
              else tiny.build_tiny_idefics3(root / "tiny-idefics3-cb"))
    server = ModelServer(folder, logs, continuous_batching=text, threads=threads).start()
    picture = images(1)[0]
    work = [WriteRequest(picture, "a red cup", f"Write a short line about a red cup ({i}).",
                         "", i) for i in range(requests)]
    out: dict[str, Any] = {"role": role, "continuous_batching": text, "requests": requests}
    try:
        for bound in (1, 4, 16):
            role_settings = (
                {"copywriter_backend": "served", "copywriter_base_url": server.base_url,
                 "copywriter_model": folder.name, "captioner_model": "captionq/noop"}
                if text else
                {"captioner_backend": "served", "captioner_base_url": server.base_url,
                 "captioner_model": folder.name}
            )  # fmt: skip
            writer = load_engine(WorkerSettings(
                max_new_tokens=8, copy_max_new_tokens=8, served_max_in_flight=bound,
                **role_settings,
            )).writer  # fmt: skip
            times = [timed(lambda w=writer: w.write(work)) for _ in range(reps)]
            out[str(bound)] = {"reps_s": times,
                               "requests_per_s": requests / statistics.median(times)}
    finally:
        server.stop()
    return out


def clip_cost(root: Path, n_images: int, reps: int) -> dict[str, Any]:
    """ms per image of the CLIP part, batched as the pipeline calls it (one call per batch)."""
    sized = root / "clip-vit-b32-random"
    sized.mkdir()
    tokenizer = tiny.word_tokenizer(["<unk>", "<|startoftext|>", "<|endoftext|>"],
                                    vocab_size=49408, bos_token="<|startoftext|>",
                                    eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    config = CLIPConfig()
    config.text_config.update({"eos_token_id": tokenizer.eos_token_id,
                               "bos_token_id": tokenizer.bos_token_id,
                               "pad_token_id": tokenizer.pad_token_id})
    torch.manual_seed(0)
    CLIPModel(config).save_pretrained(sized)
    processor = CLIPProcessor(image_processor=tiny._clip_images(224), tokenizer=tokenizer)
    processor.save_pretrained(sized)
    out: dict[str, Any] = {"images": n_images, "torch_threads": torch.get_num_threads()}
    batch = images(n_images)
    texts = [f"a bright new cup of coffee number {i}" for i in range(n_images)]
    for name, folder in (("tiny", tiny.build_tiny_clip(root / "clip-tiny")),
                         ("vit-b32-size", sized)):
        scorer = HFClipScorer(str(folder), device="cpu")
        scorer.clip_s(batch[:2], texts[:2])  # warm
        times = [timed(lambda s=scorer: s.clip_s(batch, texts)) for _ in range(reps)]
        out[name] = {"reps_s": times, "ms_per_image": 1000 * statistics.median(times) / n_images}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    report: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "torch_threads": threads,
    }  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root, logs = Path(tmp) / "models", Path(tmp) / "logs"
        root.mkdir()
        logs.mkdir()
        report["overhead"] = overhead(root, logs, args.images, args.reps, threads)
        print(json.dumps(report["overhead"]["ms_per_image"]), flush=True)  # noqa: T201
        report["in_flight"] = [in_flight(root, logs, role, args.requests, args.reps, threads)
                               for role in ("copywriter", "vlm")]
        print(json.dumps(report["in_flight"]), flush=True)  # noqa: T201
        report["clip"] = clip_cost(root, 16, args.reps)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
