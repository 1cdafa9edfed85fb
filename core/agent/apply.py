"""Apply an agent task's proposal (optimize_config, troubleshoot_failure, suggest_improvements)
as the next version of a pipeline of its project, refused when the pipeline changed after the
task started (the proposal was made against an older definition)."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.agent.generated_pipelines import proposal_document
from core.agent.service import get_task
from core.audit.origin import Origin
from core.audit.service import write_audit
from core.pipelines import versions
from core.principal import Principal
from db.models.agent import AgentTask
from db.models.pipeline_versions import PipelineVersion
from db.models.pipelines import Pipeline, PipelineRun
from forgeline.errors import Conflict, NotFound, ValidationFailed
from forgeline.pipeline_spec import PipelineProposal
from forgeline.statuses.agent import AgentTaskStatus, AgentTaskType

APPLICABLE = (
    AgentTaskType.OPTIMIZE_CONFIG,
    AgentTaskType.TROUBLESHOOT_FAILURE,
    AgentTaskType.SUGGEST_IMPROVEMENTS,
)


async def apply_proposal(
    session: AsyncSession,
    principal: Principal,
    origin: Origin,
    task_id: uuid.UUID,
    pipeline_id: uuid.UUID | None,
) -> PipelineVersion:
    """The version the proposal became (the same one when it was applied already)."""
    task = await get_task(session, principal, task_id)
    if task.task_type not in APPLICABLE:
        raise Conflict(f"a {task.task_type} task has no proposal to apply")
    if task.status != AgentTaskStatus.COMPLETED:
        raise Conflict(f"the task is {task.status}; only a completed task's proposal applies")
    raw = (task.output_data or {}).get("proposed_pipeline")
    if not raw:
        raise Conflict("the task proposed no pipeline change")
    proposal = PipelineProposal.model_validate(raw)
    target = pipeline_id or await _target(session, task, proposal)
    pipeline = await versions.lock(session, principal.organization_id, target)
    if pipeline.project_id != task.project_id:
        raise NotFound("pipeline not found in the task's project", resource_type="pipeline")
    applied = await session.scalar(
        select(PipelineVersion).where(
            PipelineVersion.pipeline_id == pipeline.id,
            PipelineVersion.agent_task_id == task.id,
            PipelineVersion.change == "update",
        )
    )
    if applied is not None:
        return applied
    await _unchanged_since(session, pipeline, task)
    document = proposal_document(task, proposal, pipeline.config or {})
    # The pipeline keeps its name: the proposal changes what it runs, not what it is called.
    document = document.model_copy(update={"name": pipeline.name})
    row = await versions.commit_change(
        session,
        pipeline,
        document,
        change="update",
        author=versions.Author(
            user_id=principal.user_id, api_key_id=principal.api_key_id, agent_task_id=task.id
        ),
    )
    await write_audit(
        session,
        principal,
        origin,
        "agent_task.applied",
        "pipeline",
        pipeline.id,
        None,
        {"agent_task_id": str(task.id), "version": row.version},
        metadata={"project_id": str(task.project_id)},
    )
    return row


async def _target(session: AsyncSession, task: AgentTask, proposal: PipelineProposal) -> uuid.UUID:
    """The failed run's pipeline (troubleshooting), else the project's live pipeline of the
    proposal's name, else its only live pipeline."""
    run_id = (task.input_data or {}).get("pipeline_run_id")
    if run_id:
        found: uuid.UUID | None = await session.scalar(
            select(PipelineRun.pipeline_id).where(
                PipelineRun.id == uuid.UUID(str(run_id)),
                PipelineRun.project_id == task.project_id,
            )
        )
        if found is not None:
            return found
    live = list(
        await session.execute(
            select(Pipeline.id, Pipeline.name).where(
                Pipeline.project_id == task.project_id, Pipeline.archived_at.is_(None)
            )
        )
    )
    named = [pid for pid, name in live if name == proposal.name]
    if len(named) == 1:
        return named[0]
    if len(live) == 1:
        return live[0][0]
    raise ValidationFailed(
        "say which pipeline the proposal applies to (pipeline_id)", field="pipeline_id"
    )


async def _unchanged_since(session: AsyncSession, pipeline: Pipeline, task: AgentTask) -> None:
    """409 when the pipeline has a version the task did not see (made after it started)."""
    seen = await session.scalar(
        select(func.max(PipelineVersion.version)).where(
            PipelineVersion.pipeline_id == pipeline.id,
            PipelineVersion.created_at <= task.created_at,
        )
    )
    if seen is None:
        recorded = await session.scalar(
            select(func.count()).where(PipelineVersion.pipeline_id == pipeline.id)
        )
        # No version before the task: a pipeline from before versions is judged by its last
        # update; one created after the task was never seen by it.
        stale = bool(recorded) or pipeline.updated_at > task.created_at
    else:
        stale = seen != pipeline.version
    if stale:
        raise versions.StaleVersion(
            f"the pipeline changed after the proposal was made (now version {pipeline.version})",
            current_version=pipeline.version,
        )
