"""Jobs written straight to the store, queued, for tests that run a worker's batch
path themselves (``worker.batch.process``) without the API in front."""

from __future__ import annotations

from schemas.store.blobs import put_blob
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_tenant
from schemas.tables import Job
from tests.support.images import png


def queued_jobs(url: str, n: int, *, tenant: str, color: tuple[int, int, int]) -> list[str]:
    """``n`` queued jobs of a new tenant, each with the same stored image of ``color``
    (one style, one platform, one variant); their ids, in order."""
    with session_scope(url) as session:
        owner = create_tenant(session=session, name=tenant)
        digest = put_blob(session=session, data=png(color), store="db")
        jobs = [
            Job(tenant_id=owner.id, image_sha256=digest, styles=["minimal"], platforms=["x"],
                variants=1, request_hash=f"{tenant}-{i}", status="queued")
            for i in range(n)
        ]  # fmt: skip
        session.add_all(jobs)
        session.flush()
        return [job.id for job in jobs]
