"""SPICE, when its Stanford CoreNLP 3.6.0 jars are present; otherwise a stated reason.

pycocoevalcap downloads ``stanford-corenlp-3.6.0.jar`` and its models jar on
first use, which fails offline and writes into the installed package. This
module never downloads: it looks for the two jars (in pycocoevalcap's
``spice/lib`` or in a folder you name), runs ``spice-1.0.jar`` with a work and
cache directory of its own, and otherwise reports why SPICE is unavailable.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.errors import ScorerError
from evaluation.java import CocoJars, require_java
from schemas.errors import ErrorCode

CORENLP_JARS = ("stanford-corenlp-3.6.0.jar", "stanford-corenlp-3.6.0-models.jar")
DEFAULT_CACHE = Path.home() / ".cache" / "captionq" / "spice"


@dataclass(frozen=True)
class SpiceSetup:
    classpath: list[Path] | None
    reason: str | None  # why SPICE cannot run, when classpath is None


def locate(jars: CocoJars, corenlp_dir: Path | None = None) -> SpiceSetup:
    folders = [f for f in (corenlp_dir, jars.spice_lib) if f is not None]
    for folder in folders:
        found = [folder / name for name in CORENLP_JARS]
        if all(p.is_file() for p in found):
            return SpiceSetup(classpath=[jars.spice, *found], reason=None)
    return SpiceSetup(
        classpath=None,
        reason=(
            "SPICE needs Stanford CoreNLP 3.6.0 ("
            + " and ".join(CORENLP_JARS)
            + f"), not found in {' or '.join(str(f) for f in folders)}; pycocoevalcap "
            "downloads them on first use, which needs the network. Extract them from "
            "stanford-corenlp-full-2015-12-09.zip into that folder or pass --corenlp-dir."
        ),
    )


def run_spice(
    classpath: Sequence[Path],
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    cache_dir: Path = DEFAULT_CACHE,
) -> np.ndarray:
    """Per-image SPICE F-scores (NaN where SPICE gives none), in input order."""
    java = require_java()
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="captionq-spice-") as work:
        src, out = Path(work) / "input.json", Path(work) / "output.json"
        rows = [
            {"image_id": i, "test": hyp, "refs": list(refs)}
            for i, (hyp, refs) in enumerate(zip(hypotheses, references, strict=True))
        ]
        src.write_text(json.dumps(rows))
        cmd = [java, "-Xmx8G", "-cp", os.pathsep.join(str(p) for p in classpath),
               "edu.anu.spice.SpiceScorer", str(src), "-cache", str(cache_dir),
               "-out", str(out), "-subset", "-silent"]
        done = subprocess.run(cmd, cwd=work, capture_output=True, check=False)  # noqa: S603
        if done.returncode != 0:
            raise ScorerError(
                ErrorCode.scorer_failed,
                f"SPICE exited {done.returncode}: {done.stderr.decode(errors='replace')[-500:]}",
            )
        results = json.loads(out.read_text())
    by_id = {item["image_id"]: _float(item["scores"]["All"]["f"]) for item in results}
    return np.array([by_id.get(i, math.nan) for i in range(len(rows))])


def _float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
