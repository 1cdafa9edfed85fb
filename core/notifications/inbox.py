"""A member's in-app notifications in the calling organization (and their account-wide ones):
keyset pages, the unread count, marking one or all read."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.principal import Principal
from core.queries import paginate
from db.models.accounts import ApiKey, Notification
from forgeline.errors import Forbidden, NotFound


@dataclass(frozen=True)
class InboxPage:
    rows: list[Notification]
    unread: int


async def member_of(session: AsyncSession, principal: Principal) -> uuid.UUID:
    """The member whose notifications the caller reads: the signed-in user, or the member who
    created the API key (a key acts with its creator's role, and so reads their inbox)."""
    if principal.user_id is not None:
        return principal.user_id
    creator = None
    if principal.api_key_id is not None:
        creator = await session.scalar(
            select(ApiKey.created_by_user_id).where(
                ApiKey.id == principal.api_key_id,
                ApiKey.organization_id == principal.organization_id,
            )
        )
    if creator is None:
        raise Forbidden("Notifications belong to a member; this API key acts for no member")
    return creator


async def _mine(session: AsyncSession, principal: Principal) -> ColumnElement[bool]:
    user_id = await member_of(session, principal)
    return (Notification.user_id == user_id) & (
        (Notification.organization_id == principal.organization_id)
        | Notification.organization_id.is_(None)
    )


async def unread_count(session: AsyncSession, principal: Principal) -> int:
    count = await session.scalar(
        select(func.count()).where(await _mine(session, principal), Notification.read_at.is_(None))
    )
    return int(count or 0)


async def list_page(
    session: AsyncSession,
    principal: Principal,
    *,
    cursor: str | None,
    limit: int,
    unread_only: bool = False,
) -> InboxPage:
    stmt = select(Notification).where(await _mine(session, principal))
    if unread_only:
        stmt = stmt.where(Notification.read_at.is_(None))
    stmt = paginate(stmt, Notification.created_at, Notification.id, cursor=cursor, limit=limit)
    rows = list((await session.scalars(stmt)).all())
    return InboxPage(rows=rows, unread=await unread_count(session, principal))


async def mark_read(
    session: AsyncSession, principal: Principal, notification_id: uuid.UUID
) -> Notification:
    """Idempotent: a notification read before keeps its first read time."""
    row = await session.scalar(
        select(Notification).where(
            await _mine(session, principal), Notification.id == notification_id
        )
    )
    if row is None:
        raise NotFound("Notification not found")
    if row.read_at is None:
        row.read_at = datetime.now(UTC)
        await session.flush()
    return row


async def mark_all_read(session: AsyncSession, principal: Principal) -> int:
    result = await session.execute(
        update(Notification)
        .where(await _mine(session, principal), Notification.read_at.is_(None))
        .values(read_at=func.now())
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)
