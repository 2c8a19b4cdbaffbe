"""The Python client: submit jobs, read them back, wait for them.

    from producers.client import CaptionClient

    client = CaptionClient(tenant="acme")
    job_id = client.submit(image="shoe.jpg", styles=["playful"], platforms=["instagram"])
    result = client.wait(job_id, timeout_s=60)

It writes the job rows and publishes to the broker directly (same database and
Redis as the workers); services without database access use the HTTP API.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from producers.submit import Submitted, submit_many
from schemas.api import JobPublic, JobRequest
from schemas.errors import ErrorCode, RequestError
from schemas.names import PRIORITY_DEFAULT
from schemas.settings import CoreSettings, core_settings
from schemas.store.jobs import get_job, job_public
from schemas.store.sessions import read_scope, session_scope
from schemas.store.tenants import ensure_tenant
from schemas.tables import Tenant

ImageInput = str | Path | bytes


class CaptionClient:
    def __init__(self, *, tenant: str = "default", settings: CoreSettings | None = None) -> None:
        self.settings = settings or core_settings()
        with session_scope(self.settings.database_url) as session:
            self._tenant: Tenant = ensure_tenant(
                session=session, name=tenant, key=self.settings.webhook_secrets_key
            )

    @property
    def tenant_id(self) -> str:
        return self._tenant.id

    def submit(
        self,
        *,
        image: ImageInput,
        styles: Sequence[str],
        platforms: Sequence[str],
        variants: int = 3,
        callback_url: str | None = None,
        idempotency_key: str | None = None,
        priority: int = PRIORITY_DEFAULT,
        brand_voice: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> str:
        """Submit one job; returns its id. Raises ``RequestError`` (with ``.code``) if refused."""
        (job_id,) = self.submit_many(
            [
                {
                    "image": image,
                    "styles": styles,
                    "platforms": platforms,
                    "variants": variants,
                    "callback_url": callback_url,
                    "idempotency_key": idempotency_key,
                    "priority": priority,
                    "brand_voice": brand_voice,
                    "metadata": metadata or {},
                }
            ]
        )
        return job_id

    def submit_each(self, jobs: Sequence[Mapping[str, Any]]) -> list[Submitted | RequestError]:
        """Submit several jobs in one call, each accepted or refused on its own: a
        ``Submitted`` (id and status) or the ``RequestError`` that refused it, in order."""
        outcomes: list[Submitted | RequestError | None] = [None] * len(jobs)
        requests: list[JobRequest] = []
        positions: list[int] = []
        for index, job in enumerate(jobs):
            try:
                requests.append(self._request(job))
                positions.append(index)
            except (RequestError, OSError) as exc:
                outcomes[index] = _refusal(exc)
        with session_scope(self.settings.database_url) as session:
            submitted = submit_many(
                session=session, settings=self.settings, tenant=self._tenant, requests=requests
            )
        for index, outcome in zip(positions, submitted, strict=True):
            outcomes[index] = outcome
        return outcomes  # type: ignore[return-value]

    def submit_many(self, jobs: Sequence[Mapping[str, Any]]) -> list[str]:
        """Submit several jobs in one call (one transaction, one broker connection).

        Each mapping takes the keyword arguments of :meth:`submit`. If any is refused,
        raises the first ``RequestError`` after the others were submitted; its
        ``index`` attribute says which.
        """
        requests = [self._request(job) for job in jobs]
        with session_scope(self.settings.database_url) as session:
            outcomes = submit_many(
                session=session, settings=self.settings, tenant=self._tenant, requests=requests
            )
        for index, outcome in enumerate(outcomes):
            if isinstance(outcome, RequestError):
                outcome.index = index  # type: ignore[attr-defined]
                raise outcome
        return [o.job_id for o in outcomes]  # type: ignore[union-attr]

    def get(self, job_id: str) -> JobPublic:
        with read_scope(self.settings.database_url) as session:
            job = get_job(session=session, tenant_id=self._tenant.id, job_id=job_id)
            if job is None:
                raise RequestError(f"no job {job_id}", code=ErrorCode.not_found)
            return job_public(session=session, job=job)

    def wait(self, job_id: str, *, timeout_s: float = 60.0, poll_s: float = 0.2) -> JobPublic:
        """Poll until the job is succeeded, failed or cancelled; ``TimeoutError`` past the limit."""
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.get(job_id)
            if job.terminal:
                return job
            if time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} still {job.status} after {timeout_s} s")
            time.sleep(poll_s)

    @staticmethod
    def _request(job: Mapping[str, Any]) -> JobRequest:
        fields = {k: v for k, v in job.items() if k != "image" and v is not None}
        image = job.get("image")
        if isinstance(image, str) and image.startswith(("http://", "https://")):
            fields["image_url"] = image
        elif image is not None:
            data = image if isinstance(image, bytes) else Path(image).read_bytes()
            fields["image_base64"] = base64.b64encode(data).decode()
        try:
            return JobRequest(**fields)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise RequestError(problems, code=ErrorCode.invalid_request) from exc


def _refusal(exc: RequestError | OSError) -> RequestError:
    if isinstance(exc, RequestError):
        return exc
    return RequestError(f"cannot read {exc.filename}: {exc.strerror}", code=ErrorCode.image_missing)
