"""The organization's webhook endpoints and Slack channel: create (the secret shown once),
change, delete, the delivery log of an endpoint, and redelivery on demand. Every URL passes the
outbound SSRF rules before it is stored; another organization's endpoint is a 404."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Select, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from core.audit.origin import Origin
from core.audit.service import write_audit
from core.notifications.emit import delivery_policy
from core.notifications.preferences import EVENT_TYPES
from core.principal import Principal
from core.queries import paginate
from db.models.notifications import (
    NotificationAttempt,
    NotificationChannelSettings,
    NotificationDelivery,
    NotificationEvent,
    WebhookEndpoint,
)
from forgeline.crypto import encrypt_str
from forgeline.errors import Conflict, NotFound, ValidationFailed
from forgeline.outbound_urls import check_outbound_url
from forgeline.search_attributes import forgeline_search_attributes
from forgeline.settings import Settings
from forgeline.standard_webhooks import generate_secret
from forgeline.statuses.notifications import DeliveryStatus
from forgeline.url_safety import Resolver
from workflows.notification import NotificationRedeliveryWorkflow
from workflows.notifications_models import RedeliveryInput, redelivery_workflow_id

MAX_ENDPOINTS = 20


def _event_types(wanted: Sequence[str]) -> list[str]:
    unknown = sorted(set(wanted) - set(EVENT_TYPES))
    if unknown:
        raise ValidationFailed(
            f"unknown event types {unknown}; known: {', '.join(EVENT_TYPES)}", field="event_types"
        )
    return sorted(set(wanted))


async def checked_url(settings: Settings, url: str, resolver: Resolver | None = None) -> str:
    target = await check_outbound_url(
        url, allow_loopback=settings.environment != "production", resolver=resolver
    )
    return target.url


async def get_endpoint(
    session: AsyncSession, principal: Principal, endpoint_id: uuid.UUID
) -> WebhookEndpoint:
    endpoint = await session.scalar(
        select(WebhookEndpoint).where(
            WebhookEndpoint.id == endpoint_id,
            WebhookEndpoint.organization_id == principal.organization_id,
        )
    )
    if endpoint is None:
        raise NotFound("Webhook endpoint not found")
    return endpoint


async def list_endpoints(session: AsyncSession, principal: Principal) -> list[WebhookEndpoint]:
    rows = await session.scalars(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.organization_id == principal.organization_id)
        .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
    )
    return list(rows.all())


async def create_endpoint(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    origin: Origin | None,
    *,
    url: str,
    description: str | None,
    event_types: Sequence[str],
    resolver: Resolver | None = None,
) -> tuple[WebhookEndpoint, str]:
    """The new endpoint and its secret (returned this once; stored encrypted)."""
    stored_url = await checked_url(settings, url, resolver)
    types = _event_types(event_types)
    if len(await list_endpoints(session, principal)) >= MAX_ENDPOINTS:
        raise Conflict(f"An organization has at most {MAX_ENDPOINTS} webhook endpoints")
    secret = generate_secret()
    endpoint = WebhookEndpoint(
        id=uuid.uuid4(),
        organization_id=principal.organization_id,
        url=stored_url,
        description=description,
        secret_encrypted=encrypt_str(secret, settings),
        event_types=types,
        enabled=True,
        created_by=principal.user_id,
    )
    session.add(endpoint)
    await session.flush()
    await write_audit(
        session, principal, origin, "webhook_endpoint.created", "webhook_endpoint", endpoint.id,
        new={"url": stored_url, "event_types": types},
    )  # fmt: skip
    return endpoint, secret


@dataclass(frozen=True)
class EndpointChange:
    url: str | None = None
    description: str | None = None
    event_types: Sequence[str] | None = None
    enabled: bool | None = None


async def update_endpoint(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    origin: Origin | None,
    endpoint_id: uuid.UUID,
    change: EndpointChange,
    resolver: Resolver | None = None,
) -> WebhookEndpoint:
    endpoint = await get_endpoint(session, principal, endpoint_id)
    old = {"url": endpoint.url, "event_types": endpoint.event_types, "enabled": endpoint.enabled}
    if change.url is not None:
        endpoint.url = await checked_url(settings, change.url, resolver)
    if change.description is not None:
        endpoint.description = change.description
    if change.event_types is not None:
        endpoint.event_types = _event_types(change.event_types)
    if change.enabled is not None:
        endpoint.enabled = change.enabled
    await session.flush()
    await write_audit(
        session, principal, origin, "webhook_endpoint.updated", "webhook_endpoint", endpoint.id,
        old=old,
        new={"url": endpoint.url, "event_types": endpoint.event_types, "enabled": endpoint.enabled},
    )  # fmt: skip
    return endpoint


async def rotate_secret(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    origin: Origin | None,
    endpoint_id: uuid.UUID,
) -> tuple[WebhookEndpoint, str]:
    """A new secret (returned this once); every delivery from now on is signed with it."""
    endpoint = await get_endpoint(session, principal, endpoint_id)
    secret = generate_secret()
    endpoint.secret_encrypted = encrypt_str(secret, settings)
    await session.flush()
    await write_audit(
        session, principal, origin, "webhook_endpoint.secret_rotated", "webhook_endpoint",
        endpoint.id,
    )  # fmt: skip
    return endpoint, secret


async def delete_endpoint(
    session: AsyncSession, principal: Principal, origin: Origin | None, endpoint_id: uuid.UUID
) -> None:
    endpoint = await get_endpoint(session, principal, endpoint_id)
    await session.delete(endpoint)
    await write_audit(
        session, principal, origin, "webhook_endpoint.deleted", "webhook_endpoint", endpoint_id,
        old={"url": endpoint.url},
    )  # fmt: skip


@dataclass(frozen=True)
class DeliveryView:
    delivery: NotificationDelivery
    event: NotificationEvent
    attempts: list[NotificationAttempt]


async def _attempts(
    session: AsyncSession, delivery_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[NotificationAttempt]]:
    found: dict[uuid.UUID, list[NotificationAttempt]] = {i: [] for i in delivery_ids}
    rows = await session.scalars(
        select(NotificationAttempt)
        .where(NotificationAttempt.delivery_id.in_(delivery_ids))
        .order_by(NotificationAttempt.created_at, NotificationAttempt.id)
    )
    for attempt in rows.all():
        found[attempt.delivery_id].append(attempt)
    return found


async def list_deliveries(
    session: AsyncSession,
    principal: Principal,
    endpoint_id: uuid.UUID,
    *,
    cursor: str | None,
    limit: int,
) -> list[DeliveryView]:
    """Newest first, limit + 1 rows (the extra one says there is a next page)."""
    await get_endpoint(session, principal, endpoint_id)
    stmt = (
        select(NotificationDelivery, NotificationEvent)
        .join(NotificationEvent, NotificationEvent.id == NotificationDelivery.event_id)
        .where(NotificationDelivery.endpoint_id == endpoint_id)
    )
    page = paginate(
        cast("Select[Any]", stmt),
        NotificationDelivery.created_at,
        NotificationDelivery.id,
        cursor=cursor,
        limit=limit,
    )
    rows: list[tuple[NotificationDelivery, NotificationEvent]] = [
        (d, e) for d, e in (await session.execute(page)).all()
    ]
    attempts = await _attempts(session, [d.id for d, _ in rows])
    return [DeliveryView(d, e, attempts[d.id]) for d, e in rows]


async def redeliver(
    session: AsyncSession,
    client: Client,
    settings: Settings,
    principal: Principal,
    endpoint_id: uuid.UUID,
    delivery_id: uuid.UUID,
) -> NotificationDelivery:
    """Send the delivery again (same webhook-id, so receivers can drop a duplicate) with the
    usual retries, in a workflow of its own."""
    await get_endpoint(session, principal, endpoint_id)
    delivery = await session.scalar(
        select(NotificationDelivery)
        .where(
            NotificationDelivery.id == delivery_id,
            NotificationDelivery.endpoint_id == endpoint_id,
            NotificationDelivery.organization_id == principal.organization_id,
        )
        .with_for_update()
    )
    if delivery is None:
        raise NotFound("Delivery not found")
    if delivery.status == DeliveryStatus.PENDING:
        # Its retries (or an earlier redelivery) are still going: one sender at a time.
        raise Conflict("The delivery is still being sent; redeliver it once it has ended")
    delivery.redeliveries += 1
    delivery.status = DeliveryStatus.PENDING
    await session.flush()
    # Committed before the workflow starts, so its first try finds the delivery pending.
    await session.commit()
    with contextlib.suppress(WorkflowAlreadyStartedError):
        await client.start_workflow(
            NotificationRedeliveryWorkflow.run,
            RedeliveryInput(delivery_id=str(delivery_id), policy=delivery_policy(settings)),
            id=redelivery_workflow_id(str(delivery_id), delivery.redeliveries),
            task_queue=settings.notifications_task_queue,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            search_attributes=forgeline_search_attributes(
                "notification", organization_id=principal.organization_id
            ),
        )
    return delivery


async def set_slack_url(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    origin: Origin | None,
    url: str | None,
    resolver: Resolver | None = None,
) -> None:
    """Set (or with None remove) the organization's Slack incoming webhook."""
    encrypted = encrypt_str(await checked_url(settings, url, resolver), settings) if url else None
    await session.execute(
        insert(NotificationChannelSettings)
        .values(organization_id=principal.organization_id, slack_webhook_url_encrypted=encrypted)
        .on_conflict_do_update(
            index_elements=["organization_id"],
            set_={"slack_webhook_url_encrypted": encrypted},
        )
    )
    await write_audit(
        session, principal, origin,
        "notification_channel.slack_set" if url else "notification_channel.slack_removed",
        "organization", principal.organization_id,
    )  # fmt: skip


async def slack_configured(session: AsyncSession, principal: Principal) -> bool:
    found = await session.scalar(
        select(NotificationChannelSettings.slack_webhook_url_encrypted).where(
            NotificationChannelSettings.organization_id == principal.organization_id
        )
    )
    return bool(found)
