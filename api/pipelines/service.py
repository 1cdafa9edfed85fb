"""Pipeline reads (tenant-scoped) and export; YAML is rebuilt from stages when not stored."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import Principal
from api.pipelines.schemas import PipelineDetail, PipelineStageOut
from db.models.pipelines import Pipeline, PipelineStage
from forgeline.errors import NotFound, ValidationFailed
from forgeline.pipeline_export import ExportFormat, export_yaml
from workflows.agent_models import STAGE_ORDER, PipelineProposal, ProposedStage


async def get_pipeline(
    session: AsyncSession, principal: Principal, pipeline_id: uuid.UUID
) -> Pipeline:
    pipeline = (
        await session.execute(
            select(Pipeline).where(
                Pipeline.id == pipeline_id, Pipeline.organization_id == principal.organization_id
            )
        )
    ).scalar_one_or_none()
    if pipeline is None:
        raise NotFound("pipeline not found", resource_type="pipeline")
    return pipeline


async def stages_of(session: AsyncSession, pipeline_id: uuid.UUID) -> list[PipelineStage]:
    rows = await session.execute(
        select(PipelineStage)
        .where(PipelineStage.pipeline_id == pipeline_id)
        .order_by(PipelineStage.position)
    )
    return list(rows.scalars().all())


def detail(pipeline: Pipeline, stages: list[PipelineStage]) -> PipelineDetail:
    columns = {c.key: getattr(pipeline, c.key) for c in Pipeline.__table__.columns}
    out = PipelineDetail.model_validate(columns)
    out.stages = [PipelineStageOut.model_validate(s) for s in stages]
    return out


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
