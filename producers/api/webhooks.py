"""/v1/webhooks: a tenant's callback endpoints (secrets rotate) and its deliveries
(list the dead ones, replay them)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, status

from producers.api.deps import ReadSessionDep, ReadTenant, SessionDep, SettingsDep, SubmitTenant
from producers.publish import publish_deliveries
from producers.submit import callback_target
from schemas.api import DeliveryPublic, EndpointCreate, EndpointPublic, EndpointSecret
from schemas.messages import DeliveryRef
from schemas.store import deliveries, endpoints, outbox
from schemas.tables import Delivery, DeliveryStatus, WebhookEndpoint

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])


def _public(endpoint: WebhookEndpoint) -> EndpointPublic:
    return EndpointPublic.model_validate(endpoint, from_attributes=True)


def _with_secret(endpoint: WebhookEndpoint, secret: str) -> EndpointSecret:
    return EndpointSecret(**_public(endpoint).model_dump(), secret=secret)


def _delivery(delivery: Delivery) -> DeliveryPublic:
    return DeliveryPublic.model_validate(delivery, from_attributes=True)


@router.post("", status_code=status.HTTP_201_CREATED, response_model=EndpointSecret)
def create_endpoint(
    body: EndpointCreate, tenant: SubmitTenant, session: SessionDep, settings: SettingsDep
) -> EndpointSecret:
    """Register a callback URL (checked like every outgoing URL); returns its secret once."""
    target = callback_target(body.url, settings=settings, field="url")
    endpoint, secret = endpoints.create_endpoint(
        session=session,
        tenant_id=tenant.id,
        url=target.url,
        key=settings.webhook_secrets_key,
        event_types=body.event_types,
    )
    return _with_secret(endpoint, secret)


@router.get("", response_model=list[EndpointPublic])
def list_endpoints(tenant: ReadTenant, session: ReadSessionDep) -> list[EndpointPublic]:
    return [_public(e) for e in endpoints.list_endpoints(session=session, tenant_id=tenant.id)]


@router.post("/{endpoint_id}/rotate", response_model=EndpointSecret)
def rotate(
    endpoint_id: str, tenant: SubmitTenant, session: SessionDep, settings: SettingsDep
) -> EndpointSecret:
    """A new secret; for a grace period callbacks carry both signatures."""
    endpoint = endpoints.get_endpoint(session=session, tenant_id=tenant.id, endpoint_id=endpoint_id)
    secret = endpoints.rotate_secret(
        session=session,
        endpoint=endpoint,
        key=settings.webhook_secrets_key,
        grace_s=settings.webhook_rotation_grace_s,
    )
    return _with_secret(endpoint, secret)


@router.post("/{endpoint_id}/enable", response_model=EndpointPublic)
def enable(endpoint_id: str, tenant: SubmitTenant, session: SessionDep) -> EndpointPublic:
    endpoint = endpoints.get_endpoint(session=session, tenant_id=tenant.id, endpoint_id=endpoint_id)
    endpoints.set_enabled(session=session, endpoint=endpoint, enabled=True)
    return _public(endpoint)


@router.post("/{endpoint_id}/disable", response_model=EndpointPublic)
def disable(endpoint_id: str, tenant: SubmitTenant, session: SessionDep) -> EndpointPublic:
    endpoint = endpoints.get_endpoint(session=session, tenant_id=tenant.id, endpoint_id=endpoint_id)
    endpoints.set_enabled(session=session, endpoint=endpoint, enabled=False)
    return _public(endpoint)


@router.delete("/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete(endpoint_id: str, tenant: SubmitTenant, session: SessionDep) -> None:
    endpoint = endpoints.get_endpoint(session=session, tenant_id=tenant.id, endpoint_id=endpoint_id)
    endpoints.delete_endpoint(session=session, endpoint=endpoint)


@router.post(
    "/{endpoint_id}/ping", status_code=status.HTTP_202_ACCEPTED, response_model=DeliveryPublic
)
def ping(
    endpoint_id: str, tenant: SubmitTenant, session: SessionDep, settings: SettingsDep
) -> DeliveryPublic:
    """Send a signed ``webhook.ping`` to the endpoint; follow it at
    ``GET /v1/webhooks/deliveries/{id}``."""
    endpoint = endpoints.get_endpoint(session=session, tenant_id=tenant.id, endpoint_id=endpoint_id)
    delivery = outbox.create_ping(session=session, endpoint=endpoint)
    session.commit()
    publish_deliveries(
        redis_url=settings.redis_url, deliveries=[DeliveryRef(delivery.id, delivery.url)]
    )
    return _delivery(delivery)


@router.get("/deliveries/{delivery_id}", response_model=DeliveryPublic)
def read_delivery(delivery_id: str, tenant: ReadTenant, session: ReadSessionDep) -> DeliveryPublic:
    delivery = deliveries.get_delivery(
        session=session, tenant_id=tenant.id, delivery_id=delivery_id
    )
    return _delivery(delivery)


@router.get("/deliveries", response_model=list[DeliveryPublic])
def list_deliveries(
    tenant: ReadTenant,
    session: ReadSessionDep,
    status_: Annotated[DeliveryStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[DeliveryPublic]:
    rows = deliveries.list_deliveries(
        session=session, tenant_id=tenant.id, status=status_, limit=limit
    )
    return [_delivery(d) for d in rows]


@router.post("/deliveries/{delivery_id}/replay", response_model=DeliveryPublic)
def replay(delivery_id: str, tenant: SubmitTenant, session: SessionDep) -> DeliveryPublic:
    """Send an event again: same ``webhook-id``, same body, fresh retry schedule."""
    delivery = deliveries.replay_delivery(
        session=session, tenant_id=tenant.id, delivery_id=delivery_id
    )
    return _delivery(delivery)


@router.post("/deliveries/replay-dead")
def replay_dead(tenant: SubmitTenant, session: SessionDep) -> dict[str, int]:
    return {"replayed": deliveries.replay_dead(session=session, tenant_id=tenant.id)}
