"""Calibration on real decisions: variants decided through /v1/review, then
``captionq eval calibrate --tenant NAME`` fits and stores the threshold from them,
on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select
from typer.testing import CliRunner

from evaluation.cli import app as eval_app
from producers.api import create_app
from schemas.settings import ApiSettings
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_api_key, create_tenant
from schemas.tables import QUALITY_SCORE_VERSION, Tenant, Variant
from tests.integration.review_world import reviewable_job

pytestmark = pytest.mark.integration

# (quality score, what the reviewer does): approved above 0.6, one rejection at 0.7.
DECISIONS = [(0.95, "approve"), (0.9, "approve"), (0.8, "approve"), (0.7, "reject"),
             (0.65, "approve"), (0.6, "approve"), (0.4, "reject"), (0.3, "reject")]


def test_calibrate_on_decisions_made_through_the_review_api(database_url: str,
                                                            redis_url: str) -> None:
    name = f"shop-{uuid.uuid4().hex[:8]}"
    with session_scope(database_url) as session:
        tenant = create_tenant(session=session, name=name)
        key = create_api_key(session=session, tenant=tenant, scopes=["review"])[1]
        variant_ids = []
        for score, _ in DECISIONS:
            job = reviewable_job(session, tenant, platforms=("x",), score=score)
            variant_ids.append(session.exec(select(Variant.id).where(Variant.job_id == job.id))
                               .one())
    settings = ApiSettings(database_url=database_url, redis_url=redis_url)
    with TestClient(create_app(settings)) as http:
        for variant_id, (_, action) in zip(variant_ids, DECISIONS, strict=True):
            body = {"reason": "inaccurate"} if action == "reject" else {}
            done = http.post(f"/v1/review/variants/{variant_id}/{action}", json=body,
                             headers={"authorization": f"Bearer {key}"})
            assert done.status_code == 200, done.text
    result = CliRunner().invoke(eval_app, [
        "calibrate", "--tenant", name, "--database-url", database_url, "--target-precision",
        "0.8", "--min-support", "3", "--store", "--json"])
    assert result.exit_code == 0, result.output
    fitted = json.loads(result.stdout)
    # Lowest threshold with precision >= 0.8: 0.6 (5 approved of 6).
    assert (fitted["positives"], fitted["negatives"], fitted["threshold"]) == (5, 3, 0.6)
    at = fitted["at_threshold"]
    assert at["precision"][0] == pytest.approx(5 / 6)
    assert at["recall"][0] == 1.0
    assert at["precision"][1] <= 5 / 6 <= at["precision"][2]
    assert at["auto_approved_share"] == pytest.approx(6 / 8)
    with session_scope(database_url) as session:
        stored = session.get(Tenant, tenant.id)
        assert stored is not None
        assert stored.auto_approve_threshold == 0.6
        assert stored.auto_approve_score_version == QUALITY_SCORE_VERSION
        assert not stored.threshold_stale
