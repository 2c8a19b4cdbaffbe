"""A webhook test ping, from the API and from the CLI, through a real IO worker."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

from fastapi.testclient import TestClient

from producers.api import create_app
from schemas.settings import ApiSettings
from schemas.store.sessions import session_scope
from schemas.store.tenants import create_api_key
from schemas.tables import Tenant
from tests.support.receivers import Receiver
from tests.support.services import LOOPBACK
from tests.support.stack import Stack
from tests.support.waiting import wait_for


def test_ping_reaches_the_endpoint_signed_with_its_own_secret(
    stack: Stack, receivers: Callable[..., Receiver]
) -> None:
    settings = ApiSettings(
        database_url=stack.settings.database_url,
        redis_url=stack.settings.redis_url,
        **LOOPBACK,
    )
    with session_scope(settings.database_url) as session:
        tenant = session.get(Tenant, stack.tenant_id)
        assert tenant is not None
        key = create_api_key(session=session, tenant=tenant, scopes=["submit", "read"])[1]
    auth = {"authorization": f"Bearer {key}"}
    with TestClient(create_app(settings)) as http:
        receiver = receivers("")
        endpoint = http.post("/v1/webhooks", json={"url": receiver.url}, headers=auth).json()
        receiver.secret = endpoint["secret"]  # the endpoint's own, shown once
        sent = http.post(f"/v1/webhooks/{endpoint['id']}/ping", headers=auth)
        assert sent.status_code == 202, sent.text
        delivery_id = sent.json()["id"]
        wait_for(lambda: bool(receiver.received), 60, "the ping")
        (got,) = receiver.received
        assert got.verified
        assert got.event_type == "webhook.ping"
        assert got.webhook_id == delivery_id
        assert got.body["data"]["endpoint_id"] == endpoint["id"]

        def delivery() -> dict[str, object]:
            return http.get(f"/v1/webhooks/deliveries/{delivery_id}", headers=auth).json()

        wait_for(lambda: delivery()["status"] == "delivered", 60, "the delivery marked")
        row = delivery()
        assert row["status"] == "delivered"
        assert row["job_id"] is None
        assert row["last_status_code"] == 204

        env = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
        cli = subprocess.run(
            [sys.executable, "-m", "producers.cli", "webhooks", "ping", endpoint["id"],
             "--tenant", "acme", "--wait", "60"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert "delivered, HTTP 204" in cli.stdout
        assert len(receiver.received) == 2
