"""The PTB tokenizer of the COCO caption evaluation, run from a directory we own.

Same command, options and punctuation filter as
``pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer`` (Stanford CoreNLP 3.4.1,
``-preserveLines -lowerCase``), so the tokens, and therefore every score, are
the same; the sentence file goes to a private temporary directory instead of
the package folder.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pycocoevalcap.tokenizer.ptbtokenizer import PUNCTUATIONS

from evaluation.errors import ScorerError
from evaluation.java import require_java
from schemas.errors import ErrorCode

_COUNT = re.compile(r"PTBTokenizer tokenized (\d+) tokens")
_PUNCTUATION = frozenset(PUNCTUATIONS)


@dataclass(frozen=True)
class Tokenized:
    texts: list[str]
    # What the tokenizer itself reports (punctuation included), as the COCO code prints it.
    token_count: int


class PTBTokenizer:
    def __init__(self, jar: Path) -> None:
        self.jar = jar

    def start(self, texts: Sequence[str], workdir: Path) -> _Pending:
        """Start tokenising ``texts`` (one line each); :meth:`_Pending.result` collects."""
        java = require_java()
        handle = tempfile.NamedTemporaryFile(dir=workdir, suffix=".txt", delete=False)  # noqa: SIM115
        with handle:
            handle.write("\n".join(t.replace("\n", " ") for t in texts).encode())
        cmd = [java, "-cp", str(self.jar), "edu.stanford.nlp.process.PTBTokenizer",
               "-preserveLines", "-lowerCase", handle.name]
        proc = subprocess.Popen(  # noqa: S603
            cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        return _Pending(proc=proc, expected=len(texts))

    def tokenize(self, texts: Sequence[str]) -> Tokenized:
        with tempfile.TemporaryDirectory(prefix="captionq-ptb-") as workdir:
            return self.start(texts, Path(workdir)).result()


@dataclass
class _Pending:
    proc: subprocess.Popen[bytes]
    expected: int

    def result(self) -> Tokenized:
        out, err = self.proc.communicate()
        if self.proc.returncode != 0:
            tail = err.decode(errors="replace")[-500:]
            raise ScorerError(
                ErrorCode.scorer_failed, f"PTB tokenizer exited {self.proc.returncode}: {tail}"
            )
        lines = out.decode().split("\n")
        if self.expected and len(lines) < self.expected:
            raise ScorerError(
                ErrorCode.scorer_failed,
                f"PTB tokenizer returned {len(lines)} lines for {self.expected} sentences",
            )
        texts = [
            " ".join(w for w in line.rstrip().split(" ") if w not in _PUNCTUATION)
            for line in lines[: self.expected]
        ]
        match = _COUNT.search(err.decode(errors="replace"))
        return Tokenized(texts=texts, token_count=int(match.group(1)) if match else -1)
