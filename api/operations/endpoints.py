"""GET /v1/workflow-executions, /v1/infrastructure-resources, /v1/projects/{id}/files: the
organization's operational records, newest first, keyset paginated."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel

from api.deps import ProjectsReader, SessionDep
from api.pagination import Page, PageDep, json_page
from core.operations import records
from core.projects.service import require_project
from forgeline.errors import ValidationFailed

router = APIRouter(tags=["operations"])

_ENTITY_HELP = "`<type>:<id>` with type one of " + ", ".join(f"`{t}`" for t in records.ENTITY_TYPES)
_STATUSES = ("running", "completed", "failed", "cancelled", "terminated", "timed_out")


class WorkflowExecutionOut(BaseModel):
    id: uuid.UUID
    kind: str
    workflow_type: str | None
    workflow_id: str
    run_id: str
    task_queue: str | None
    project_id: uuid.UUID | None
    resource_type: str | None
    resource_id: uuid.UUID | None
    status: str
    started_at: datetime
    closed_at: datetime | None
    error: str | None
    memo: dict[str, Any]


class InfrastructureResourceOut(BaseModel):
    id: uuid.UUID
    project_id: uuid.UUID | None
    environment_id: uuid.UUID | None
    deployment_id: uuid.UUID | None
    provider: str
    resource_type: str
    resource_id: str
    region: str | None
    status: str
    monthly_cost: Decimal | None
    currency: str
    created_at: datetime
    destroyed_at: datetime | None


class ProjectFileOut(BaseModel):
    id: uuid.UUID
    commit_sha: str
    path: str
    size_bytes: int
    sha256: str | None
    language: str | None
    is_manifest: bool
    created_at: datetime


def parse_entity(entity: str) -> tuple[str, uuid.UUID]:
    kind, sep, raw_id = entity.partition(":")
    resource_type = records.ENTITY_TYPES.get(kind)
    if not sep or resource_type is None:
        raise ValidationFailed(f"entity must be {_ENTITY_HELP}")
    try:
        return resource_type, uuid.UUID(raw_id)
    except ValueError:
        raise ValidationFailed("the entity's id is not a UUID") from None


def _fields(model: type[BaseModel]) -> Any:
    names = tuple(model.model_fields)
    return lambda row: {name: row[name] for name in names}


@router.get("/workflow-executions", response_model=Page[WorkflowExecutionOut])
async def list_workflow_executions(
    session: SessionDep,
    principal: ProjectsReader,
    page: PageDep,
    entity: Annotated[
        str | None, Query(max_length=100, description=_ENTITY_HELP, examples=["run:<uuid>"])
    ] = None,
    kind: Annotated[str | None, Query(max_length=64, pattern=r"^[a-z_\-]+$")] = None,
    status: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    resource_type, resource_id = parse_entity(entity) if entity is not None else (None, None)
    if status is not None and status not in _STATUSES:
        raise ValidationFailed(f"status must be one of {', '.join(_STATUSES)}")
    rows = await records.list_workflow_executions(
        session,
        principal.organization_id,
        records.ExecutionFilter(resource_type, resource_id, kind, status),
        cursor=page.cursor,
        limit=page.limit,
    )
    return json_page(
        rows,
        limit=page.limit,
        key=lambda r: (r["started_at"], r["id"]),
        to_data=_fields(WorkflowExecutionOut),
        page_model=Page[WorkflowExecutionOut],
    )


@router.get("/infrastructure-resources", response_model=Page[InfrastructureResourceOut])
async def list_infrastructure_resources(
    session: SessionDep,
    principal: ProjectsReader,
    page: PageDep,
    project_id: uuid.UUID | None = None,
    include_destroyed: bool = False,
) -> Response:
    if project_id is not None:
        await require_project(session, principal, project_id)
    rows = await records.list_infrastructure_resources(
        session,
        principal.organization_id,
        project_id=project_id,
        include_destroyed=include_destroyed,
        cursor=page.cursor,
        limit=page.limit,
    )
    return json_page(
        rows,
        limit=page.limit,
        to_data=_fields(InfrastructureResourceOut),
        page_model=Page[InfrastructureResourceOut],
    )


@router.get("/projects/{project_id}/files", response_model=Page[ProjectFileOut])
async def list_project_files(
    project_id: uuid.UUID,
    session: SessionDep,
    principal: ProjectsReader,
    page: PageDep,
    commit_sha: Annotated[str | None, Query(pattern=r"^[0-9a-f]{7,64}$")] = None,
) -> Response:
    await require_project(session, principal, project_id)
    rows = await records.list_project_files(
        session,
        principal.organization_id,
        project_id,
        commit_sha=commit_sha,
        cursor=page.cursor,
        limit=page.limit,
    )
    return json_page(
        rows,
        limit=page.limit,
        to_data=_fields(ProjectFileOut),
        page_model=Page[ProjectFileOut],
    )
