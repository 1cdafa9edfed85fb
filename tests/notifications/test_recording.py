"""Recording an event: once per key however often a retried activity records it, nothing at all
when the recording crashes midway, and only the channels the members' and the organization's
preferences (and the endpoints' event filters) ask for."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.notifications import preferences, recording
from db.models.accounts import Notification, OrganizationMember, User
from db.models.notifications import NotificationDelivery, NotificationEvent, WebhookEndpoint
from db.session import session_scope
from tests.factories import OrgFixture, make_org
from workflows.notifications_models import NotificationEvent as EventPayload


def event(
    org: OrgFixture, kind: str = "run.failed", actor: uuid.UUID | None = None
) -> EventPayload:
    return EventPayload(
        key=f"{kind}:{uuid.uuid4()}",
        event_type=kind,
        organization_id=str(org.org_id),
        title="Something happened",
        body="Details.",
        occurred_at=datetime.now(UTC),
        actor_user_id=str(actor) if actor else None,
    )


async def add_endpoint(
    sessions: async_sessionmaker[AsyncSession], org: OrgFixture, *types: str, enabled: bool = True
) -> uuid.UUID:
    endpoint_id = uuid.uuid4()
    async with session_scope(sessions) as session:
        session.add(
            WebhookEndpoint(
                id=endpoint_id,
                organization_id=org.org_id,
                url="http://127.0.0.1:9/x",
                secret_encrypted="unused",
                event_types=list(types),
                enabled=enabled,
            )
        )
    return endpoint_id


async def add_member(
    sessions: async_sessionmaker[AsyncSession], org: OrgFixture, role: str
) -> uuid.UUID:
    user_id = uuid.uuid4()
    async with session_scope(sessions) as session:
        session.add(User(id=user_id, email=f"{role}-{user_id.hex}@example.com", name=role))
        await session.flush()
        session.add(OrganizationMember(organization_id=org.org_id, user_id=user_id, role=role))
    return user_id


async def counts(sessions: async_sessionmaker[AsyncSession], key: str) -> tuple[int, int, int]:
    async with sessions() as session:
        event_id = await session.scalar(
            select(NotificationEvent.id).where(NotificationEvent.event_key == key)
        )
        events = 0 if event_id is None else 1
        deliveries = await session.scalar(
            select(func.count()).where(NotificationDelivery.event_id == event_id)
        )
        in_app = await session.scalar(
            select(func.count()).where(Notification.data["event_id"].astext == str(event_id))
        )
    return events, int(deliveries or 0), int(in_app or 0)


async def test_recorded_once_and_nothing_after_a_crash(
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    org = await make_org(session_maker)
    await add_endpoint(session_maker, org)
    payload = event(org)

    class Crash(Exception):
        pass

    # The worker dies after recording but before committing: nothing is left behind.
    with pytest.raises(Crash):
        async with session_scope(session_maker) as session:
            await recording.record_event(session, payload)
            raise Crash
    assert await counts(session_maker, payload.key) == (0, 0, 0)

    async with session_scope(session_maker) as session:
        first = await recording.record_event(session, payload)
    # The retry of an attempt whose answer was lost: the same deliveries, nothing new.
    async with session_scope(session_maker) as session:
        again = await recording.record_event(session, payload)
    assert again == first and {d.channel for d in first.deliveries} == {"webhook", "email"}
    assert await counts(session_maker, payload.key) == (1, 2, 1)


async def test_preferences_and_filters_decide_the_deliveries(
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    org = await make_org(session_maker)
    wanted = await add_endpoint(session_maker, org, "run.failed")
    await add_endpoint(session_maker, org, "deployment.live")  # another event type
    await add_endpoint(session_maker, org, enabled=False)
    async with session_scope(session_maker) as session:
        await preferences.save(
            session, org.org_id, org.user_id, {"run.failed": {"email": False, "in_app": False}}
        )
    async with session_scope(session_maker) as session:
        recorded = await recording.record_event(session, payload := event(org))
    async with session_maker() as session:
        rows = (
            await session.execute(
                select(NotificationDelivery.channel, NotificationDelivery.endpoint_id).where(
                    NotificationDelivery.event_id == uuid.UUID(recorded.event_id)
                )
            )
        ).all()
    assert rows == [("webhook", wanted)]
    assert await counts(session_maker, payload.key) == (1, 1, 0)

    async with session_scope(session_maker) as session:
        await preferences.save(session, org.org_id, None, {"run.failed": {"webhook": False}})
        quiet = await recording.record_event(session, event(org))
    assert quiet.deliveries == []


async def test_who_hears_of_what(session_maker: async_sessionmaker[AsyncSession]) -> None:
    org = await make_org(session_maker, role="member")  # owner + the member who acts
    admin = await add_member(session_maker, org, "admin")
    viewer = await add_member(session_maker, org, "viewer")
    async with session_maker() as session:
        # A run's news goes to whoever triggered it, else to the owners and admins.
        assert await recording.recipients(session, org.org_id, "run.failed", org.user_id) == [
            org.user_id
        ]
        assert set(await recording.recipients(session, org.org_id, "run.failed", None)) == {
            org.owner_user_id,
            admin,
        }
        # A deployment's: the owners and admins, and the member who asked for it.
        deployment = set(
            await recording.recipients(session, org.org_id, "deployment.failed", org.user_id)
        )
        assert deployment == {org.owner_user_id, admin, org.user_id}
        # Someone outside the organization named as the actor is nobody here.
        outsider = await recording.recipients(session, org.org_id, "run.failed", uuid.uuid4())
        assert viewer not in outsider and set(outsider) == {org.owner_user_id, admin}
