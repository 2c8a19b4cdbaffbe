"""METEOR 1.5, as the COCO caption evaluation runs it, with one JVM per process.

The jar runs in ``-stdio`` mode (``-l en -norm``, the COCO options). For each
image we ask for its sufficient statistics (``SCORE`` line: the alignment
counts against the best-matching reference); an ``EVAL`` line over all of them
returns the per-image scores and the corpus METEOR, which is *not* the mean of
the per-image scores but METEOR of the summed statistics.

:func:`meteor_from_stats` is that aggregation (MeteorScorer.computeMetrics,
English defaults), vectorised: the bootstrap resamples the per-image statistics
and recomputes METEOR without asking Java again. A test checks it against the
jar on real data.
"""

from __future__ import annotations

import atexit
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from evaluation.errors import ScorerError
from evaluation.java import require_java
from schemas.errors import ErrorCode

# MeteorStats: 4 lengths, 4 stages x (test content, ref content, test function, ref function),
# chunks, test word matches, reference word matches.
STATS_WIDTH = 23
# Meteor 1.5 English "default" task parameters (alpha, beta, gamma, delta) and the weights of
# its four matching stages (exact, stem, synonym, paraphrase).
ALPHA, BETA, GAMMA, DELTA = 0.85, 0.20, 0.60, 0.75
STAGE_WEIGHTS = np.array([1.0, 0.6, 0.8, 0.6])


class MeteorProcess:
    """A running ``meteor-1.5.jar -stdio``; thread-safe; closed at interpreter exit."""

    def __init__(self, jar: Path) -> None:
        java = require_java()
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        self._workdir = tempfile.TemporaryDirectory(prefix="captionq-meteor-")
        self._proc = subprocess.Popen(  # noqa: S603
            [java, "-jar", "-Xmx2G", str(jar), "-", "-", "-stdio", "-l", "en", "-norm"],
            cwd=self._workdir.name,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._lock = threading.Lock()
        atexit.register(self.close)

    def stats(self, hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> list[str]:
        """One statistics line per (hypothesis, references); written and read concurrently."""
        lines = [
            " ||| ".join(("SCORE", " ||| ".join(refs), hyp.replace("|||", "").replace("  ", " ")))
            for hyp, refs in zip(hypotheses, references, strict=True)
        ]
        with self._lock:
            return self._exchange(lines, len(lines))

    def evaluate(self, stats: Sequence[str]) -> tuple[list[float], float]:
        """Per-image METEOR and the corpus METEOR of the summed statistics (the jar's)."""
        if not stats:
            return [], float("nan")
        with self._lock:
            answers = self._exchange(["EVAL ||| " + " ||| ".join(stats)], len(stats) + 1)
        values = [float(a) for a in answers]
        return values[:-1], values[-1]

    def _exchange(self, lines: list[str], expected: int) -> list[str]:
        proc = self._proc
        if proc.poll() is not None or proc.stdin is None or proc.stdout is None:
            raise ScorerError(ErrorCode.scorer_failed, f"METEOR is not running: {self._tail()}")
        payload = "".join(f"{line}\n" for line in lines).encode()
        stdin, failure = proc.stdin, []

        def write() -> None:
            try:
                stdin.write(payload)
                stdin.flush()
            except OSError as exc:  # the reader reports the broken process
                failure.append(exc)

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        answers = []
        for _ in range(expected):
            raw = proc.stdout.readline()
            if not raw:
                writer.join()
                raise ScorerError(ErrorCode.scorer_failed, f"METEOR stopped: {self._tail()}")
            answers.append(raw.decode().strip())
        writer.join()
        if failure:
            raise ScorerError(ErrorCode.scorer_failed, f"METEOR input failed: {failure[0]}")
        return answers

    def _tail(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace")[-500:] or "(no output)"

    def close(self) -> None:
        if self._proc.poll() is None:
            if self._proc.stdin is not None:
                self._proc.stdin.close()
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._stderr.close()
        self._workdir.cleanup()


_shared: dict[Path, MeteorProcess] = {}
_shared_lock = threading.Lock()


def shared_meteor(jar: Path) -> MeteorProcess:
    """The process-wide METEOR for ``jar``: the JVM starts once, on first use."""
    with _shared_lock:
        process = _shared.get(jar)
        if process is None or process._proc.poll() is not None:
            process = _shared[jar] = MeteorProcess(jar)
        return process


def parse_stats(lines: Sequence[str]) -> np.ndarray:
    rows = [np.array(line.split(), dtype=float) for line in lines]
    bad = next((i for i, r in enumerate(rows) if r.shape != (STATS_WIDTH,)), None)
    if bad is not None:
        raise ScorerError(
            ErrorCode.scorer_failed, f"METEOR statistics line {bad} is malformed: {lines[bad]!r}"
        )
    stats = np.stack(rows) if rows else np.zeros((0, STATS_WIDTH))
    # MeteorStats.addStats skips the chunk count of a perfect segment (every word matched,
    # one chunk): zero it here so that plain sums are what the jar aggregates. A segment's
    # own score is unchanged (its fragmentation is 0 either way).
    stages = stats[:, 4:20].reshape(-1, 4, 4)
    perfect = (
        (stages[:, :, 0].sum(1) + stages[:, :, 2].sum(1) == stats[:, 0])
        & (stages[:, :, 1].sum(1) + stages[:, :, 3].sum(1) == stats[:, 1])
        & (stats[:, 20] == 1)
    )
    stats[perfect, 20] = 0.0
    return stats


def meteor_from_stats(totals: np.ndarray) -> np.ndarray:
    """METEOR of summed statistics; ``totals`` is (..., 23), one row per corpus (resample)."""
    t = np.asarray(totals, dtype=float)
    test_len, ref_len, test_fn, ref_fn = t[..., 0], t[..., 1], t[..., 2], t[..., 3]
    stages = t[..., 4:20].reshape(*t.shape[:-1], 4, 4)  # stage x (tc, rc, tf, rf)
    chunks, test_words, ref_words = t[..., 20], t[..., 21], t[..., 22]
    with np.errstate(divide="ignore", invalid="ignore"):
        test_wlen = DELTA * (test_len - test_fn) + (1 - DELTA) * test_fn
        ref_wlen = DELTA * (ref_len - ref_fn) + (1 - DELTA) * ref_fn
        test_wmatch = (STAGE_WEIGHTS * DELTA * stages[..., 0]).sum(-1) + (
            STAGE_WEIGHTS * (1 - DELTA) * stages[..., 2]
        ).sum(-1)
        ref_wmatch = (STAGE_WEIGHTS * DELTA * stages[..., 1]).sum(-1) + (
            STAGE_WEIGHTS * (1 - DELTA) * stages[..., 3]
        ).sum(-1)
        precision = test_wmatch / test_wlen
        recall = ref_wmatch / ref_wlen
        fmean = 1.0 / ((1 - ALPHA) / precision + ALPHA / recall)
        test_total = stages[..., 0].sum(-1) + stages[..., 2].sum(-1)
        ref_total = stages[..., 1].sum(-1) + stages[..., 3].sum(-1)
        perfect = (test_total == test_len) & (ref_total == ref_len) & (chunks == 1)
        frag = np.where(perfect, 0.0, chunks / ((test_words + ref_words) / 2))
        score = fmean * (1.0 - GAMMA * np.power(frag, BETA))
    return np.where(np.isnan(score), 0.0, np.maximum(score, 0.0))
