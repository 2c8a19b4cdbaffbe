"""Liveness and readiness for the orchestrator.

- ``GET /livez``: the process serves requests (nothing else is checked: a database
  outage must not get every API pod restarted).
- ``GET /readyz``: the database answers a query and Redis a ping, each within two
  seconds; otherwise 503 with the error envelope, naming what is away
  (``database_unavailable`` or ``broker_unavailable``), so traffic goes elsewhere.
"""

from __future__ import annotations

import redis
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from producers.api.deps import SettingsDep
from producers.api.statuses import status_for
from schemas.errors import ErrorCode
from schemas.store.sessions import read_scope

router = APIRouter(include_in_schema=False)
TIMEOUT_S = 2.0


@router.get("/livez")
def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(settings: SettingsDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with read_scope(settings.database_url) as session:
            session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # any failure to answer is "not ready"
        checks["database"] = f"{type(exc).__name__}: {exc}"[:300]
    try:
        client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=TIMEOUT_S, socket_connect_timeout=TIMEOUT_S
        )
        with client:
            client.ping()
        checks["redis"] = "ok"
    except redis.RedisError as exc:
        checks["redis"] = f"{type(exc).__name__}: {exc}"[:300]
    failed = [name for name, state in checks.items() if state != "ok"]
    if not failed:
        return JSONResponse({"status": "ok", "checks": checks})
    code = ErrorCode.database_unavailable if "database" in failed else ErrorCode.broker_unavailable
    body = {
        "error": {"code": code.value, "message": f"not ready: {', '.join(failed)} away"},
        "checks": checks,
    }
    return JSONResponse(body, status_code=status_for(code))
