"""Content-addressed image bytes: stored before a job is published, read by the worker.

``db`` keeps them in the ``blob`` table (works across hosts with PostgreSQL);
``file:///dir`` keeps them as files named by their SHA-256 (shared volume).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlparse

from sqlmodel import Session, col, select

from schemas.tables import Blob


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_blob(*, session: Session, store: str, data: bytes) -> str:
    """Store ``data`` (idempotent) and return its SHA-256."""
    digest = sha256_hex(data)
    if store == "db":
        if session.get(Blob, digest) is None:
            session.add(Blob(sha256=digest, size=len(data), data=data))
            session.flush()
        return digest
    path = file_path(store, digest)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
            tmp.write(data)
        os.replace(tmp.name, path)
    return digest


def get_blobs(*, session: Session, store: str, sha256s: Iterable[str]) -> dict[str, bytes]:
    """The stored bytes of each digest that is present (one query for the 'db' store)."""
    wanted = set(sha256s)
    if store == "db":
        rows = session.exec(select(Blob).where(col(Blob.sha256).in_(wanted))).all()
        return {row.sha256: row.data for row in rows}
    found = {}
    for digest in wanted:
        path = file_path(store, digest)
        if path.exists():
            found[digest] = path.read_bytes()
    return found


def file_path(store: str, digest: str) -> Path:
    parsed = urlparse(store)
    if parsed.scheme != "file":
        raise ValueError(f"unsupported blob store {store!r}: use 'db' or file:///dir")
    return Path(parsed.path) / digest[:2] / digest
