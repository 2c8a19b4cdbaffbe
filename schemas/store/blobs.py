"""Content-addressed image bytes: stored before a job is published, read by the worker.

``db`` keeps them in the ``blob`` table (works across hosts with PostgreSQL);
``file:///dir`` keeps them as files named by their SHA-256 (shared volume).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlparse

from sqlalchemy import bindparam
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from schemas.tables import Blob, utcnow


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_blob(*, session: Session, store: str, data: bytes) -> str:
    """Store ``data`` (idempotent) and return its SHA-256."""
    return put_blobs(session=session, store=store, items=[data])[0]


def put_blobs(*, session: Session, store: str, items: Sequence[bytes]) -> list[str]:
    """Store each of ``items`` (idempotent; one query for the 'db' store) and return the
    SHA-256 of each."""
    digests = [sha256_hex(item) for item in items]
    new = dict(zip(digests, items, strict=True))
    if not new:
        return digests
    if store != "db":
        for digest, item in new.items():
            _put_file(file_path(store, digest), item)
        return digests
    present = session.exec(select(Blob.sha256).where(col(Blob.sha256).in_(list(new)))).all()
    for digest in present:
        del new[digest]
    if new:
        # ON CONFLICT DO NOTHING: another request may be storing the same image now.
        dialect = session.get_bind().dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        now = utcnow()
        rows = [
            {"sha256": digest, "size": len(item), "data": item, "created_at": now}
            for digest, item in new.items()
        ]
        session.execute(insert(Blob).on_conflict_do_nothing(), rows)
    return digests


def _put_file(path: Path, data: bytes) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
        tmp.write(data)
    os.replace(tmp.name, path)


def get_blobs(*, session: Session, store: str, sha256s: Iterable[str]) -> dict[str, bytes]:
    """The stored bytes of each digest that is present (one query for the 'db' store)."""
    wanted = set(sha256s)
    if store == "db":
        rows = session.connection().execute(_READ, {"digests": list(wanted)})
        return {row.sha256: row.data for row in rows}
    found = {}
    for digest in wanted:
        path = file_path(store, digest)
        if path.exists():
            found[digest] = path.read_bytes()
    return found


# Built once: building a statement costs about as much CPU as running it.
_BLOB = Blob.__table__  # type: ignore[attr-defined]
_READ = select(_BLOB.c.sha256, _BLOB.c.data).where(
    _BLOB.c.sha256.in_(bindparam("digests", expanding=True))
)


def file_path(store: str, digest: str) -> Path:
    parsed = urlparse(store)
    if parsed.scheme != "file":
        raise ValueError(f"unsupported blob store {store!r}: use 'db' or file:///dir")
    return Path(parsed.path) / digest[:2] / digest
