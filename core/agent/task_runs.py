"""The verification runs of a generating agent task: the runs of the pipelines it generated."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db.models.pipelines import Pipeline, PipelineRun


async def verification_runs(
    session: AsyncSession, org_id: uuid.UUID, task_id: uuid.UUID, limit: int = 20
) -> Sequence[PipelineRun]:
    """The task's verification runs in the caller's organization, oldest first."""
    rows = await session.scalars(
        select(PipelineRun)
        .join(Pipeline, Pipeline.id == PipelineRun.pipeline_id)
        .where(
            Pipeline.generated_by_task_id == task_id,
            Pipeline.organization_id == org_id,
            PipelineRun.trigger == "verification",
        )
        .order_by(PipelineRun.created_at, PipelineRun.run_number)
        .limit(limit)
    )
    return rows.all()
