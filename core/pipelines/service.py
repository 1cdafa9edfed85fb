"""Pipeline definitions: tenant-scoped reads, creation and edits (each a new version; the
Temporal Schedules kept in step), archiving, and export (YAML is rebuilt from the stored stages
when none was stored)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError
from sqlalchemy import exists, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client

from core.billing.limits import enforce_limit
from core.integrations.schedules import delete_schedules, sync_schedules
from core.integrations.triggers import Triggers
from core.pipelines import repository, versions
from core.pipelines.document import PipelineDocument, validate_document
from core.pipelines.stored import document_of, write_document
from core.pipelines.versions import Author
from core.principal import Principal
from db.models.pipelines import Pipeline, PipelineRun, PipelineStage
from forgeline.errors import Conflict, NotFound, ValidationFailed
from forgeline.pipeline_export import ExportFormat, export_yaml
from forgeline.pipeline_spec import STAGE_ORDER, PipelineProposal, ProposedStage
from forgeline.settings import INTEGRATIONS_TASK_QUEUE
from forgeline.stage_runtime import export_runtime
from forgeline.statuses.runs import ACTIVE_RUN_STATUSES


async def get_pipeline(
    session: AsyncSession,
    principal: Principal,
    pipeline_id: uuid.UUID,
    *,
    include_archived: bool = False,
) -> Pipeline:
    pipeline = await repository.get(
        session, principal.organization_id, pipeline_id, include_archived=include_archived
    )
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


def author_of(principal: Principal) -> Author:
    return Author(user_id=principal.user_id, api_key_id=principal.api_key_id)


async def _locked(session: AsyncSession, principal: Principal, pipeline_id: uuid.UUID) -> Pipeline:
    return await versions.lock(session, principal.organization_id, pipeline_id)


async def create_pipeline(
    session: AsyncSession,
    client: Client,
    principal: Principal,
    project_id: uuid.UUID,
    document: PipelineDocument,
    *,
    schedule_task_queue: str = INTEGRATIONS_TASK_QUEUE,
) -> Pipeline:
    """A new pipeline of the project from a document: version 1, its schedules created."""
    if not await repository.project_exists(session, principal.organization_id, project_id):
        raise NotFound("project not found", resource_type="project")
    await enforce_limit(
        session, principal.organization_id, "pipelines_per_project", project_id=project_id
    )
    pipeline = Pipeline(
        id=uuid.uuid4(),
        project_id=project_id,
        organization_id=principal.organization_id,
        created_by_user_id=principal.user_id,
        name=document.name,
        version=1,
        config={},
        triggers={},
    )
    session.add(pipeline)
    await session.flush()
    await write_document(session, pipeline, [], document)
    await versions.record_initial(session, pipeline, author_of(principal))
    await session.commit()
    return await _sync(session, client, principal, pipeline.id, schedule_task_queue)


async def _sync(
    session: AsyncSession,
    client: Client,
    principal: Principal,
    pipeline_id: uuid.UUID,
    schedule_task_queue: str,
) -> Pipeline:
    """After a committed change: the Temporal Schedules as the committed row says. The sync
    holds the row lock and reads the committed row, so of two concurrent edits the schedules
    end as the later one says; a failed sync is repaired by sending the edit again."""
    pipeline = await _locked(session, principal, pipeline_id)
    await sync_schedules(client, pipeline, task_queue=schedule_task_queue)
    await session.commit()
    return pipeline


async def put_document(
    session: AsyncSession,
    client: Client,
    principal: Principal,
    pipeline_id: uuid.UUID,
    document: PipelineDocument,
    *,
    expected_version: int | None = None,
    schedule_task_queue: str = INTEGRATIONS_TASK_QUEUE,
) -> int:
    """Replace the whole definition: the next version (a rename when only the name changed).
    The version the document is now (the current one when nothing changed)."""
    pipeline = await _locked(session, principal, pipeline_id)
    stages = await stages_of(session, pipeline.id)
    before = document_of(pipeline, stages)
    if before == document and expected_version in (None, pipeline.version):
        return pipeline.version  # nothing changed: no version of nothing
    renamed_only = before.model_copy(update={"name": document.name}) == document
    written = await versions.commit_change(
        session,
        pipeline,
        document,
        change="rename" if renamed_only else "update",
        author=author_of(principal),
        expected_version=expected_version,
    )
    await session.commit()
    await _sync(session, client, principal, pipeline_id, schedule_task_queue)
    return written.version


async def update_pipeline(
    session: AsyncSession,
    client: Client,
    principal: Principal,
    pipeline_id: uuid.UUID,
    *,
    triggers: Triggers | None = None,
    status: str | None = None,
    name: str | None = None,
    variables: dict[str, str] | None = None,
    expected_version: int | None = None,
    schedule_task_queue: str = INTEGRATIONS_TASK_QUEUE,
) -> Pipeline:
    """Replace the triggers, name and/or variables (a new version) and/or the status (not part
    of the definition: no version), commit, then bring the Temporal Schedules in line."""
    pipeline = await _locked(session, principal, pipeline_id)
    document: PipelineDocument | None = None
    change = "update"
    if triggers is not None or name is not None or variables is not None:
        before = document_of(pipeline, await stages_of(session, pipeline.id))
        update: dict[str, Any] = {}
        if triggers is not None:
            update["triggers"] = triggers
        if name is not None:
            update["name"] = name
        if variables is not None:
            update["variables"] = variables
        edited = validate_document(
            before.model_copy(update=update).model_dump(mode="json", exclude_defaults=True)
        )
        if edited != before:  # the same values again are no new version
            document = edited
            change = "rename" if set(update) == {"name"} else "update"
    if document is not None:
        await versions.commit_change(
            session,
            pipeline,
            document,
            change=change,
            author=author_of(principal),
            expected_version=expected_version,
        )
    elif expected_version is not None and expected_version != pipeline.version:
        raise versions.StaleVersion(
            f"the pipeline is at version {pipeline.version}, not {expected_version}",
            current_version=pipeline.version,
        )
    if status is not None:
        pipeline.status = status
    await session.commit()
    return await _sync(session, client, principal, pipeline_id, schedule_task_queue)


async def delete_pipeline(
    session: AsyncSession, client: Client, principal: Principal, pipeline_id: uuid.UUID
) -> None:
    """Archive: schedules first (nothing fires for a pipeline about to go), then the pipeline
    leaves lists and reads and starts no run; its runs, stages and versions are kept. A
    pipeline with runs in progress is refused: cancel them first."""
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
    pipeline.archived_at = func.now()
    # Deprecated: forge events and schedules start nothing for it either.
    pipeline.status = "deprecated"


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
            _proposed_stage(
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
                **export_runtime(s.runtime or {}),
            )
            for s in stages
        ],
    )


def _proposed_stage(**fields: Any) -> ProposedStage:
    """The stage with its services and matrix, or without the matrix when the export's form
    cannot hold it (more axes or values than GitHub Actions' starter matrices)."""
    try:
        return ProposedStage(**fields)
    except ValidationError:
        return ProposedStage(**{k: v for k, v in fields.items() if k != "matrix"})


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
