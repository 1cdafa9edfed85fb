"""The HTTP side of the audit trail: a request's origin (client address, user agent, request
and correlation IDs) for core.audit.service.write_audit."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit import service
from core.audit.origin import Origin
from core.principal import Principal
from db.models.operations import AuditLog


def origin_of(request: Request | None) -> Origin:
    if request is None:
        return Origin()
    return Origin.of(
        ip=request.client.host if request.client is not None else None,
        user_agent=request.headers.get("user-agent"),
        request_id=getattr(request.state, "request_id", None),
        correlation_id=request.headers.get("x-correlation-id"),
    )


async def write_audit(
    session: AsyncSession,
    principal: Principal | None,
    request: Request | None,
    action: str,
    resource_type: str,
    resource_id: UUID | None,
    old: dict[str, Any] | None = None,
    new: dict[str, Any] | None = None,
    *,
    organization_id: UUID | None = None,
    actor_user_id: UUID | None = None,
    severity: str = "info",
    metadata: dict[str, Any] | None = None,
) -> AuditLog:
    """core.audit.service.write_audit with the request's origin (for endpoints that audit
    without a core use case)."""
    return await service.write_audit(
        session,
        principal,
        origin_of(request),
        action,
        resource_type,
        resource_id,
        old,
        new,
        organization_id=organization_id,
        actor_user_id=actor_user_id,
        severity=severity,
        metadata=metadata,
    )
