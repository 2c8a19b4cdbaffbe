"""Where a process connects: every Python-level ``socket.connect`` (an audit hook put on
its PYTHONPATH by :func:`audit_env`), and its inet sockets as the kernel lists them
(``/proc``), which also shows connections that C libraries make (libpq)."""

from __future__ import annotations

import os
from pathlib import Path

AUDIT_DIR = Path(__file__).resolve().parent / "connect_audit"


def audit_env(log: Path) -> dict[str, str]:
    """The environment that makes a Python process record its connects to ``log``."""
    paths = [str(AUDIT_DIR), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {"PYTHONPATH": os.pathsep.join(paths), "CAPTIONQ_TEST_CONNECT_LOG": str(log)}


def audited(log: Path) -> set[tuple[str, int]]:
    """The (host, port) pairs recorded in ``log``."""
    if not log.exists():
        return set()
    pairs = (line.rsplit(" ", 1) for line in log.read_text().splitlines() if line.strip())
    return {(host, int(port)) for host, port in pairs}


def remote_ports(pid: int) -> set[int]:
    """Remote ports of the TCP sockets that process ``pid`` holds now (IPv4 and IPv6)."""
    inodes: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return set()
    ports: set[int] = set()
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 9 and fields[9] in inodes:
                ports.add(int(fields[2].rsplit(":", 1)[1], 16))
    return ports
