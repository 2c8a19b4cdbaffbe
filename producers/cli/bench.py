"""``captionq bench-batch``: the batch size for ``BATCH_SIZE``, found on this host's GPU.

It loads the configured models (``CAPTIONER_MODEL``, ``MAX_NEW_TOKENS``, ...) as a GPU
worker does, finds the largest batch of jobs (``--styles`` x ``--platforms`` x
``--variants`` each) whose peak memory stays within ``--headroom`` of what the process
can have, and prints images/s per batch size tried (``worker.batchsize``). Without
CUDA it is refused with ``accelerator_missing`` (exit 1). The worker is imported
inside the command only.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from producers.cli.output import console
from schemas.api import MAX_VARIANTS
from schemas.platforms import PLATFORMS
from schemas.styles import STYLES


def bench_batch(
    max_batch: Annotated[int, typer.Option(min=1, max=1024, help="Largest batch to try")] = 256,
    headroom: Annotated[
        float,
        typer.Option(min=0.05, max=1.0, help="Share of the GPU memory free to it a batch may use"),
    ] = 0.9,
    styles: Annotated[
        int, typer.Option(min=1, max=len(STYLES), help="Styles of each image's job")
    ] = 1,
    platforms: Annotated[
        int, typer.Option(min=1, max=len(PLATFORMS), help="Platforms of each image's job")
    ] = 1,
    variants: Annotated[
        int, typer.Option(min=1, max=MAX_VARIANTS, help="Variants per style and platform")
    ] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Find the largest batch that fits this GPU for the configured model and say images/s
    per batch size: set BATCH_SIZE from it."""
    from schemas.settings import worker_settings
    from worker.batchsize import measure

    found = measure(worker_settings(), max_batch=max_batch, headroom=headroom, styles=styles,
                    platforms=platforms, variants=variants)  # fmt: skip
    if as_json:
        console.print_json(json.dumps(found.as_dict()))
        return
    gib = 1024**3
    console.print(f"GPU memory this process can have {found.total_bytes / gib:.1f} GiB, "
                  f"headroom {found.headroom_bytes / gib:.1f} GiB; each image a job of "
                  f"{styles} x {platforms} x {variants} variants")  # fmt: skip
    for trial in sorted(found.trials, key=lambda t: t.batch):
        peak = "out of memory" if trial.peak_bytes is None else f"{trial.peak_bytes / gib:.2f} GiB"
        speed = "" if trial.images_per_s is None else f"{trial.images_per_s:8.2f} images/s"
        console.print(f"batch {trial.batch:4d}  {'fits' if trial.fits else 'too big':8s} "
                      f"peak {peak:>14s}  {speed}")  # fmt: skip
    console.print(f"largest batch that fits: {found.largest}; fastest: {found.fastest}")
