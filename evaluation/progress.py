"""Progress of a long command: a live line (rich) on a terminal, one line per stage otherwise.

``with stages("eval score") as stage: stage("tokenising")`` — on a terminal the
stage shows beside a spinner and the time elapsed, and disappears when the
command ends; in a log (CI, a pipe) each stage is one line on stderr, with the
seconds since the command started, so a slow stage is visible afterwards.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TextIO

Stage = Callable[[str], None]


@contextmanager
def stages(command: str, stream: TextIO | None = None) -> Iterator[Stage]:
    out = stream or sys.stderr
    if out.isatty():
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=Console(file=out), transient=True) as progress:
            task = progress.add_task(command, total=None)
            yield lambda name: progress.update(task, description=f"{command}: {name}")
        return
    started = time.monotonic()

    def line(name: str) -> None:
        out.write(f"{command}: {name} [{time.monotonic() - started:.1f} s]\n")
        out.flush()

    yield line
