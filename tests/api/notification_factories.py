"""Cross-tenant matrix factories of the notification routes (registered in tenancy_factories):
an in-app notification of the owning organization's key holder, a webhook endpoint (on a
loopback port nothing listens on) and one delivery to it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from db.models.accounts import Notification
from db.models.notifications import NotificationDelivery, NotificationEvent, WebhookEndpoint
from db.session import session_scope
from forgeline.crypto import encrypt_str
from forgeline.standard_webhooks import generate_secret


class Context(Protocol):
    session_maker: async_sessionmaker[AsyncSession]
    org: Any
    settings: Any

    async def ensure(self, param: str) -> uuid.UUID: ...


async def notification_factory(ctx: Context) -> uuid.UUID:
    notification_id = uuid.uuid4()
    async with session_scope(ctx.session_maker) as session:
        session.add(
            Notification(
                id=notification_id,
                user_id=ctx.org.user_id,
                organization_id=ctx.org.org_id,
                type="run.failed",
                title="Matrix run failed",
            )
        )
    return notification_id


async def endpoint_factory(ctx: Context) -> uuid.UUID:
    endpoint_id = uuid.uuid4()
    async with session_scope(ctx.session_maker) as session:
        session.add(
            WebhookEndpoint(
                id=endpoint_id,
                organization_id=ctx.org.org_id,
                url="http://127.0.0.1:9/matrix",
                secret_encrypted=encrypt_str(generate_secret(), ctx.settings),
                event_types=[],
            )
        )
    return endpoint_id


async def delivery_factory(ctx: Context) -> uuid.UUID:
    endpoint_id = await ctx.ensure("endpoint_id")
    delivery_id = uuid.uuid4()
    async with session_scope(ctx.session_maker) as session:
        event = NotificationEvent(
            id=uuid.uuid4(),
            organization_id=ctx.org.org_id,
            event_key=f"run.failed:{uuid.uuid4()}",
            event_type="run.failed",
            title="Matrix run failed",
            body="",
            occurred_at=datetime.now(UTC),
        )
        session.add(event)
        await session.flush()
        session.add(
            NotificationDelivery(
                id=delivery_id,
                organization_id=ctx.org.org_id,
                event_id=event.id,
                channel="webhook",
                endpoint_id=endpoint_id,
                target=str(endpoint_id),
                status="failed",
            )
        )
    return delivery_id


NOTIFICATION_FACTORIES = {
    "notification_id": notification_factory,
    "endpoint_id": endpoint_factory,
    "delivery_id": delivery_factory,
}
