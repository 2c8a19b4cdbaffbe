"""Served models against in-process ones, on one host, in one run.

1. Per-image overhead: the same tiny random Idefics3 folder captions and writes two
   variants per image (``write_batch``: one caption + two variant requests per image)
   in-process (one batched ``generate`` per stage) and through ``transformers serve``
   (one request per image or variant). Reps alternate the two; medians of ``--reps``.
2. Throughput of one worker process as requests in flight grow (1, 4, 16): the
   served text copywriter (tiny Qwen2) against ``transformers serve
   --continuous-batching``, and the served VLM against ``transformers serve`` without
   it (transformers 5.24 falls back to one request at a time for vision models).
3. Through the worker's batch path: ``--pipeline-batches`` batch threads (1, then 3)
   of one worker process (claim, blobs, pipeline, result transaction on SQLite), captions
   in the process and variants from the served copywriter, as ``SERVED_MAX_IN_FLIGHT``
   grows (1, 4, 16): jobs/s.
4. The quality score's CLIP, in the worker's process on the CPU: ms per image of a
   tiny CLIP and of a random-weight CLIP ViT-B/32 (the default ``CLIPConfig``: the
   size of openai/clip-vit-base-patch32).

No network: every model is built from a config and saved to a temporary folder.
``--only SECTION`` runs one section and keeps the others' figures in ``--out``.

    .venv/bin/python benchmarks/served.py --out benchmarks/results/served_cpu.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
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


def through_worker(root: Path, logs: Path, jobs: int, batches: int, reps: int,
                   threads: int) -> dict[str, Any]:  # fmt: skip
    """One worker process's batch path (``worker.batch.process``: claim, blobs, pipeline,
    result transaction on SQLite) with ``batches`` batch threads sharing one device
    turn, as the pipelined worker runs them; captions in the process (the no-op
    model), variants from the served copywriter (tiny Qwen2, ``--continuous-batching``),
    ``SERVED_MAX_IN_FLIGHT`` 1, 4 and 16. Jobs of two variants each, in batches of 4."""
    from schemas.store.blobs import put_blob
    from schemas.store.sessions import migrate, session_scope
    from schemas.store.tenants import create_tenant
    from schemas.tables import Job
    from worker import batch

    folder = root / "tiny-qwen2-worker"
    if not folder.exists():
        tiny.build_tiny_qwen2(folder)
    server = ModelServer(folder, logs, continuous_batching=True, threads=threads).start()
    url = f"sqlite:///{root / f'worker-{batches}.db'}"
    migrate(url)
    out: dict[str, Any] = {"jobs": jobs, "variants_per_job": 2, "batch_size": 4,
                           "pipeline_batches": batches}  # fmt: skip
    try:
        for bound in (1, 4, 16):
            settings = WorkerSettings(
                database_url=url, blob_store="db", captioner_model="captionq/noop",
                copywriter_backend="served", copywriter_base_url=server.base_url,
                copywriter_model=folder.name, copy_max_new_tokens=8,
                served_max_in_flight=bound, job_lease_s=600,
            )  # fmt: skip
            engine = load_engine(settings)
            times = []
            for rep in range(reps):
                with session_scope(url) as session:
                    tenant = create_tenant(session=session, name=f"bench-{bound}-{rep}")
                    digest = put_blob(session=session, store="db", data=_png(rep))
                    rows = [Job(tenant_id=tenant.id, image_sha256=digest, styles=["minimal"],
                                platforms=["x"], variants=2, request_hash=f"{bound}-{rep}-{i}",
                                status="queued") for i in range(jobs)]  # fmt: skip
                    session.add_all(rows)
                    session.flush()
                    ids = [row.id for row in rows]
                chunks = [ids[i : i + 4] for i in range(0, len(ids), 4)]
                gpu = threading.Lock()

                def work(mine: list[list[str]], e: Any = engine, s: Any = settings,
                         g: threading.Lock = gpu) -> None:  # fmt: skip
                    for chunk in mine:
                        assert batch.process(chunk, settings=s, engine=e, gpu=g).succeeded
                started = time.perf_counter()
                pool = [threading.Thread(target=work, args=(chunks[t::batches],))
                        for t in range(batches)]  # fmt: skip
                for thread in pool:
                    thread.start()
                for thread in pool:
                    thread.join()
                times.append(time.perf_counter() - started)
            engine.writer.close()  # type: ignore[attr-defined]
            median = statistics.median(times)
            out[str(bound)] = {"reps_s": times, "jobs_per_s": jobs / median,
                               "variant_requests_per_s": 2 * jobs / median}  # fmt: skip
    finally:
        server.stop()
    return out


def _png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (48, 32), (seed * 40 % 255, 120, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


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
    parser.add_argument("--worker-jobs", type=int, default=48)
    parser.add_argument("--pipeline-batches", type=int, nargs="+", default=[1, 3])
    parser.add_argument("--only", choices=["overhead", "in_flight", "through_worker", "clip"])
    args = parser.parse_args()
    threads = torch.get_num_threads()
    report: dict[str, Any] = {
        "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}",
        "torch": torch.__version__, "transformers": transformers.__version__,
        "torch_threads": threads,
    }  # fmt: skip
    if args.only and args.out.exists():  # one section again: keep the others' figures
        report = {**json.loads(args.out.read_text()), **report}
    with tempfile.TemporaryDirectory() as tmp:
        root, logs = Path(tmp) / "models", Path(tmp) / "logs"
        root.mkdir()
        logs.mkdir()
        sections: dict[str, Callable[[], Any]] = {
            "overhead": lambda: overhead(root, logs, args.images, args.reps, threads),
            "in_flight": lambda: [in_flight(root, logs, role, args.requests, args.reps, threads)
                                  for role in ("copywriter", "vlm")],
            "through_worker": lambda: [through_worker(root, logs, args.worker_jobs, n,
                                                      args.reps, threads)
                                       for n in args.pipeline_batches],
            "clip": lambda: clip_cost(root, 16, args.reps),
        }  # fmt: skip
        for name, run in sections.items():
            if args.only in (None, name):
                report[name] = run()
                print(name, json.dumps(report[name]), flush=True)  # noqa: T201
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
