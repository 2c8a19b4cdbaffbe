"""``GET /v1/usage``: what the calling tenant used, by UTC day (jobs, images, variants,
model seconds, callbacks): the basis of its quota and invoice. Needs a key with the
``admin`` scope; a tenant sees only its own usage."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from producers.api.deps import ReadSessionDep, require
from schemas.accounts import CalendarDate, UsagePage, UsagePublic
from schemas.store.usage import usage
from schemas.tables import Tenant

router = APIRouter(prefix="/v1/usage", tags=["usage"])
AdminTenant = Annotated[Tenant, Depends(require("admin"))]


@router.get("", response_model=UsagePage)
def read_usage(
    tenant: AdminTenant,
    session: ReadSessionDep,
    since: Annotated[CalendarDate | None, Query(description="First day (UTC), inclusive")] = None,
    until: Annotated[CalendarDate | None, Query(description="Last day (UTC), inclusive")] = None,
) -> UsagePage:
    rows = usage(session=session, tenant_id=tenant.id, since=since, until=until)
    return UsagePage(
        tenant_id=tenant.id,
        days=[UsagePublic.model_validate(row, from_attributes=True) for row in rows],
    )
