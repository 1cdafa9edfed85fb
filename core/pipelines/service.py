"""Pipeline definitions: tenant-scoped reads and export (YAML is rebuilt from the stored
stages when none was stored)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from core.pipelines import repository
from core.principal import Principal
from db.models.pipelines import Pipeline, PipelineStage
from forgeline.errors import NotFound, ValidationFailed
from forgeline.pipeline_export import ExportFormat, export_yaml
from forgeline.pipeline_spec import STAGE_ORDER, PipelineProposal, ProposedStage


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


def _command(step: Any) -> str:
    return str(step.get("run", "")) if isinstance(step, dict) else str(step)


def proposal_from_rows(pipeline: Pipeline, stages: list[PipelineStage]) -> PipelineProposal:
    """Rebuild the exportable model from stored rows (pipelines edited after generation)."""
    return PipelineProposal(
        name=pipeline.name,
        pipeline_type=pipeline.pipeline_type,  # type: ignore[arg-type]
        framework=str((pipeline.config or {}).get("framework") or "custom"),
        triggers=pipeline.triggers or {},
        stages=[
            ProposedStage(
                name=s.name,
                stage_type=s.stage_type if s.stage_type in STAGE_ORDER else "build",  # type: ignore[arg-type]
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
