"""GET /v1/audit-logs: the organization's audit trail, newest first, keyset paginated."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import AfterValidator, BaseModel
from sqlalchemy import RowMapping

from api.deps import Admin, SessionDep
from api.pagination import (
    Page,
    PageDep,
    check_storable_datetime,
    json_page,
)
from core.audit import repository
from core.audit.repository import AuditFilter
from core.projects.models import QueryText

router = APIRouter(tags=["audit"])


class AuditLogOut(BaseModel):
    id: uuid.UUID
    actor_type: str
    actor_user_id: uuid.UUID | None
    actor_api_key_id: uuid.UUID | None
    action: str
    resource_type: str
    resource_id: uuid.UUID | None
    old_values: dict[str, Any] | None
    new_values: dict[str, Any] | None
    changed_fields: list[str]
    request_id: str | None
    ip_address: str | None
    user_agent: str | None
    severity: str
    metadata: dict[str, Any]
    created_at: datetime


def _storable_since(value: datetime | None) -> datetime | None:
    return None if value is None else check_storable_datetime(value)


def _data(row: RowMapping) -> dict[str, Any]:
    return dict(
        id=row["id"],
        actor_type=row["actor_type"],
        actor_user_id=row["actor_user_id"],
        actor_api_key_id=row["actor_api_key_id"],
        action=row["action"],
        resource_type=row["resource_type"],
        resource_id=row["resource_id"],
        old_values=row["old_values"],
        new_values=row["new_values"],
        changed_fields=list(row["changed_fields"] or []),
        request_id=row["request_id"],
        ip_address=row["ip_address"],
        user_agent=row["user_agent"],
        severity=row["severity"],
        metadata=row["metadata"] or {},
        created_at=row["created_at"],
    )


@router.get("/audit-logs", response_model=Page[AuditLogOut])
async def list_audit_logs(
    session: SessionDep,
    principal: Admin,
    page: PageDep,
    action: Annotated[QueryText | None, Query(max_length=100, examples=["project.created"])] = None,
    resource_type: Annotated[QueryText | None, Query(max_length=100)] = None,
    resource_id: uuid.UUID | None = None,
    actor: Annotated[uuid.UUID | None, Query(description="A user id or an API key id.")] = None,
    since: Annotated[
        datetime | None,
        Query(description="Only entries at or after."),
        AfterValidator(_storable_since),
    ] = None,
) -> Response:
    rows = await repository.list_entries(
        session,
        principal.organization_id,
        AuditFilter(
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            actor=actor,
            since=since,
        ),
        cursor=page.cursor,
        limit=page.limit,
    )
    return json_page(
        rows,
        limit=page.limit,
        to_data=_data,
        page_model=Page[AuditLogOut],
    )
