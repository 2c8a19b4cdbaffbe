"""The Java requirement of the COCO scorers, and where their jars live.

The COCO caption evaluation (``pycocoevalcap``) runs three Java programs: the
Stanford PTB tokenizer, METEOR 1.5 and SPICE. Java 8 or newer must be on
``PATH``; :func:`require_java` checks it once, before any work starts, and
fails with a message that says how to fix it.

pycocoevalcap's own wrappers write temporary files inside the installed
package, which breaks on a read-only install (system site-packages, a
container image). This toolkit never writes there: every Java process runs
with absolute jar paths and a working directory it owns.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from evaluation.errors import ToolMissingError
from schemas.errors import ErrorCode

JAVA_HELP = (
    "the COCO caption metrics (PTB tokenizer, METEOR, SPICE) run on Java: install a "
    "Java runtime 8 or newer (e.g. `apt-get install openjdk-17-jre-headless`) and put "
    "`java` on PATH"
)


@functools.cache
def require_java() -> str:
    """Path of a working ``java``, or :class:`ToolMissingError` with ``java_missing``."""
    java = shutil.which("java")
    if java is None:
        raise ToolMissingError(ErrorCode.java_missing, f"`java` not found on PATH; {JAVA_HELP}")
    try:
        subprocess.run([java, "-version"], capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as exc:
        raise ToolMissingError(
            ErrorCode.java_missing, f"`{java} -version` failed ({exc}); {JAVA_HELP}"
        ) from exc
    return java


@dataclass(frozen=True)
class CocoJars:
    """The jars shipped in a pycocoevalcap install (read, never written)."""

    root: Path

    @classmethod
    def installed(cls) -> CocoJars:
        import pycocoevalcap  # namespace package: no __file__

        return cls(root=Path(next(iter(pycocoevalcap.__path__))))

    @property
    def tokenizer(self) -> Path:
        return self._existing(self.root / "tokenizer" / "stanford-corenlp-3.4.1.jar")

    @property
    def meteor(self) -> Path:
        return self._existing(self.root / "meteor" / "meteor-1.5.jar")

    @property
    def spice(self) -> Path:
        return self._existing(self.root / "spice" / "spice-1.0.jar")

    @property
    def spice_lib(self) -> Path:
        return self.root / "spice" / "lib"

    @staticmethod
    def _existing(path: Path) -> Path:
        if not path.is_file():
            raise ToolMissingError(
                ErrorCode.jar_missing,
                f"{path} is missing: reinstall pycocoevalcap==1.2 (`pip install "
                "--force-reinstall pycocoevalcap==1.2`)",
            )
        return path
