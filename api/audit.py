"""`write_audit`: one audit_logs row per mutation, in the caller's transaction (so a request that
fails leaves no trail of something that did not happen)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import Principal
from db.models.operations import AuditLog

REDACTED = "[redacted]"
# Values under keys containing these never reach the audit trail, whatever a caller passes.
_SECRET_MARKERS = ("password", "secret", "token", "hash", "api_key", "private_key")


def _redact(values: dict[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    encoded = jsonable_encoder(values)
    return {
        key: REDACTED if any(marker in key.lower() for marker in _SECRET_MARKERS) else value
        for key, value in encoded.items()
    }


def changed_fields(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    old, new = old or {}, new or {}
    return sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))


def _client_ip(request: Request | None) -> str | None:
    if request is None or request.client is None:
        return None
    return request.client.host[:45]


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
    """Add the row to `session` (flushed with the rest of the unit of work, never committed here).

    `organization_id` / `actor_user_id` are for actions without a principal yet (sign-up, login,
    password reset); otherwise they come from the principal.
    """
    old_values, new_values = _redact(old), _redact(new)
    if principal is not None:
        actor_type = principal.actor_type
        actor_user_id = principal.user_id if actor_user_id is None else actor_user_id
        organization_id = organization_id or principal.organization_id
    else:
        actor_type = "user" if actor_user_id is not None else "system"
    row = AuditLog(
        organization_id=organization_id,
        actor_type=actor_type,
        actor_user_id=actor_user_id,
        actor_api_key_id=principal.api_key_id if principal is not None else None,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        old_values=old_values,
        new_values=new_values,
        changed_fields=changed_fields(old_values, new_values),
        request_id=getattr(request.state, "request_id", None) if request is not None else None,
        correlation_id=(request.headers.get("x-correlation-id") or "")[:255] or None
        if request is not None
        else None,
        ip_address=_client_ip(request),
        user_agent=request.headers.get("user-agent") if request is not None else None,
        severity=severity,
        metadata_=jsonable_encoder(metadata or {}),
    )
    session.add(row)
    return row
