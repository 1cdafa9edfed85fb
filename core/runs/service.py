"""Pipeline runs: create (sequential numbers under concurrency), start, cancel, rerun, and the
workflow's live view of a run."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from core.audit.origin import Origin
from core.audit.service import write_audit
from core.principal import Principal
from core.runs.repository import get_pipeline, get_run, next_run_number
from core.runs.schemas import RunCreate
from db.models.pipelines import PipelineRun
from db.models.projects import Environment, Repository
from forgeline.crypto import encrypt_str
from forgeline.errors import Conflict, NotFound
from forgeline.search_attributes import forgeline_search_attributes
from forgeline.settings import PIPELINES_TASK_QUEUE, Settings
from forgeline.statuses.runs import (
    FINISHED_RUN_STATUSES,
    UNFINISHED_STAGE_STATUSES,
    RunStatus,
)
from workflows.pipeline_run import PipelineRunWorkflow
from workflows.runs_models import PipelineRunInput, RunStatusView, pipeline_run_workflow_id

# A pipeline in these statuses starts no run.
PIPELINE_NOT_RUNNABLE = ("paused", "deprecated")
# A status query waits for a workflow task: bounded, so a busy or absent worker cannot stall a
# log follower.
STATUS_QUERY_TIMEOUT = timedelta(seconds=5)
# The live view of a run: with no worker up a query waits for a workflow task that never comes;
# the projection answers instead after this long.
LIVE_QUERY_TIMEOUT = timedelta(seconds=2)


async def create_run(
    session: AsyncSession,
    settings: Settings,
    *,
    organization_id: uuid.UUID,
    pipeline_id: uuid.UUID,
    body: RunCreate,
    user_id: uuid.UUID | None = None,
    api_key_id: uuid.UUID | None = None,
    rerun_of: PipelineRun | None = None,
    reuse_results: bool = False,
) -> PipelineRun:
    pipeline = await get_pipeline(session, organization_id, pipeline_id)
    if pipeline.status in PIPELINE_NOT_RUNNABLE:
        raise Conflict(f"pipeline is {pipeline.status}", pipeline_status=pipeline.status)
    encrypted = (
        encrypt_str(json.dumps([v.model_dump() for v in body.variables]), settings)
        if body.variables
        else None
    )
    metadata: dict[str, Any] = {}
    if body.changed_paths is not None:
        metadata["changed_paths"] = body.changed_paths
    if body.environment_id is not None:
        environment = await session.scalar(
            select(Environment.id).where(
                Environment.id == body.environment_id,
                Environment.project_id == pipeline.project_id,
            )
        )
        if environment is None:
            raise NotFound("environment not found")
        metadata["environment_id"] = str(body.environment_id)
    branch = body.branch
    if branch is None and body.commit_sha is None:
        # Like a push to the default branch: branch conditions (deploy on main) then apply.
        branch = await session.scalar(
            select(Repository.default_branch).where(Repository.project_id == pipeline.project_id)
        )
    run = PipelineRun(
        id=uuid.uuid4(),
        pipeline_id=pipeline.id,
        organization_id=organization_id,
        project_id=pipeline.project_id,
        run_number=await next_run_number(session, pipeline.id),
        status=RunStatus.QUEUED,
        trigger=body.trigger,
        branch=branch,
        commit_sha=body.commit_sha.lower() if body.commit_sha else None,
        env_var_names=[v.name for v in body.variables],
        env_vars_encrypted=encrypted,
        rerun_of_id=rerun_of.id if rerun_of else None,
        reuse_from_run_id=rerun_of.id if rerun_of and reuse_results else None,
        triggered_by_user_id=user_id,
        triggered_by_api_key_id=api_key_id,
        metadata_=metadata,
        pipeline_version=pipeline.version,
    )
    run.workflow_id = pipeline_run_workflow_id(str(run.id))
    session.add(run)
    await session.flush()
    return run


async def rerun(
    session: AsyncSession,
    settings: Settings,
    *,
    organization_id: uuid.UUID,
    run_id: uuid.UUID,
    from_failed: bool,
    user_id: uuid.UUID | None = None,
    api_key_id: uuid.UUID | None = None,
) -> PipelineRun:
    """A new run of the same commit and variables; `from_failed` reuses succeeded stages."""
    source = await get_run(session, organization_id, run_id)
    if source.status not in FINISHED_RUN_STATUSES:
        raise Conflict("the run has not finished yet", run_status=source.status)
    body = RunCreate(trigger="api", branch=source.branch, commit_sha=source.commit_sha)
    run = await create_run(
        session,
        settings,
        organization_id=organization_id,
        pipeline_id=source.pipeline_id,
        body=body,
        user_id=user_id,
        api_key_id=api_key_id,
        rerun_of=source,
        reuse_results=from_failed,
    )
    # Same variables, still encrypted: they never pass through the request.
    run.env_var_names = list(source.env_var_names)
    run.env_vars_encrypted = source.env_vars_encrypted
    run.metadata_ = dict(source.metadata_ or {}) | {"rerun_of": str(source.id)}
    await session.flush()
    return run


async def start_run_workflow(
    client: Client,
    run: PipelineRun,
    *,
    task_queue: str = PIPELINES_TASK_QUEUE,
    heartbeat_seconds: float = 5.0,
) -> WorkflowHandle[PipelineRunWorkflow, RunStatusView]:
    """Start after the row is committed; starting twice is harmless."""
    wf_id = pipeline_run_workflow_id(str(run.id))
    try:
        return await client.start_workflow(
            PipelineRunWorkflow.run,
            PipelineRunInput(
                run_id=str(run.id),
                pipeline_id=str(run.pipeline_id),
                project_id=str(run.project_id),
                organization_id=str(run.organization_id) if run.organization_id else None,
                heartbeat_seconds=heartbeat_seconds,
            ),
            id=wf_id,
            task_queue=task_queue,
            search_attributes=forgeline_search_attributes(
                "pipeline_run",
                organization_id=run.organization_id or None,
                project_id=run.project_id,
            ),
            memo={
                "pipeline_id": str(run.pipeline_id),
                "run_number": run.run_number,
                "branch": run.branch,
                "commit_sha": run.commit_sha,
            },
        )
    except WorkflowAlreadyStartedError:
        return client.get_workflow_handle_for(PipelineRunWorkflow.run, wf_id)


async def cancel_run(client: Client, run: PipelineRun) -> None:
    if run.status in FINISHED_RUN_STATUSES:
        raise Conflict("the run has already finished", run_status=run.status)
    try:
        await client.get_workflow_handle(pipeline_run_workflow_id(str(run.id))).cancel()
    except RPCError as exc:
        raise Conflict("the run's workflow is not running") from exc


async def live_status(client: Client, run: PipelineRun) -> dict[str, Any] | None:
    """The workflow's `status` query while it runs; None when unreachable or finished."""
    if run.status in FINISHED_RUN_STATUSES:
        return None
    try:
        handle = client.get_workflow_handle(pipeline_run_workflow_id(str(run.id)))
        view = await handle.query(PipelineRunWorkflow.query_status, rpc_timeout=LIVE_QUERY_TIMEOUT)
    except Exception:  # a live view is a bonus; Postgres stays the answer
        return None
    dumped: dict[str, Any] = view.model_dump(mode="json")
    return dumped


