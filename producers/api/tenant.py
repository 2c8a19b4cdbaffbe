"""/v1/tenant: the calling tenant's policy, with its auto-approve threshold and whether
that threshold was fitted on an older quality score."""

from __future__ import annotations

from fastapi import APIRouter

from producers.api.deps import ReadTenant
from schemas.accounts import TenantPolicyPublic
from schemas.tables import QUALITY_SCORE_VERSION

router = APIRouter(prefix="/v1/tenant", tags=["tenant"])


@router.get("", response_model=TenantPolicyPublic)
def read_policy(tenant: ReadTenant) -> TenantPolicyPublic:
    """The auto-approve threshold, the score version it was fitted on, and whether it is
    stale (fitted on another version of the quality score than today's)."""
    return TenantPolicyPublic(
        id=tenant.id, name=tenant.name,
        auto_approve_threshold=tenant.auto_approve_threshold,
        auto_approve_score_version=tenant.auto_approve_score_version,
        quality_score_version=QUALITY_SCORE_VERSION,
        threshold_stale=tenant.threshold_stale,
    )
