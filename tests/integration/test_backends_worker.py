"""Each model backend end to end through a real worker process, and a tenant's copy
policy and auto-approve threshold applied by that worker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from producers.client import CaptionClient
from schemas.settings import CoreSettings
from schemas.store.sessions import migrate, session_scope
from schemas.store.tenants import ensure_tenant
from tests.support.api import client_of, new_tenant, served_api
from tests.support.images import png
from tests.support.processes import start
from worker.models import tiny

JOB = {"styles": ["playful", "luxury"], "platforms": ["instagram"], "variants": 1}


def run_jobs(
    folder: Path,
    redis_db: str,
    env: dict[str, str],
    n: int = 2,
    prepare: Callable[[str], None] | None = None,
) -> list:  # type: ignore[type-arg]
    url = f"sqlite:///{folder / 'jobs.db'}"
    migrate(url)
    if prepare is not None:
        prepare(url)
    settings = CoreSettings(database_url=url, redis_url=redis_db)
    tenant = new_tenant(settings, "brand")
    with served_api(settings) as api, client_of(api, tenant) as client:
        return _through(folder, url, redis_db, env, client, n)


def _through(
    folder: Path, url: str, redis_db: str, env: dict[str, str], client: CaptionClient, n: int
) -> list:  # type: ignore[type-arg]
    worker = start(
        "all",
        env={"DATABASE_URL": url, "REDIS_URL": redis_db, "MAX_NEW_TOKENS": "6",
             "COPY_MAX_NEW_TOKENS": "12", "HF_HUB_OFFLINE": "1", **env},
        logdir=folder,
    )  # fmt: skip
    try:
        accepted = client.submit_bulk([{"image": png((40 * i, 90, 160)), **JOB} for i in range(n)])
        return [client.wait(job, timeout_s=180) for job in accepted]
    finally:
        worker.stop()


BACKENDS = {
    "git-captioner": lambda root: {"CAPTIONER_MODEL": str(tiny.build_tiny_git(root / "git"))},
    "idefics3-chat-vlm": lambda root: {
        "CAPTIONER_MODEL": str(tiny.build_tiny_idefics3(root / "idefics3"))
    },
    "blip-plus-qwen2-rewriter": lambda root: {
        "CAPTIONER_MODEL": str(tiny.build_tiny_blip(root / "blip")),
        "COPYWRITER_MODEL": str(tiny.build_tiny_qwen2(root / "qwen2")),
    },
}


def name(source: str) -> str:
    """What results call a model: a hub id as it is, a local folder by its own name."""
    return Path(source).name if Path(source).is_dir() else source


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_each_backend_writes_through_a_real_worker(
    backend: str, redis_db: str, tmp_path: Path
) -> None:
    env = BACKENDS[backend](tmp_path)
    jobs = run_jobs(tmp_path, redis_db, env)
    for job in jobs:
        assert job.status == "succeeded", job.error
        assert job.caption is not None
        assert job.model_id == name(env["CAPTIONER_MODEL"])  # a name, not this host's path
        assert len(job.variants) == 2
        writer = env.get("COPYWRITER_MODEL", env["CAPTIONER_MODEL"])
        for variant in job.variants:
            assert variant.provenance["model_id"] == name(writer)
            assert variant.provenance["model_source"] == writer
            assert variant.provenance["prompt_template"].startswith(variant.style + "@")
            assert "rules_version" in variant.provenance
            assert "seed" in variant.provenance


def test_tenant_policy_flags_banned_terms_and_the_threshold_auto_approves_the_rest(
    redis_db: str, tmp_path: Path
) -> None:
    # The no-op model writes "<style prefix> an image of WxH pixels": ban a look-alike
    # spelling of "pixels" (Cyrillic і and х) and approve everything else at 0.5.
    def prepare(url: str) -> None:
        with session_scope(url) as session:
            tenant = ensure_tenant(session=session, name="brand")
            tenant.banned_terms = ["ріхels"]
            tenant.auto_approve_threshold = 0.5
            session.add(tenant)

    (tmp_path / "banned").mkdir()
    (tmp_path / "clean").mkdir()
    (job,) = run_jobs(tmp_path / "banned", redis_db, {"CAPTIONER_MODEL": "captionq/noop"}, n=1,
                      prepare=prepare)  # fmt: skip
    assert job.status == "succeeded", job.error
    for variant in job.variants:
        assert "policy:banned_term" in variant.flags, variant
        assert variant.review_state == "pending_review"  # flagged: never auto-approved

    def unbanned(url: str) -> None:
        with session_scope(url) as session:
            tenant = ensure_tenant(session=session, name="brand")
            tenant.auto_approve_threshold = 0.5
            session.add(tenant)

    (clean,) = run_jobs(
        tmp_path / "clean",
        redis_db,
        {"CAPTIONER_MODEL": "captionq/noop"},
        n=1,
        prepare=unbanned,
    )
    assert clean.status == "succeeded", clean.error
    assert {v.review_state for v in clean.variants} == {"auto_approved"}
    assert all(v.quality_score >= 0.5 and not v.flags for v in clean.variants)
