"""Which channels carry which event types: defaults, overridden per member (in-app, e-mail) and
per organization (webhook endpoints, Slack). Stored as sparse `{event_type: {channel: bool}}`."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models.notifications import NotificationPreference
from forgeline.errors import ValidationFailed
from forgeline.statuses.notifications import (
    MemberChannel,
    NotificationEventType,
    OrganizationChannel,
)

Choices = dict[str, dict[str, bool]]

EVENT_TYPES = tuple(t.value for t in NotificationEventType)
MEMBER_CHANNELS = tuple(c.value for c in MemberChannel)
ORGANIZATION_CHANNELS = tuple(c.value for c in OrganizationChannel)
# A fixed build is good news, a live deployment is expected: in the inbox, not by e-mail.
QUIET_BY_EMAIL = {NotificationEventType.RUN_FIXED, NotificationEventType.DEPLOYMENT_LIVE}


def member_defaults() -> Choices:
    return {
        event: {
            MemberChannel.IN_APP: True,
            MemberChannel.EMAIL: event not in QUIET_BY_EMAIL,
        }
        for event in EVENT_TYPES
    }


def organization_defaults() -> Choices:
    return {event: dict.fromkeys(ORGANIZATION_CHANNELS, True) for event in EVENT_TYPES}


def merged(defaults: Choices, stored: Mapping[str, Any]) -> Choices:
    """Defaults with the stored overrides applied (unknown keys in old rows are ignored)."""
    result = {event: dict(channels) for event, channels in defaults.items()}
    for event, channels in stored.items():
        if event not in result or not isinstance(channels, dict):
            continue
        for channel, enabled in channels.items():
            if channel in result[event] and isinstance(enabled, bool):
                result[event][channel] = enabled
    return result


def validated(update: Mapping[str, Mapping[str, bool]], channels: tuple[str, ...]) -> Choices:
    """A change names known event types and channels only; anything else is a 422."""
    clean: Choices = {}
    for event, choice in update.items():
        if event not in EVENT_TYPES:
            raise ValidationFailed(
                f"unknown event type {event!r}; known: {', '.join(EVENT_TYPES)}", field=event
            )
        for channel, enabled in choice.items():
            if channel not in channels:
                raise ValidationFailed(
                    f"unknown channel {channel!r} here; known: {', '.join(channels)}",
                    field=f"{event}.{channel}",
                )
            clean.setdefault(event, {})[channel] = bool(enabled)
    return clean


def _owner_clause(organization_id: uuid.UUID, user_id: uuid.UUID | None) -> Any:
    clause = NotificationPreference.organization_id == organization_id
    if user_id is None:
        return clause & NotificationPreference.user_id.is_(None)
    return clause & (NotificationPreference.user_id == user_id)


async def stored(
    session: AsyncSession, organization_id: uuid.UUID, user_id: uuid.UUID | None
) -> dict[str, Any]:
    found = await session.scalar(
        select(NotificationPreference.settings).where(_owner_clause(organization_id, user_id))
    )
    return dict(found or {})


async def member_choices(
    session: AsyncSession, organization_id: uuid.UUID, user_id: uuid.UUID
) -> Choices:
    return merged(member_defaults(), await stored(session, organization_id, user_id))


async def organization_choices(session: AsyncSession, organization_id: uuid.UUID) -> Choices:
    return merged(organization_defaults(), await stored(session, organization_id, None))


async def save(
    session: AsyncSession,
    organization_id: uuid.UUID,
    user_id: uuid.UUID | None,
    change: Choices,
) -> None:
    """Merge `change` into the stored overrides (one row per member and per organization;
    concurrent saves serialize on the row lock)."""
    if not change:
        return
    index = ["organization_id", "user_id"] if user_id is not None else ["organization_id"]
    where = "user_id IS NOT NULL" if user_id is not None else "user_id IS NULL"
    await session.execute(
        insert(NotificationPreference)
        .values(organization_id=organization_id, user_id=user_id, settings={})
        .on_conflict_do_nothing(index_elements=index, index_where=text(where))
    )
    row = await session.scalar(
        select(NotificationPreference)
        .where(_owner_clause(organization_id, user_id))
        .with_for_update()
    )
    assert row is not None
    current: dict[str, Any] = {k: dict(v) for k, v in (row.settings or {}).items()}
    for event, channels in change.items():
        current.setdefault(event, {}).update(channels)
    row.settings = current
    await session.flush()
