"""Pipeline runs: create (sequential numbers under concurrency), start, cancel, rerun, read.

Every lookup goes through the caller's organization: another tenant's pipeline or run is a 404.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from sqlalchemy import Select, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from api.runs.schemas import RunCreate, RunOut, StageExecutionOut
from db.models.pipelines import (
    Artifact,
    BuildSlotClaim,
    Pipeline,
    PipelineRun,
    PipelineStage,
    StageExecution,
    StageLogChunk,
)
from db.models.projects import Environment, Repository
from forgeline.crypto import encrypt_str
from forgeline.errors import Conflict, NotFound
from forgeline.search_attributes import forgeline_search_attributes
from forgeline.settings import PIPELINES_TASK_QUEUE, Settings
from workflows.runs_models import (
    PipelineRunInput,
    RunStatusView,
    build_slot_key,
    pipeline_run_workflow_id,
)

FINISHED = ("success", "failed", "cancelled")
ACTIVE = ("queued", "running")
# A status query waits for a workflow task: bounded, so a busy or absent worker cannot stall a
# log follower.
STATUS_QUERY_TIMEOUT = timedelta(seconds=5)
# The live view of GET /v1/runs/{id}: with no worker up a query waits for a workflow task that
# never comes; the projection answers instead after this long.
LIVE_QUERY_TIMEOUT = timedelta(seconds=2)


async def get_pipeline(
    session: AsyncSession, organization_id: uuid.UUID, pipeline_id: uuid.UUID
) -> Pipeline:
    pipeline = await session.scalar(
        select(Pipeline).where(
            Pipeline.id == pipeline_id, Pipeline.organization_id == organization_id
        )
    )
    if pipeline is None:
        raise NotFound("pipeline not found")
    return pipeline


def run_query(organization_id: uuid.UUID) -> Select[Any]:
    return select(PipelineRun).where(PipelineRun.organization_id == organization_id)


async def get_run(
    session: AsyncSession, organization_id: uuid.UUID, run_id: uuid.UUID
) -> PipelineRun:
    run: PipelineRun | None = await session.scalar(
        run_query(organization_id).where(PipelineRun.id == run_id)
    )
    if run is None:
        raise NotFound("run not found")
    return run


async def next_run_number(session: AsyncSession, pipeline_id: uuid.UUID) -> int:
    """The counter's row lock serialises concurrent starts: numbers are gapless and unique."""
    number = await session.scalar(
        update(Pipeline)
        .where(Pipeline.id == pipeline_id)
        .values(next_run_number=Pipeline.next_run_number + 1)
        .returning(Pipeline.next_run_number - 1)
    )
    assert number is not None
    return int(number)


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
    if pipeline.status in ("paused", "deprecated"):
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
        status="queued",
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
    if source.status not in FINISHED:
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
) -> WorkflowHandle[Any, Any]:
    """Start after the row is committed; starting twice is harmless."""
    wf_id = pipeline_run_workflow_id(str(run.id))
    try:
        return await client.start_workflow(
            "PipelineRunWorkflow",
            PipelineRunInput(
                run_id=str(run.id),
                pipeline_id=str(run.pipeline_id),
                project_id=str(run.project_id),
                organization_id=str(run.organization_id) if run.organization_id else None,
                heartbeat_seconds=heartbeat_seconds,
            ),
            id=wf_id,
            task_queue=task_queue,
            result_type=RunStatusView,
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
        return client.get_workflow_handle(wf_id, result_type=RunStatusView)


async def cancel_run(client: Client, run: PipelineRun) -> None:
    if run.status in FINISHED:
        raise Conflict("the run has already finished", run_status=run.status)
    try:
        await client.get_workflow_handle(pipeline_run_workflow_id(str(run.id))).cancel()
    except RPCError as exc:
        raise Conflict("the run's workflow is not running") from exc


async def queue_position(session: AsyncSession, run: PipelineRun) -> int | None:
    """Where a queued run waits in its organization's build-slot queue (1: next to start);
    None when it is not waiting for a slot."""
    if run.status != "queued" or run.workflow_id is None:
        return None
    key = build_slot_key(
        str(run.organization_id) if run.organization_id else None, str(run.project_id)
    )
    own = (
        select(BuildSlotClaim.seq)
        .where(
            BuildSlotClaim.organization_key == key,
            BuildSlotClaim.run_workflow_id == run.workflow_id,
            BuildSlotClaim.holding.is_(False),
        )
        .scalar_subquery()
    )
    ahead = await session.scalar(
        select(func.count())
        .select_from(BuildSlotClaim)
        .where(
            BuildSlotClaim.organization_key == key,
            BuildSlotClaim.holding.is_(False),
            BuildSlotClaim.seq <= own,
        )
    )
    return int(ahead) if ahead else None


async def live_status(client: Client, run: PipelineRun) -> dict[str, Any] | None:
    """The workflow's `status` query while it runs; None when unreachable or finished."""
    if run.status in FINISHED:
        return None
    try:
        handle = client.get_workflow_handle(pipeline_run_workflow_id(str(run.id)))
        view = await handle.query(
            "status", result_type=RunStatusView, rpc_timeout=LIVE_QUERY_TIMEOUT
        )
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
            "status", result_type=RunStatusView, rpc_timeout=STATUS_QUERY_TIMEOUT
        )
    except Exception:  # unknown, not an error: the caller falls back to Postgres
        return None
    return view.stages.get(stage) in ("pending", "queued", "running")


