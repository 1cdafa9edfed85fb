"""Pipeline definitions: tenant-scoped reads, edits of triggers and status (their Temporal
Schedules kept in step), deletion, and export (YAML is rebuilt from the stored stages when none
was stored)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from core.integrations.schedules import delete_schedules, sync_schedules
from core.integrations.triggers import Triggers
from core.pipelines import repository
from core.principal import Principal
from db.models.pipelines import Pipeline, PipelineRun, PipelineStage
from forgeline.errors import Conflict, NotFound, ValidationFailed
from forgeline.pipeline_export import ExportFormat, export_yaml
from forgeline.pipeline_spec import STAGE_ORDER, PipelineProposal, ProposedStage
from forgeline.settings import INTEGRATIONS_TASK_QUEUE
from forgeline.statuses.runs import ACTIVE_RUN_STATUSES


async def get_pipeline(
    session: AsyncSession, principal: Principal, pipeline_id: uuid.UUID
) -> Pipeline:
    pipeline = await repository.get(session, principal.organization_id, pipeline_id)
    if pipeline is None:
        raise NotFound("pipeline not found", resource_type="pipeline")
    return pipeline


async def stages_of(session: AsyncSession, pipeline_id: uuid.UUID) -> list[PipelineStage]:
    return await repository.stages_of(session, pipeline_id)


async def list_for_project(
    session: AsyncSession,
    principal: Principal,
    project_id: uuid.UUID,
    *,
    cursor: str | None,
    limit: int,
) -> Sequence[Pipeline]:
    """A page of the project's pipelines; another organization's project is a 404."""
    if not await repository.project_exists(session, principal.organization_id, project_id):
        raise NotFound("project not found", resource_type="project")
    return await repository.list_for_project(
        session, principal.organization_id, project_id, cursor=cursor, limit=limit
    )


async def _locked(session: AsyncSession, principal: Principal, pipeline_id: uuid.UUID) -> Pipeline:
    pipeline = await session.scalar(
        select(Pipeline)
        .where(Pipeline.id == pipeline_id, Pipeline.organization_id == principal.organization_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if pipeline is None:
        raise NotFound("pipeline not found", resource_type="pipeline")
    return pipeline


async def update_pipeline(
    session: AsyncSession,
    client: Client,
    principal: Principal,
    pipeline_id: uuid.UUID,
    *,
    triggers: Triggers | None = None,
    status: str | None = None,
    schedule_task_queue: str = INTEGRATIONS_TASK_QUEUE,
) -> Pipeline:
    """Store the triggers (normalized) and status, commit, then bring the Temporal Schedules in
    line with what is stored. The sync holds the row lock and reads the committed row, so of two
    concurrent edits the schedules end as the later one says; a failed sync is repaired by
    sending the edit again."""
    pipeline = await _locked(session, principal, pipeline_id)
    if triggers is not None:
        pipeline.triggers = triggers.normalized()
        # The YAML stored at generation has the old triggers: exports are rebuilt from now on.
        pipeline.github_actions_yaml = None
        pipeline.gitlab_ci_yaml = None
    if status is not None:
        pipeline.status = status
    if triggers is not None or status is not None:
        pipeline.version += 1
    await session.commit()
    pipeline = await _locked(session, principal, pipeline_id)
    await sync_schedules(client, pipeline, task_queue=schedule_task_queue)
    await session.commit()
    return pipeline


async def delete_pipeline(
    session: AsyncSession, client: Client, principal: Principal, pipeline_id: uuid.UUID
) -> None:
    """Schedules first (nothing fires for a pipeline about to go), then the row with its
    stages and finished runs. A pipeline with runs in progress is refused: cancel them first."""
    pipeline = await _locked(session, principal, pipeline_id)
    in_progress = await session.scalar(
        select(
            exists().where(
                PipelineRun.pipeline_id == pipeline.id,
                PipelineRun.status.in_(ACTIVE_RUN_STATUSES),
            )
        )
    )
    if in_progress:
        raise Conflict("the pipeline has runs in progress; cancel them first")
    await delete_schedules(client, pipeline.id)
    await session.execute(delete(Pipeline).where(Pipeline.id == pipeline.id))


def _command(step: Any) -> str:
    return str(step.get("run", "")) if isinstance(step, dict) else str(step)


def proposal_from_rows(pipeline: Pipeline, stages: list[PipelineStage]) -> PipelineProposal:
    """Rebuild the exportable model from stored rows (pipelines edited after generation)."""
    return PipelineProposal(
        name=pipeline.name,
        pipeline_type=pipeline.pipeline_type,
        framework=str((pipeline.config or {}).get("framework") or "custom"),
        triggers=pipeline.triggers or {},
        stages=[
            ProposedStage(
                name=s.name,
                stage_type=s.stage_type if s.stage_type in STAGE_ORDER else "build",
                commands=[c for c in (_command(x) for x in s.commands or []) if c] or ["true"],
                image=s.image,
                working_directory=s.working_directory or ".",
                conditions=s.conditions or {},
                timeout_seconds=max(30, s.timeout_seconds),
                depends_on=list(s.depends_on or []),
                cache_paths=list(s.cache_paths or []),
                artifact_paths=list(s.artifact_paths or []),
                env={str(k): str(v) for k, v in (s.environment or {}).items()},
            )
            for s in stages
        ],
    )


async def export(
    session: AsyncSession, principal: Principal, pipeline_id: uuid.UUID, fmt: ExportFormat
) -> str:
    pipeline = await get_pipeline(session, principal, pipeline_id)
    stored = pipeline.github_actions_yaml if fmt == "github-actions" else pipeline.gitlab_ci_yaml
    if stored:
        return stored
    stages = await stages_of(session, pipeline.id)
    if not stages:
        raise ValidationFailed("the pipeline has no stages to export")
    return export_yaml(proposal_from_rows(pipeline, stages), fmt)
