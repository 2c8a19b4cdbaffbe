"""The whole GPU-worker path against the same model's raw batched ``generate``.

Worker path: N jobs (the same N images, PNG, inline, one promotional Instagram variant
each, a callback endpoint so every result writes its outbox row) are submitted with
their rows and blobs while no worker consumes; the queue's lists are moved aside, one
real GPU worker (``PIPELINE_BATCHES`` threads, ``BATCH_SIZE`` = the batch size, the
model below, real Redis, real database) is started and ready, the lists are moved
back and the clock runs until every job is terminal: claim, blobs, decoding, the
model, rules, policy, scores, the result transaction with its outbox rows, and Celery.

Raw: the same model loaded in a process of its own (as the worker's is: a model in
the benchmark's own process, beside its Redis client and database, ran several times
slower than the same model in the worker), the same images decoded, the same two
``generate`` calls per batch that the pipeline makes (caption, then one variant per
image from the style prefix: ``benchmarks/pipeline_cpu.py``'s ``raw_batch``), at the
same batch size and ``MAX_NEW_TOKENS``. The worker may make a third call for a variant
that breaks its platform's rules (regeneration), which raw never does.

Reps alternate raw and worker; each row is the median of the reps. Nothing passes
or fails on time. On a CPU host the model and everything around it share the cores,
so the ratio has no target there. On a GPU host (redis-server installed; PostgreSQL
for ``--database postgresql``), real-size random-weight models::

    python -m benchmarks.worker_path --device cuda --model blip-image-captioning-base \
        --images 256 --max-new-tokens 24 --out benchmarks/results/worker_path_gpu_blip.json
    python -m benchmarks.worker_path --device cuda --model smolvlm-256m-instruct \
        --images 128 --max-new-tokens 24 --out benchmarks/results/worker_path_gpu_smolvlm.json

    .venv/bin/python -m benchmarks.worker_path --batch-sizes 8 32 --reps 3 \\
        --out benchmarks/results/worker_path_cpu_sqlite.json
    # options: --images 64 --database sqlite|postgresql --model blip-cpu-small|PATH
    #          --max-new-tokens 16 --pipeline-batches 3 --gpu-pool threads|solo
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import torch

from benchmarks.pipeline_cpu import PLATFORM, STYLE, load_config, make_images, raw_batch
from benchmarks.scaling import all_succeeded, hold, release, terminal
from benchmarks.spine_throughput import celery_worker, cpu_s, database, stop, wait_until
from producers.redis_server import RedisServer
from schemas.api import JobRequest
from schemas.names import QUEUE_GPU
from schemas.settings import CoreSettings, WorkerSettings
from schemas.store.sessions import migrate, session_scope
from schemas.store.tenants import ensure_tenant
from worker.models import load_engine
from worker.models.tiny import build_blip_from_config, build_idefics3_from_config

CALLBACK = "http://127.0.0.1:9/captionq-bench"  # an endpoint: outbox rows, never sent


def build(name: str, workdir: Path) -> str:
    """A random-weight model of a config in ``benchmarks/configs`` (BLIP, or SmolVLM's
    Idefics3 with its processor), saved to be loaded as production loads weights."""
    spec = load_config(f"{name}.json")
    if "processor" in spec:
        return str(build_idefics3_from_config(workdir / "model", spec["config"],
                                              spec["processor"]))  # fmt: skip
    return str(build_blip_from_config(workdir / "model", spec["config"]))


def submit(pngs: list[bytes], settings: CoreSettings) -> None:
    from producers.submit import submit_many

    requests = [
        JobRequest(image_base64=base64.b64encode(data).decode(), styles=[STYLE],
                   platforms=[PLATFORM], variants=1, callback_url=CALLBACK, metadata={"i": i})
        for i, data in enumerate(pngs)
    ]  # fmt: skip
    with session_scope(settings.database_url) as session:
        tenant = ensure_tenant(session=session, name="bench")
        for at in range(0, len(requests), 100):
            submit_many(session=session, settings=settings, tenant=tenant,
                        requests=requests[at : at + 100])  # fmt: skip


def worker_rep(pngs: list[bytes], *, env: dict[str, str], settings: CoreSettings,
               workdir: Path, pool: str) -> dict[str, float]:  # fmt: skip
    client = redis.Redis.from_url(settings.redis_url)
    client.flushdb()
    before = terminal(settings.database_url)
    unsuccessful = terminal(settings.database_url, succeeded=False)
    submit(pngs, settings)
    moved = hold(client, QUEUE_GPU)
    worker = celery_worker("worker.app", QUEUE_GPU, env=env, log=workdir / "worker.log",
                           pool=(pool,))  # fmt: skip
    cpu0 = cpu_s(worker.pid)
    started = time.perf_counter()
    release(client, moved)
    n = len(pngs)
    wait_until(lambda: terminal(settings.database_url) - before >= n, what="jobs", timeout_s=1800)
    elapsed = time.perf_counter() - started
    cpu = cpu_s(worker.pid) - cpu0
    stop(worker)
    all_succeeded(settings.database_url, unsuccessful_before=unsuccessful)
    return {"images_per_s": n / elapsed, "worker_cpu_s_per_image": cpu / n}


def raw_rep(raw: Any, images: list[Any], batch: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    for at in range(0, len(images), batch):
        raw(images[at : at + batch], at)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return len(images) / (time.perf_counter() - started)


def raw_alone(model: str, batch: int, args: argparse.Namespace) -> float:
    """Raw ``generate``'s img/s at ``batch``, timed in a fresh process of its own."""
    argv = [sys.executable, "-m", "benchmarks.worker_path", "--raw-only", "--model", model,
            "--batch-sizes", str(batch), "--images", str(args.images),
            "--max-new-tokens", str(args.max_new_tokens), "--device", args.device,
            "--dtype", args.dtype]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, check=True,
                          cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    return float(json.loads(done.stdout.strip().splitlines()[-1])["raw_images_per_s"])