async def stage_still_running(client: Client, run_id: uuid.UUID, stage: str) -> bool | None:
    """Whether the workflow still counts the stage as running (retries pending included);
    None when the workflow cannot answer."""
    try:
        handle = client.get_workflow_handle(pipeline_run_workflow_id(str(run_id)))
        view = await handle.query(
            PipelineRunWorkflow.query_status, rpc_timeout=STATUS_QUERY_TIMEOUT
        )
    except Exception:  # unknown, not an error: the caller falls back to Postgres
        return None
    return view.stages.get(stage) in UNFINISHED_STAGE_STATUSES


async def start_committed_run(session: AsyncSession, client: Client, run: PipelineRun) -> None:
    """Commit the run's row, then start its workflow. A start that fails closes the row (it
    would stay queued for ever) and raises again."""
    await session.commit()
    try:
        await start_run_workflow(client, run)
    except Exception as exc:
        run.status = RunStatus.FAILED
        run.error = f"could not start the run: {type(exc).__name__}"
        await session.commit()
        raise RunNotStarted(str(run.id)) from exc


async def trigger_as(
    session: AsyncSession,
    settings: Settings,
    temporal: Client,
    principal: Principal,
    origin: Origin,
    pipeline_id: uuid.UUID,
    body: RunCreate,
) -> PipelineRun:
    """A run the caller asked for: created, audited, committed and started (RunNotStarted when
    Temporal did not take it)."""
    run = await create_run(
        session,
        settings,
        organization_id=principal.organization_id,
        pipeline_id=pipeline_id,
        body=body,
        user_id=principal.user_id,
        api_key_id=principal.api_key_id,
    )
    new = {"run_number": run.run_number, "branch": run.branch, "commit_sha": run.commit_sha}
    return await _audit_and_start(
        session, temporal, principal, origin, run, "pipeline_run.trigger", new
    )


async def rerun_as(
    session: AsyncSession,
    settings: Settings,
    temporal: Client,
    principal: Principal,
    origin: Origin,
    run_id: uuid.UUID,
    *,
    from_failed: bool,
) -> PipelineRun:
    """The caller's rerun of a finished run (see `rerun`), audited, committed and started."""
    run = await rerun(
        session,
        settings,
        organization_id=principal.organization_id,
        run_id=run_id,
        from_failed=from_failed,
        user_id=principal.user_id,
        api_key_id=principal.api_key_id,
    )
    new = {"rerun_of": str(run_id), "from": "failed" if from_failed else "start"}
    return await _audit_and_start(
        session, temporal, principal, origin, run, "pipeline_run.rerun", new
    )


async def _audit_and_start(
    session: AsyncSession,
    temporal: Client,
    principal: Principal,
    origin: Origin,
    run: PipelineRun,
    action: str,
    new: dict[str, Any],
) -> PipelineRun:
    """The audit record of a run the caller asked for, then the run committed and started."""
    await write_audit(session, principal, origin, action, "pipeline_run", run.id, new=new)
    await start_committed_run(session, temporal, run)
    return run


class RunNotStarted(Exception):
    """Temporal did not take the run's workflow; the run was closed as failed."""
