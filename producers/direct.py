"""The in-cluster producer: submit straight to the database and the broker, through the
same admission as the API (rate limit and in-flight cap), for an existing tenant.

    from producers.direct import DirectProducer

    producer = DirectProducer(tenant="acme")          # not_found if there is no such tenant
    outcomes = producer.submit_each([JobRequest(...), ...])

It holds the database's and Redis's credentials, so it is for code that runs inside
the deployment (the fault-injection harness, the benchmarks). Everything else uses
the HTTP SDK (``producers.client``), which needs only an API key. It never creates a
tenant: ``captionq tenant create`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

from producers.limits import admit
from producers.submit import Submitted, check_all, submit_checked
from schemas.api import JobRequest
from schemas.errors import ErrorCode, RequestError
from schemas.settings import ApiSettings, api_settings
from schemas.store.sessions import read_scope, session_scope
from schemas.store.tenants import tenant_by_name
from schemas.tables import Tenant


class DirectProducer:
    def __init__(self, *, tenant: str, settings: ApiSettings | None = None) -> None:
        self.settings = settings or api_settings()
        with read_scope(self.settings.database_url) as session:
            found = tenant_by_name(session=session, name=tenant)
            if found is None:
                raise RequestError(
                    f"no tenant {tenant!r}: create it with captionq tenant create",
                    code=ErrorCode.not_found,
                )
            self.tenant_id: str = found.id

    def submit_each(self, requests: Sequence[JobRequest]) -> list[Submitted | RequestError]:
        """Admit the batch (or raise the 429-coded ``RateLimitedError``), then submit it:
        each request accepted (``Submitted``) or refused (its ``RequestError``), in order."""
        checked = check_all(requests, self.settings)  # before the transaction: see check_all
        with session_scope(self.settings.database_url) as session:
            tenant = session.get(Tenant, self.tenant_id)
            if tenant is None:
                raise RequestError(f"tenant {self.tenant_id} is gone", code=ErrorCode.not_found)
            admit(self.settings, session, tenant, len(requests))
            return submit_checked(
                session=session, settings=self.settings, tenant=tenant, checked=checked
            )
