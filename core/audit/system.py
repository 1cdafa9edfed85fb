"""Audit entries of actions the system takes by itself (automatic rollback, scheduled billing,
reconciler corrections): actor `system`, written once per action and resource even when the
step that writes them is retried."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit.origin import SYSTEM
from core.audit.service import write_audit
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
