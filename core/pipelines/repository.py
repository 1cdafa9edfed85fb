"""Queries of pipeline definitions and their stages, always through the organization."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from core.queries import paginate
from db.models.pipelines import Pipeline, PipelineStage
from db.models.projects import Project


async def get(
    session: AsyncSession,
    organization_id: uuid.UUID,
    pipeline_id: uuid.UUID,
    *,
    include_archived: bool = False,
) -> Pipeline | None:
    """The organization's pipeline; an archived one only when asked for."""
    stmt = select(Pipeline).where(
        Pipeline.id == pipeline_id, Pipeline.organization_id == organization_id
    )
    if not include_archived:
        stmt = stmt.where(Pipeline.archived_at.is_(None))
    found: Pipeline | None = (await session.execute(stmt)).scalar_one_or_none()
    return found


async def project_exists(
    session: AsyncSession, organization_id: uuid.UUID, project_id: uuid.UUID
) -> bool:
    found = await session.execute(
        select(Project.id).where(
            Project.id == project_id, Project.organization_id == organization_id
        )
    )
    return found.first() is not None


async def list_for_project(
    session: AsyncSession,
    organization_id: uuid.UUID,
    project_id: uuid.UUID,
    *,
    cursor: str | None,
    limit: int,
) -> Sequence[Pipeline]:
    """One page (limit + 1 rows, newest first) of the project's pipelines."""
    stmt = paginate(
        select(Pipeline).where(
            Pipeline.project_id == project_id,
            Pipeline.organization_id == organization_id,
            Pipeline.archived_at.is_(None),
        ),
        Pipeline.created_at,
        Pipeline.id,
        cursor=cursor,
        limit=limit,
    )
    pipelines: Sequence[Pipeline] = (await session.execute(stmt)).scalars().all()
    return pipelines


async def stages_of(session: AsyncSession, pipeline_id: uuid.UUID) -> list[PipelineStage]:
    rows = await session.execute(
        select(PipelineStage)
        .where(PipelineStage.pipeline_id == pipeline_id)
        .order_by(PipelineStage.position)
    )
    return list(rows.scalars().all())
