"""Tenant-scoped reads of operational records: the Temporal executions the product started
(`workflow_executions`), the cloud resources deployments created, and the files of a project's
analysed commits. Every query is bounded by the caller's organization."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import RowMapping, Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.queries import paginate
from db.models.deployments import InfrastructureResource
from db.models.operations import WorkflowExecution
from db.models.projects import Project, ProjectFile

# The entity names clients use -> workflow_executions.resource_type.
ENTITY_TYPES = {
    "run": "pipeline_run",
    "pipeline_run": "pipeline_run",
    "deployment": "deployment",
    "agent_task": "agent_task",
    "billing_period": "billing_period",
}


@dataclass(frozen=True)
class ExecutionFilter:
    resource_type: str | None = None
    resource_id: uuid.UUID | None = None
    kind: str | None = None
    status: str | None = None


async def list_workflow_executions(
    session: AsyncSession,
    organization_id: uuid.UUID,
    where: ExecutionFilter,
    *,
    cursor: str | None,
    limit: int,
) -> Sequence[RowMapping]:
    stmt: Select[Any] = select(*WorkflowExecution.__table__.c).where(
        WorkflowExecution.organization_id == organization_id
    )
    if where.resource_type is not None:
        stmt = stmt.where(WorkflowExecution.resource_type == where.resource_type)
    if where.resource_id is not None:
        stmt = stmt.where(WorkflowExecution.resource_id == where.resource_id)
    if where.kind is not None:
        stmt = stmt.where(WorkflowExecution.kind == where.kind)
    if where.status is not None:
        stmt = stmt.where(WorkflowExecution.status == where.status)
    stmt = paginate(
        stmt, WorkflowExecution.started_at, WorkflowExecution.id, cursor=cursor, limit=limit
    )
    rows: Sequence[RowMapping] = (await session.execute(stmt)).mappings().all()
    return rows


async def list_infrastructure_resources(
    session: AsyncSession,
    organization_id: uuid.UUID,
    *,
    project_id: uuid.UUID | None,
    include_destroyed: bool,
    cursor: str | None,
    limit: int,
) -> Sequence[RowMapping]:
    stmt: Select[Any] = select(*InfrastructureResource.__table__.c).where(
        InfrastructureResource.organization_id == organization_id
    )
    if project_id is not None:
        stmt = stmt.where(InfrastructureResource.project_id == project_id)
    if not include_destroyed:
        stmt = stmt.where(InfrastructureResource.destroyed_at.is_(None))
    stmt = paginate(
        stmt,
        InfrastructureResource.created_at,
        InfrastructureResource.id,
        cursor=cursor,
        limit=limit,
    )
    rows: Sequence[RowMapping] = (await session.execute(stmt)).mappings().all()
    return rows


async def list_project_files(
    session: AsyncSession,
    organization_id: uuid.UUID,
    project_id: uuid.UUID,
    *,
    commit_sha: str | None,
    cursor: str | None,
    limit: int,
) -> Sequence[RowMapping]:
    stmt: Select[Any] = (
        select(*ProjectFile.__table__.c)
        .join(Project, Project.id == ProjectFile.project_id)
        .where(Project.organization_id == organization_id, ProjectFile.project_id == project_id)
    )
    if commit_sha is not None:
        stmt = stmt.where(ProjectFile.commit_sha == commit_sha)
    stmt = paginate(stmt, ProjectFile.created_at, ProjectFile.id, cursor=cursor, limit=limit)
    rows: Sequence[RowMapping] = (await session.execute(stmt)).mappings().all()
    return rows