async def run_is_active(session: AsyncSession, run_id: uuid.UUID) -> bool:
    status = await session.scalar(select(PipelineRun.status).where(PipelineRun.id == run_id))
    return status in ACTIVE


async def require_pipeline_stage(session: AsyncSession, pipeline_id: uuid.UUID, stage: str) -> None:
    """404 unless the pipeline has a stage of that name."""
    found = await session.scalar(
        select(PipelineStage.id)
        .where(PipelineStage.pipeline_id == pipeline_id, PipelineStage.name == stage)
        .limit(1)
    )
    if found is None:
        raise NotFound(f"the run's pipeline has no stage {stage!r}")


async def next_attempt(
    session: AsyncSession, run_id: uuid.UUID, stage: str, after_attempt: int
) -> StageExecution | None:
    """The stage's first attempt after `after_attempt`, if one has started."""
    row: StageExecution | None = await session.scalar(
        select(StageExecution)
        .where(
            StageExecution.run_id == run_id,
            StageExecution.stage_name == stage,
            StageExecution.attempt > after_attempt,
        )
        .order_by(StageExecution.attempt)
        .limit(1)
    )
    return row


async def stage_executions(session: AsyncSession, run_id: uuid.UUID) -> list[StageExecution]:
    rows = await session.scalars(
        select(StageExecution)
        .where(StageExecution.run_id == run_id)
        .order_by(StageExecution.created_at, StageExecution.stage_name, StageExecution.attempt)
    )
    return list(rows)


async def reused_from_runs(
    session: AsyncSession, rows: list[StageExecution]
) -> dict[uuid.UUID, uuid.UUID]:
    """The run of each attempt that `rows` reuse, by that attempt's ID."""
    sources = {r.reused_from_id for r in rows if r.reused_from_id is not None}
    if not sources:
        return {}
    found = await session.execute(
        select(StageExecution.id, StageExecution.run_id).where(StageExecution.id.in_(sources))
    )
    return {execution_id: run_id for execution_id, run_id in found.tuples()}


def run_artifacts(run_id: uuid.UUID) -> Select[Artifact]:
    """A run's artifacts: its own, and those of the earlier attempts its reused stages stand for."""
    reused = select(StageExecution.reused_from_id).where(
        StageExecution.run_id == run_id, StageExecution.reused_from_id.is_not(None)
    )
    return select(Artifact).where(
        or_(Artifact.run_id == run_id, Artifact.stage_execution_id.in_(reused))
    )


async def stage_execution_for_log(
    session: AsyncSession, run_id: uuid.UUID, stage: str, attempt: int | None
) -> StageExecution:
    stmt = select(StageExecution).where(
        StageExecution.run_id == run_id, StageExecution.stage_name == stage
    )
    if attempt is not None:
        stmt = stmt.where(StageExecution.attempt == attempt)
    row = await session.scalar(stmt.order_by(StageExecution.attempt.desc()).limit(1))
    if row is None:
        raise NotFound("stage execution not found")
    return row


async def log_lines_after(
    session: AsyncSession, execution_id: uuid.UUID, after: int
) -> AsyncIterator[tuple[int, str]]:
    """(line number, text) of stored chunks with line numbers > `after` (-1 for all)."""
    chunks = await session.execute(
        select(StageLogChunk.first_line, StageLogChunk.line_count, StageLogChunk.content)
        .where(
            StageLogChunk.stage_execution_id == execution_id,
            StageLogChunk.first_line + StageLogChunk.line_count > after + 1,
        )
        .order_by(StageLogChunk.seq)
    )
    for first_line, count, content in chunks:
        # Stored lines hold no CR or LF: split at LF only (splitlines also cuts at FF, U+2028).
        for offset, line in enumerate(content.split("\n")[:count]):
            number = first_line + offset
            if number > after:
                yield number, line


def run_out(run: PipelineRun) -> RunOut:
    return RunOut(
        id=run.id,
        pipeline_id=run.pipeline_id,
        project_id=run.project_id,
        run_number=run.run_number,
        status=run.status,
        trigger=run.trigger,
        branch=run.branch,
        commit_sha=run.commit_sha,
        variable_names=list(run.env_var_names or []),
        rerun_of_id=run.rerun_of_id,
        reuse_from_run_id=run.reuse_from_run_id,
        workflow_id=run.workflow_id,
        queued_at=run.queued_at,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration_seconds=run.duration_seconds,
        error=run.error,
        created_at=run.created_at,
    )


def stage_out(row: StageExecution) -> StageExecutionOut:
    return StageExecutionOut(
        id=row.id,
        stage_name=row.stage_name,
        attempt=row.attempt,
        status=row.status,
        exit_code=row.exit_code,
        runner=row.runner,
        started_at=row.started_at,
        finished_at=row.finished_at,
        duration_ms=row.duration_ms,
        log_line_count=row.log_line_count,
        log_size_bytes=row.log_size_bytes,
        log_stored_externally=row.log_object_key is not None,
        reused_from_id=row.reused_from_id,
        skip_reason=row.skip_reason,
        error=row.error,
        warnings=list(row.warnings or []),
    )
