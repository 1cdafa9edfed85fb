"""Recording an event: the event row (once per key), the in-app notifications of the members it
concerns, and one delivery per channel target their and the organization's preferences ask for.
One transaction: a retry finds either nothing or all of it."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.notifications import preferences
from db.models.accounts import Notification, OrganizationMember, UserPreference
from db.models.notifications import (
    NotificationChannelSettings,
    NotificationDelivery,
    NotificationEvent,
    WebhookEndpoint,
)
from forgeline.statuses.accounts import OrgRole
from forgeline.statuses.notifications import (
    DeliveryChannel,
    MemberChannel,
    NotificationEventType,
    OrganizationChannel,
)
from workflows.notifications_models import DeliveryRef, RecordedEvent
from workflows.notifications_models import NotificationEvent as EventPayload

RUN_EVENTS = {NotificationEventType.RUN_FAILED, NotificationEventType.RUN_FIXED}
SLACK_TARGET = "slack"


async def recipients(
    session: AsyncSession, organization_id: uuid.UUID, event_type: str, actor: uuid.UUID | None
) -> list[uuid.UUID]:
    """A run's news goes to whoever triggered it (the owners and admins when nobody did); the
    rest to the owners and admins, plus the member who caused it."""
    rows = (
        await session.execute(
            select(OrganizationMember.user_id, OrganizationMember.role).where(
                OrganizationMember.organization_id == organization_id
            )
        )
    ).all()
    members = {user_id: role for user_id, role in rows}
    if event_type in RUN_EVENTS and actor in members:
        return [actor]
    chosen = [u for u, role in members.items() if role in (OrgRole.OWNER, OrgRole.ADMIN)]
    if actor in members and actor not in chosen:
        chosen.append(actor)
    return sorted(chosen)


async def _email_off(session: AsyncSession, users: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    """Members who turned every e-mail off in their account preferences."""
    rows = await session.scalars(
        select(UserPreference.user_id).where(
            UserPreference.user_id.in_(users), UserPreference.email_notifications.is_(False)
        )
    )
    return set(rows.all())


async def _existing(session: AsyncSession, event_id: uuid.UUID) -> RecordedEvent:
    rows = (
        await session.execute(
            select(NotificationDelivery.id, NotificationDelivery.channel)
            .where(NotificationDelivery.event_id == event_id)
            .order_by(NotificationDelivery.id)
        )
    ).all()
    return RecordedEvent(
        event_id=str(event_id),
        deliveries=[DeliveryRef(delivery_id=str(i), channel=c) for i, c in rows],
    )


async def record_event(session: AsyncSession, event: EventPayload) -> RecordedEvent:
    organization_id = uuid.UUID(event.organization_id)
    event_id = await session.scalar(
        insert(NotificationEvent)
        .values(
            organization_id=organization_id,
            event_key=event.key,
            event_type=event.event_type,
            title=event.title[:255],
            body=event.body,
            data=dict(event.data),
            occurred_at=event.occurred_at,
        )
        .on_conflict_do_nothing(index_elements=["event_key"])
        .returning(NotificationEvent.id)
    )
    if event_id is None:
        existing = await session.scalar(
            select(NotificationEvent.id).where(NotificationEvent.event_key == event.key)
        )
        assert existing is not None
        return await _existing(session, existing)

    actor = uuid.UUID(event.actor_user_id) if event.actor_user_id else None
    users = await recipients(session, organization_id, event.event_type, actor)
    no_email = await _email_off(session, users)
    targets: list[tuple[DeliveryChannel, uuid.UUID | None, uuid.UUID | None, str]] = []
    for user_id in users:
        choice = (await preferences.member_choices(session, organization_id, user_id)).get(
            event.event_type, {}
        )
        if event.record_in_app and choice.get(MemberChannel.IN_APP):
            session.add(
                Notification(
                    user_id=user_id,
                    organization_id=organization_id,
                    type=event.event_type,
                    title=event.title[:255],
                    body=event.body,
                    data={**event.data, "event_id": str(event_id)},
                )
            )
        if choice.get(MemberChannel.EMAIL) and user_id not in no_email:
            targets.append((DeliveryChannel.EMAIL, None, user_id, str(user_id)))

    organization = (await preferences.organization_choices(session, organization_id)).get(
        event.event_type, {}
    )
    if organization.get(OrganizationChannel.WEBHOOK):
        endpoints = await session.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
                WebhookEndpoint.organization_id == organization_id,
                WebhookEndpoint.enabled.is_(True),
            )
        )
        for endpoint_id, wanted in endpoints.all():
            if not wanted or event.event_type in wanted:
                targets.append((DeliveryChannel.WEBHOOK, endpoint_id, None, str(endpoint_id)))
    if organization.get(OrganizationChannel.SLACK):
        slack = await session.scalar(
            select(NotificationChannelSettings.slack_webhook_url_encrypted).where(
                NotificationChannelSettings.organization_id == organization_id
            )
        )
        if slack:
            targets.append((DeliveryChannel.SLACK, None, None, SLACK_TARGET))

    deliveries = []
    for channel, endpoint_id, member_id, target in targets:
        delivery_id = uuid.uuid4()
        session.add(
            NotificationDelivery(
                id=delivery_id,
                organization_id=organization_id,
                event_id=event_id,
                channel=channel,
                endpoint_id=endpoint_id,
                user_id=member_id,
                target=target,
            )
        )
        deliveries.append(DeliveryRef(delivery_id=str(delivery_id), channel=channel))
    await session.flush()
    # In id order, as a retry reads them back.
    deliveries.sort(key=lambda ref: ref.delivery_id)
    return RecordedEvent(event_id=str(event_id), deliveries=deliveries)
