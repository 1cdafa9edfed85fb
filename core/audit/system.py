"""Audit entries of actions the system takes by itself (automatic rollback, scheduled billing,
reconciler corrections): actor `system`, written once per action and resource even when the
step that writes them is retried."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit.origin import SYSTEM
from core.audit.service import audit_values, write_audit
from db.models.operations import AuditLog


async def record_system_action(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID | None,
    action: str,
    resource_type: str,
    resource_id: uuid.UUID | None,
    new: dict[str, Any] | None = None,
    metadata: dict[str, Any] | None = None,
    severity: str = "info",
) -> bool:
    """Add the entry unless this action on this resource is already recorded (a retried
    activity). False when it was."""
    if resource_id is not None:
        seen = await session.execute(
            select(AuditLog.id)
            .where(
                AuditLog.resource_type == resource_type,
                AuditLog.resource_id == resource_id,
                AuditLog.action == action,
            )
            .limit(1)
        )
        if seen.first() is not None:
            return False
    await write_audit(
        session,
        None,
        SYSTEM,
        action,
        resource_type,
        resource_id,
        None,
        new,
        organization_id=organization_id,
        severity=severity,
        metadata=metadata,
    )
    return True


@dataclass(frozen=True)
class SystemAction:
    """An action the system took on no one resource (nothing to look up before writing it)."""

    organization_id: uuid.UUID | None
    action: str
    resource_type: str
    new: dict[str, Any] | None = None


async def record_system_actions(session: AsyncSession, actions: Sequence[SystemAction]) -> None:
    """The entries `record_system_action` writes for `actions` (resource_id None), in one INSERT
    instead of one per entry."""
    if not actions:
        return
    await session.execute(
        insert(AuditLog),
        [
            audit_values(
                None,
                SYSTEM,
                entry.action,
                entry.resource_type,
                None,
                None,
                entry.new,
                organization_id=entry.organization_id,
            )
            for entry in actions
        ],
    )
