"""/v1/webhook-endpoints: the organization's signed-webhook receivers (the secret is shown once
at creation), each endpoint's delivery log, and redelivery on demand."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, status

from api.deps import (
    ADMIN,
    OriginDep,
    Principal,
    SessionDep,
    SettingsDep,
    TemporalDep,
    require_scope,
)
from api.notifications.schemas import (
    AttemptOut,
    DeliveryOut,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointOut,
    WebhookEndpointUpdate,
)
from api.pagination import CursorParam, LimitParam, Page, build_page
from core.notifications import webhooks
from core.notifications.webhooks import DeliveryView, EndpointChange

router = APIRouter(prefix="/webhook-endpoints", tags=["notifications"])

Admin = Annotated[Principal, Depends(require_scope(ADMIN))]
_PROBLEMS: dict[int | str, dict[str, str]] = {
    404: {"description": "Not found (or another organization's)"},
    409: {"description": "Too many endpoints, or the delivery is still being sent"},
    422: {"description": "Invalid input or a URL that may not be contacted"},
}


def _delivery_out(view: DeliveryView) -> DeliveryOut:
    d = view.delivery
    return DeliveryOut(
        id=d.id,
        event_id=d.event_id,
        event_type=view.event.event_type,
        status=d.status,
        attempt_count=d.attempt_count,
        redeliveries=d.redeliveries,
        last_status_code=d.last_status_code,
        last_error=d.last_error,
        delivered_at=d.delivered_at,
        created_at=d.created_at,
        attempts=[AttemptOut.model_validate(a) for a in view.attempts],
    )


@router.get("", response_model=list[WebhookEndpointOut], responses=_PROBLEMS)
async def list_endpoints(session: SessionDep, principal: Admin) -> list[WebhookEndpointOut]:
    return [
        WebhookEndpointOut.model_validate(e)
        for e in await webhooks.list_endpoints(session, principal)
    ]


@router.post(
    "",
    response_model=WebhookEndpointCreated,
    status_code=status.HTTP_201_CREATED,
    responses=_PROBLEMS,
)
async def create_endpoint(
    body: WebhookEndpointCreate,
    session: SessionDep,
    settings: SettingsDep,
    principal: Admin,
    origin: OriginDep,
) -> WebhookEndpointCreated:
    endpoint, secret = await webhooks.create_endpoint(
        session,
        settings,
        principal,
        origin,
        url=body.url,
        description=body.description,
        event_types=body.event_types,
    )
    shown = WebhookEndpointOut.model_validate(endpoint).model_dump()
    return WebhookEndpointCreated(**shown, secret=secret)


@router.get("/{endpoint_id}", response_model=WebhookEndpointOut, responses=_PROBLEMS)
async def get_endpoint(
    endpoint_id: uuid.UUID, session: SessionDep, principal: Admin
) -> WebhookEndpointOut:
    return WebhookEndpointOut.model_validate(
        await webhooks.get_endpoint(session, principal, endpoint_id)
    )


@router.patch("/{endpoint_id}", response_model=WebhookEndpointOut, responses=_PROBLEMS)
async def update_endpoint(
    endpoint_id: uuid.UUID,
    body: WebhookEndpointUpdate,
    session: SessionDep,
    settings: SettingsDep,
    principal: Admin,
    origin: OriginDep,
) -> WebhookEndpointOut:
    change = EndpointChange(
        url=body.url,
        description=body.description,
        event_types=body.event_types,
        enabled=body.enabled,
    )
    endpoint = await webhooks.update_endpoint(
        session, settings, principal, origin, endpoint_id, change
    )
    return WebhookEndpointOut.model_validate(endpoint)


@router.post(
    "/{endpoint_id}/rotate-secret", response_model=WebhookEndpointCreated, responses=_PROBLEMS
)
async def rotate_secret(
    endpoint_id: uuid.UUID,
    session: SessionDep,
    settings: SettingsDep,
    principal: Admin,
    origin: OriginDep,
) -> WebhookEndpointCreated:
    """A new signing secret, shown this once; the old one stops working at once."""
    endpoint, secret = await webhooks.rotate_secret(
        session, settings, principal, origin, endpoint_id
    )
    shown = WebhookEndpointOut.model_validate(endpoint).model_dump()
    return WebhookEndpointCreated(**shown, secret=secret)


@router.delete("/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_PROBLEMS)
async def delete_endpoint(
    endpoint_id: uuid.UUID, session: SessionDep, principal: Admin, origin: OriginDep
) -> None:
    await webhooks.delete_endpoint(session, principal, origin, endpoint_id)


@router.get("/{endpoint_id}/deliveries", response_model=Page[DeliveryOut], responses=_PROBLEMS)
async def list_deliveries(
    endpoint_id: uuid.UUID,
    session: SessionDep,
    principal: Admin,
    limit: LimitParam = 50,
    cursor: CursorParam = None,
) -> Page[DeliveryOut]:
    """The endpoint's deliveries, newest first, each with every attempt and its answer."""
    views = await webhooks.list_deliveries(
        session, principal, endpoint_id, cursor=cursor, limit=limit
    )
    return build_page(
        views,
        limit=limit,
        key=lambda v: (v.delivery.created_at, v.delivery.id),
        to_item=_delivery_out,
    )


@router.post(
    "/{endpoint_id}/deliveries/{delivery_id}/redeliver",
    response_model=DeliveryOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses=_PROBLEMS,
)
async def redeliver(
    endpoint_id: uuid.UUID,
    delivery_id: uuid.UUID,
    session: SessionDep,
    settings: SettingsDep,
    temporal: TemporalDep,
    principal: Admin,
) -> DeliveryOut:
    """Send the delivery again, with the usual retries; the log shows the new attempts."""
    delivery = await webhooks.redeliver(
        session, temporal, settings, principal, endpoint_id, delivery_id
    )
    views = await webhooks.list_deliveries(session, principal, endpoint_id, cursor=None, limit=200)
    match = next(v for v in views if v.delivery.id == delivery.id)
    return _delivery_out(match)
