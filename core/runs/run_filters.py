"""A project's runs filtered by status, branch, trigger and pipeline (the console's run list):
one page, newest first, always within the caller's organization."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.queries import paginate
from db.models.pipelines import RUN_TRIGGERS, Pipeline, PipelineRun
from forgeline.statuses.runs import RunStatus

RUN_STATUS_VALUES: tuple[str, ...] = tuple(RunStatus)
TRIGGER_VALUES: tuple[str, ...] = RUN_TRIGGERS


@dataclass(frozen=True)
class RunFilter:
    """Unknown values are dropped (an empty filter), never an error: the list is a view."""

    status: str | None = None
    branch: str | None = None
    trigger: str | None = None
    pipeline_id: uuid.UUID | None = None

    @classmethod
    def parse(
        cls, status: str, branch: str, trigger: str, pipeline_id: uuid.UUID | None
    ) -> RunFilter:
        return cls(
            status=status if status in RUN_STATUS_VALUES else None,
            branch=branch.strip()[:255] or None,
            trigger=trigger if trigger in TRIGGER_VALUES else None,
            pipeline_id=pipeline_id,
        )


async def project_runs(
    session: AsyncSession,
    organization_id: uuid.UUID,
    project_id: uuid.UUID,
    wanted: RunFilter,
    *,
    cursor: str | None,
    limit: int,
) -> list[tuple[PipelineRun, str]]:
    """(run, pipeline name) pairs; limit + 1 rows (the extra one says a next page exists)."""
    stmt = (
        select(PipelineRun, Pipeline.name)
        .join(Pipeline, Pipeline.id == PipelineRun.pipeline_id)
        .where(
            PipelineRun.organization_id == organization_id,
            PipelineRun.project_id == project_id,
        )
    )
    if wanted.status:
        stmt = stmt.where(PipelineRun.status == wanted.status)
    if wanted.branch:
        stmt = stmt.where(PipelineRun.branch == wanted.branch)
    if wanted.trigger:
        stmt = stmt.where(PipelineRun.trigger == wanted.trigger)
    if wanted.pipeline_id:
        stmt = stmt.where(PipelineRun.pipeline_id == wanted.pipeline_id)
    # paginate() takes one-entity selects by type; the extra column rides along.
    page = paginate(
        cast("Select[Any]", stmt),
        PipelineRun.created_at,
        PipelineRun.id,
        cursor=cursor,
        limit=limit,
    )
    return [(run, name) for run, name in (await session.execute(page)).all()]


async def project_branches(
    session: AsyncSession, organization_id: uuid.UUID, project_id: uuid.UUID, limit: int = 50
) -> list[str]:
    """Branches the project's runs were made on (for the filter's choices)."""
    rows = await session.scalars(
        select(PipelineRun.branch)
        .where(
            PipelineRun.organization_id == organization_id,
            PipelineRun.project_id == project_id,
            PipelineRun.branch.is_not(None),
        )
        .group_by(PipelineRun.branch)
        .order_by(PipelineRun.branch)
        .limit(limit)
    )
    return [b for b in rows.all() if b]
