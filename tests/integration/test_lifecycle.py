"""Deleting a job whose image lives in a ``file://`` blob store, on SQLite and PostgreSQL:
the file goes only once the deletion has committed."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from schemas.store.blobs import file_path, put_blob
from schemas.store.lifecycle import delete_job
from schemas.store.sessions import engine_for, session_scope
from schemas.store.tenants import create_tenant
from schemas.tables import Job, Tenant
from tests.support.images import png


def _job(session: Session, tenant: Tenant, store: str, data: bytes) -> Job:
    job = Job(
        tenant_id=tenant.id,
        styles=["playful"],
        platforms=["x"],
        variants=1,
        request_hash="0" * 64,
        image_sha256=put_blob(session=session, store=store, data=data),
    )
    session.add(job)
    session.flush()
    return job


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> tuple[str, str, Tenant]:
    with session_scope(database_url) as session:
        tenant = create_tenant(session=session, name=f"t-{uuid.uuid4().hex[:8]}")
    return database_url, (tmp_path / "blobs").as_uri(), tenant


def test_a_deleted_jobs_file_goes_after_the_commit(world) -> None:  # type: ignore[no-untyped-def]
    url, store, tenant = world
    with session_scope(url) as session:
        job = _job(session, tenant, store, png(1))
    path = file_path(store, job.image_sha256)  # type: ignore[arg-type]
    with session_scope(url) as session:
        assert delete_job(session=session, tenant_id=tenant.id, job_id=job.id, store=store)
        assert path.exists(), "unlinked before the transaction committed"
    assert not path.exists()
    with session_scope(url) as session:
        assert session.get(Job, job.id) is None


def test_a_failed_commit_leaves_the_file_and_the_job(world) -> None:  # type: ignore[no-untyped-def]
    url, store, tenant = world
    with session_scope(url) as session:
        job = _job(session, tenant, store, png(2))
    path = file_path(store, job.image_sha256)  # type: ignore[arg-type]
    session = Session(engine_for(url))
    assert delete_job(session=session, tenant_id=tenant.id, job_id=job.id, store=store)
    # A second tenant of the same name: the commit's flush fails on the unique name.
    session.add(Tenant(name=tenant.name, webhook_secret_encrypted="x"))
    with pytest.raises(IntegrityError):
        session.commit()
    session.close()
    assert path.exists(), "the commit failed, yet the job's image is gone"
    with session_scope(url) as session:
        assert session.get(Job, job.id) is not None
        # A later commit of the same kind of work still unlinks (nothing stale is kept).
        assert delete_job(session=session, tenant_id=tenant.id, job_id=job.id, store=store)
    assert not path.exists()


def test_a_rolled_back_savepoint_keeps_its_file_and_the_outer_commit_unlinks_the_rest(
    world,  # type: ignore[no-untyped-def]
) -> None:
    url, store, tenant = world
    with session_scope(url) as session:
        kept = _job(session, tenant, store, png(3))
        gone = _job(session, tenant, store, png(4))
    with session_scope(url) as session:
        savepoint = session.begin_nested()
        delete_job(session=session, tenant_id=tenant.id, job_id=kept.id, store=store)
        savepoint.rollback()
        with session.begin_nested():
            delete_job(session=session, tenant_id=tenant.id, job_id=gone.id, store=store)
    assert file_path(store, kept.image_sha256).exists()  # type: ignore[arg-type]
    assert not file_path(store, gone.image_sha256).exists()  # type: ignore[arg-type]
    with session_scope(url) as session:
        assert session.get(Job, kept.id) is not None
        assert session.get(Job, gone.id) is None
