"""Pipeline vs raw generate on one CUDA GPU, real-size models with random weights.

BLIP-base (Salesforce/blip-image-captioning-base) and SmolVLM-256M
(HuggingFaceTB/SmolVLM-256M-Instruct), built from the published configs copied
into ``benchmarks/configs/``, saved, and loaded through ``load_engine`` as in
production. Per model and batch size (1, 8, 32): median images/s of
``write_batch`` and of the raw batched ``generate`` calls it makes (see
``pipeline_cpu.py`` for what "the same calls" means), and their ratio. No
network, no Redis, no database. Results go to ``--out`` as JSON.

    python benchmarks/pipeline_gpu.py --out results.json          # on the GPU, about 6 min
    python benchmarks/pipeline_gpu.py --device cpu --quick --out smoke.json   # smoke test

``--quick`` runs a tiny subset (batch sizes 1 and 2, one rep, 2 images, 4 new
tokens, 2 layers per tower) so that the code path can be checked on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import transformers  # noqa: E402
from pipeline_cpu import compare, load_config, make_images  # noqa: E402

from schemas.settings import WorkerSettings  # noqa: E402
from worker.models import load_engine  # noqa: E402
from worker.models.tiny import build_blip_from_config, build_idefics3_from_config  # noqa: E402


def _shrunk(config: dict[str, Any], layers: int) -> dict[str, Any]:
    return {**config,
            "text_config": {**config["text_config"], "num_hidden_layers": layers},
            "vision_config": {**config["vision_config"], "num_hidden_layers": layers}}


def build(name: str, folder: Path, *, quick: bool) -> Path:
    if name == "blip-base":
        spec = load_config("blip-image-captioning-base.json")
        config = _shrunk(spec["config"], 2) if quick else spec["config"]
        return build_blip_from_config(folder, config)
    spec = load_config("smolvlm-256m-instruct.json")
    config = _shrunk(spec["config"], 2) if quick else spec["config"]
    return build_idefics3_from_config(folder, config, spec["processor"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16",
                                                            "float32"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--models", nargs="+", default=["blip-base", "smolvlm-256m"])
    parser.add_argument("--images", type=int, default=32, help="images per timed rep (BLIP)")
    parser.add_argument("--vlm-images", type=int, default=16,
                        help="images per timed rep for SmolVLM (about 5x slower per image)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=24)
    args = parser.parse_args()
    batch_sizes = [1, 8, 32]
    if args.quick:
        batch_sizes, args.reps, args.images, args.max_new_tokens = [1, 2], 1, 2, 4
        args.vlm_images = 2
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda")
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "quick": args.quick,
        "images_per_rep": {"blip-base": args.images, "smolvlm-256m": args.vlm_images},
        "reps": args.reps,
        "max_new_tokens": args.max_new_tokens,
        "models": {},
    }
    images = make_images(max(args.images, args.vlm_images), size=(640, 480))
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models:
            t0 = time.perf_counter()
            folder = build(name, Path(tmp) / name, quick=args.quick)
            engine = load_engine(WorkerSettings(
                captioner_model=str(folder), model_device=args.device,
                model_dtype=args.dtype, max_new_tokens=args.max_new_tokens))
            dtype = str(engine.captioner.dtype).removeprefix("torch.")  # type: ignore[attr-defined]
            print(f"{name}: built and loaded in {time.perf_counter() - t0:.1f}s, "  # noqa: T201
                  f"{dtype} on {args.device}", flush=True)
            count = args.vlm_images if name.startswith("smolvlm") else args.images
            rows = compare(engine, images[:count], batch_sizes=batch_sizes, reps=args.reps)
            report["models"][name] = {"dtype": dtype, "results": rows}
            del engine
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            args.out.write_text(json.dumps(report, indent=2))
    report["wall_s"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out} in {report['wall_s']}s")  # noqa: T201


if __name__ == "__main__":
    main()
