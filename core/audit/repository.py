"""Queries of the audit trail: an organization's entries, newest first, keyset paginated."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.queries import paginate
from db.models.operations import AuditLog

_COLUMNS = tuple(AuditLog.__table__.c)


@dataclass(frozen=True)
class AuditFilter:
    action: str | None = None
    resource_type: str | None = None
    resource_id: uuid.UUID | None = None
    actor: uuid.UUID | None = None  # a user ID or an API key ID
    since: datetime | None = None


async def list_entries(
    session: AsyncSession,
    organization_id: uuid.UUID,
    where: AuditFilter,
    *,
    cursor: str | None,
    limit: int,
) -> Sequence[RowMapping]:
    """One page (limit + 1 rows) of the organization's audit entries as Core rows."""
    stmt: Select[Any] = select(*_COLUMNS).where(AuditLog.organization_id == organization_id)
    if where.action is not None:
        stmt = stmt.where(AuditLog.action == where.action)
    if where.resource_type is not None:
        stmt = stmt.where(AuditLog.resource_type == where.resource_type)
    if where.resource_id is not None:
        stmt = stmt.where(AuditLog.resource_id == where.resource_id)
    if where.actor is not None:
        stmt = stmt.where(
            or_(AuditLog.actor_user_id == where.actor, AuditLog.actor_api_key_id == where.actor)
        )
    if where.since is not None:
        stmt = stmt.where(AuditLog.created_at >= where.since)
    stmt = paginate(stmt, AuditLog.created_at, AuditLog.id, cursor=cursor, limit=limit)
    rows: Sequence[RowMapping] = (await session.execute(stmt)).mappings().all()
    return rows
