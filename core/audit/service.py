"""`write_audit`: one audit_logs row per mutation, in the caller's transaction (so a use case
that fails leaves no trail of something that did not happen)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
from decimal import Decimal
from pathlib import PurePath
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from core.audit.origin import Origin
from core.principal import Principal
from db.models.operations import AuditLog
from forgeline.statuses.accounts import ActorType

REDACTED = "[redacted]"
# Values under keys containing these never reach the audit trail, whatever a caller passes.
_SECRET_MARKERS = ("password", "secret", "token", "hash", "api_key", "private_key")


def _encode(value: Any) -> Any:
    """JSON-ready data, as the API renders it (UUIDs and paths as strings, ISO instants,
    whole decimals as integers)."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, enum.Enum):
        return _encode(value.value)
    if isinstance(value, UUID | PurePath):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        exponent = value.as_tuple().exponent
        return int(value) if isinstance(exponent, int) and exponent >= 0 else float(value)
    if isinstance(value, BaseModel):
        return _encode(value.model_dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _encode(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(_encode(key)): _encode(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_encode(item) for item in value]
    if isinstance(value, bytes):
        return value.decode()
    return str(value)


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    encoded: dict[str, Any] = _encode(values)
    return encoded


def redact(values: dict[str, Any] | None) -> dict[str, Any] | None:
    if values is None:
        return None
    return {
        key: REDACTED if any(marker in key.lower() for marker in _SECRET_MARKERS) else value
        for key, value in _jsonable(values).items()
    }


def changed_fields(old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    old, new = old or {}, new or {}
    return sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))


async def write_audit(
    session: AsyncSession,
    principal: Principal | None,
    origin: Origin | None,
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
    row = AuditLog(
        **audit_values(
            principal,
            origin,
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
    )
    session.add(row)
    return row


def audit_values(
    principal: Principal | None,
    origin: Origin | None,
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
) -> dict[str, Any]:
    """The audit_logs row `write_audit` adds, as AuditLog attribute values (for bulk inserts)."""
    old_values, new_values = redact(old), redact(new)
    if principal is not None:
        actor_type = principal.actor_type
        actor_user_id = principal.user_id if actor_user_id is None else actor_user_id
        organization_id = organization_id or principal.organization_id
    else:
        actor_type = ActorType.USER if actor_user_id is not None else ActorType.SYSTEM
    origin = origin or Origin()
    return {
        "organization_id": organization_id,
        "actor_type": actor_type,
        "actor_user_id": actor_user_id,
        "actor_api_key_id": principal.api_key_id if principal is not None else None,
        "action": action,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "old_values": old_values,
        "new_values": new_values,
        "changed_fields": changed_fields(old_values, new_values),
        "request_id": origin.request_id,
        "correlation_id": origin.correlation_id,
        "ip_address": origin.ip,
        "user_agent": origin.user_agent,
        "severity": severity,
        "metadata_": _jsonable(metadata or {}),
    }
