"""A plain captioner as a writer: each variant is a caption that continues its style prefix.

For deployments with only a captioner (BLIP, GIT, the noop model): the style
prefix ("discover", "an elegant view of") steers the caption; the instruction
is not read, so a regeneration differs only by its new seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from worker.models.base import Captioner, WriteRequest, batch_seed, check_batch


class PrefixWriter:
    sees_image = True

    def __init__(self, captioner: Captioner) -> None:
        self.captioner = captioner
        self.info = replace(captioner.info, generation={**captioner.info.generation,
                                                        "sampled": True})

    def write(self, requests: Sequence[WriteRequest]) -> list[str]:
        if not requests:
            return []
        texts = self.captioner.caption(
            [r.image for r in requests],
            prompts=[r.prefix for r in requests],
            seed=batch_seed([r.seed for r in requests]),
        )
        check_batch(f"{self.info.model_id} write", len(texts), len(requests))
        return texts