def raw_only(args: argparse.Namespace) -> None:
    """``--raw-only``: load the model, warm it at the shape, time one rep, print it."""
    engine = load_engine(WorkerSettings(captioner_model=args.model, model_device=args.device,
                                        model_dtype=args.dtype,
                                        max_new_tokens=args.max_new_tokens))  # fmt: skip
    raw = raw_batch(engine)
    images = make_images(args.images)
    batch = args.batch_sizes[0]
    raw(images[:batch], 0)  # warm-up at this shape
    device = engine.captioner.device  # type: ignore[attr-defined]
    print(json.dumps({"raw_images_per_s": raw_rep(raw, images, batch, device)}))  # noqa: T201


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--images", type=int, default=64, help="images per rep")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--database", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--model", default="blip-cpu-small",
                        help="a config in benchmarks/configs (random weights), or a model folder")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--pipeline-batches", type=int, default=3)
    parser.add_argument("--gpu-pool", choices=["threads", "solo"], default="threads")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--raw-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.raw_only:
        raw_only(args)
        return {}
    rows: list[dict[str, Any]] = []
    server = RedisServer.start()
    try:
        with tempfile.TemporaryDirectory(prefix="captionq-bench-") as tmp, \
                database(args.database, Path(tmp)) as url:  # fmt: skip
            workdir = Path(tmp)
            migrate(url)
            model = args.model if Path(args.model).is_dir() else build(args.model, workdir)
            images = make_images(args.images)
            pngs = []
            for image in images:
                buffer = io.BytesIO()
                image.save(buffer, format="PNG")
                pngs.append(buffer.getvalue())
            settings = CoreSettings(database_url=url, redis_url=server.url, blob_store="db",
                                    url_allow_cidrs=["127.0.0.0/8"],
                                    url_allowed_ports=["1-65535"])  # fmt: skip
            for batch in args.batch_sizes:
                env = {"DATABASE_URL": url, "REDIS_URL": server.url, "BLOB_STORE": "db",
                       "CAPTIONER_MODEL": model, "MAX_NEW_TOKENS": str(args.max_new_tokens),
                       "MODEL_DEVICE": args.device, "MODEL_DTYPE": args.dtype,
                       "BATCH_SIZE": str(batch), "BATCH_INTERVAL_S": "0.05",
                       "PIPELINE_BATCHES": str(args.pipeline_batches),
                       "URL_ALLOW_CIDRS": '["127.0.0.0/8"]', "URL_ALLOWED_PORTS": '["1-65535"]',
                       "HF_HUB_OFFLINE": "1", "LOG_FORMAT": "text"}  # fmt: skip
                raws, workers = [], []
                for rep in range(args.reps):
                    raws.append(raw_alone(model, batch, args))
                    workers.append(worker_rep(pngs, env=env, settings=settings,
                                              workdir=workdir, pool=args.gpu_pool))  # fmt: skip
                    print(f"batch {batch} rep {rep + 1}: raw {raws[-1]:.2f} img/s, worker "  # noqa: T201
                          f"{workers[-1]['images_per_s']:.2f} img/s", file=sys.stderr)
                row = {
                    "batch_size": batch, "images": args.images,
                    "raw_images_per_s": round(statistics.median(raws), 3),
                    "worker_images_per_s": round(
                        statistics.median(w["images_per_s"] for w in workers), 3),
                    "ratios_per_rep": [round(w["images_per_s"] / r, 3)
                                       for w, r in zip(workers, raws, strict=True)],
                    "worker_cpu_ms_per_image": round(1000 * statistics.median(
                        w["worker_cpu_s_per_image"] for w in workers), 1),
                }  # fmt: skip
                row["ratio"] = round(row["worker_images_per_s"] / row["raw_images_per_s"], 3)
                rows.append(row)
                print(json.dumps(row), flush=True)  # noqa: T201
    finally:
        server.stop()
    result = {
        "machine": f"{os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}, "
                   f"{'CUDA ' + torch.cuda.get_device_name() if args.device == 'cuda' else 'CPU'}",
        "settings": {k: str(v) for k, v in vars(args).items()},
        "results": rows,
    }  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
