"""Test-only: put on a process's PYTHONPATH to record every address it connects to.

An audit hook on ``socket.connect`` appends ``host port`` (inet addresses only) to the
file ``CAPTIONQ_TEST_CONNECT_LOG`` names; ``tests.support.sockets`` reads it back."""

import os
import sys

_LOG = os.environ.get("CAPTIONQ_TEST_CONNECT_LOG")


def _record(event: str, args: tuple[object, ...]) -> None:
    if event != "socket.connect" or _LOG is None:
        return
    address = args[1]
    if isinstance(address, tuple) and len(address) >= 2:
        with open(_LOG, "a", encoding="utf-8") as out:
            out.write(f"{address[0]} {address[1]}\n")


if _LOG:
    sys.addaudithook(_record)
