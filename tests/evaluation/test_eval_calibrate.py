from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, SQLModel, col, create_engine, delete

from evaluation.calibrate import calibrate_tenant, fit_threshold
from evaluation.errors import EvaluationError
from schemas.errors import ErrorCode
from schemas.tables import QUALITY_SCORE_VERSION, Job, Tenant, Variant

pytestmark = pytest.mark.unit

PAIRS = [(0.95, "approved"), (0.9, "approved"), (0.85, "rejected"), (0.8, "approved"),
         (0.7, "approved"), (0.6, "edited"), (0.5, "rejected"), (0.4, "approved"),
         (0.3, "pending_review"), (0.99, "auto_approved")]


def test_lowest_threshold_reaching_the_target() -> None:
    result = fit_threshold(PAIRS, 0.8)
    # >=0.95: 1/1; >=0.9: 2/2; >=0.85: 2/3; >=0.8: 3/4; >=0.7: 4/5=0.8; >=0.6: 4/6; ...
    assert result.threshold == 0.7
    assert result.positives == 5
    assert result.negatives == 3
    point = result.point
    assert point is not None
    assert point.precision == pytest.approx(0.8)
    assert point.recall == pytest.approx(4 / 5)
    assert point.auto_approved == 5
    assert [p.threshold for p in result.curve] == [0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.5, 0.4]


def test_unreachable_target_and_support() -> None:
    assert fit_threshold([(0.9, "rejected"), (0.5, "approved")], 0.9).threshold is None
    assert fit_threshold(PAIRS, 1.0).threshold == 0.9
    assert fit_threshold(PAIRS, 1.0, min_support=3).threshold is None


def test_ties_are_one_threshold() -> None:
    result = fit_threshold([(0.5, "approved"), (0.5, "rejected"), (0.4, "approved")], 0.5)
    assert [p.threshold for p in result.curve] == [0.5, 0.4]
    assert result.threshold == 0.4


def test_bad_inputs() -> None:
    with pytest.raises(EvaluationError) as err:
        fit_threshold([(0.5, "pending_review")], 0.9)
    assert err.value.code is ErrorCode.no_decisions
    with pytest.raises(EvaluationError):
        fit_threshold([(0.5, "maybe")], 0.9)
    with pytest.raises(EvaluationError):
        fit_threshold(PAIRS, 0.0)


def _db(tmp_path: Path) -> Session:
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    SQLModel.metadata.create_all(engine)
    session = Session(engine)
    for tenant in ("ten_a", "ten_b"):
        session.add(Tenant(id=tenant, name=tenant.replace("ten_", "shop-"),
                           webhook_secret_encrypted="s"))
    session.commit()
    for tenant, pairs in (("ten_a", PAIRS), ("ten_b", [(0.99, "rejected")] * 5)):
        _variants(session, tenant, pairs, {"quality_score_version": QUALITY_SCORE_VERSION})
    return session


def _variants(session: Session, tenant: str, pairs: list[tuple[float, str]],
           provenance: dict[str, object]) -> None:
    job = Job(tenant_id=tenant, styles=["plain"], platforms=["x"], variants=len(pairs),
              request_hash="h")
    session.add(job)
    session.commit()
    for i, (score, state) in enumerate(pairs):
        session.add(Variant(job_id=job.id, style="plain", platform="x", index=i, text="t",
                            quality_score=score, review_state=state, provenance=provenance))
    session.commit()


def test_calibrate_fits_only_on_todays_quality_score(tmp_path: Path) -> None:
    with _db(tmp_path) as session:
        # Rejections that would lift the threshold, had they been scored the same way.
        _variants(session, "ten_a", [(0.75, "rejected")] * 3, {})  # before versions: 1
        _variants(session, "ten_a", [(0.72, "rejected")], {"quality_score_version": 1})
        result = calibrate_tenant(session=session, tenant="shop-a", target_precision=0.8,
                                  store=False)
        assert (result.threshold, result.left_out_older) == (0.7, 4)
        assert (result.positives, result.negatives) == (5, 3)
        assert result.as_dict()["left_out_older"] == 4
        assert "4 reviewed variant(s) scored under an older quality score left out" in (
            result.summary())
        _variants(session, "ten_b", [(0.5, "approved")], {})
        session.exec(delete(Variant).where(col(Variant.quality_score) == 0.99))
        session.commit()
        with pytest.raises(EvaluationError) as err:
            calibrate_tenant(session=session, tenant="shop-b", target_precision=0.8,
                             store=False)
        assert err.value.code is ErrorCode.no_decisions
        assert "older quality score" in err.value.message


def test_calibrate_tenant_reads_only_its_variants_and_stores(tmp_path: Path) -> None:
    with _db(tmp_path) as session:
        dry = calibrate_tenant(session=session, tenant="shop-a", target_precision=0.8,
                               store=False)
        assert dry.threshold == 0.7
        assert dry.at_threshold is not None
        low, high = dry.at_threshold.precision[1:]
        assert low <= dry.at_threshold.precision[0] <= high
        assert session.get(Tenant, "ten_a").auto_approve_threshold is None
        calibrate_tenant(session=session, tenant="shop-a", target_precision=0.8, store=True)
        session.expire_all()
        stored = session.get(Tenant, "ten_a")
        assert (stored.auto_approve_threshold, stored.threshold_stale) == (0.7, False)
        assert stored.auto_approve_score_version == QUALITY_SCORE_VERSION
        stored.auto_approve_score_version = None  # fitted before scores were versioned
        assert stored.threshold_stale
        assert session.get(Tenant, "ten_b").auto_approve_threshold is None
        with pytest.raises(EvaluationError) as err:
            calibrate_tenant(session=session, tenant="nope", target_precision=0.8, store=True)
        assert err.value.code is ErrorCode.tenant_not_found
