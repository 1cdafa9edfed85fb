"""Queries of pipeline runs, their stage executions, log chunks, artifacts and build-slot queue
positions. Every lookup by ID goes through the caller's organization: another tenant's pipeline or
run is a NotFound."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import Select, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.queries import paginate
from db.models.pipelines import (
    Artifact,
    BuildSlotClaim,
    Pipeline,
    PipelineRun,
    PipelineStage,
    StageExecution,
    StageLogChunk,
)
from forgeline.errors import NotFound
from forgeline.statuses.runs import ACTIVE_RUN_STATUSES, RunStatus
from workflows.runs_models import build_slot_key


async def get_pipeline(
    session: AsyncSession,
    organization_id: uuid.UUID,
    pipeline_id: uuid.UUID,
    *,
    include_archived: bool = False,
) -> Pipeline:
    """The organization's pipeline; an archived one starts no run, its runs stay readable."""
    stmt = select(Pipeline).where(
        Pipeline.id == pipeline_id, Pipeline.organization_id == organization_id
    )
    if not include_archived:
        stmt = stmt.where(Pipeline.archived_at.is_(None))
    pipeline = await session.scalar(stmt)
    if pipeline is None:
        raise NotFound("pipeline not found")
    return pipeline


def run_query(organization_id: uuid.UUID) -> Select[Any]:
    return select(PipelineRun).where(PipelineRun.organization_id == organization_id)


async def list_runs(
    session: AsyncSession,
    organization_id: uuid.UUID,
    pipeline_id: uuid.UUID,
    *,
    status: RunStatus | None,
    cursor: str | None,
    limit: int,
) -> list[PipelineRun]:
    """One page of a pipeline's runs, newest first (limit + 1 rows: the extra one says whether a
    next page exists)."""
    await get_pipeline(session, organization_id, pipeline_id, include_archived=True)
    stmt = run_query(organization_id).where(PipelineRun.pipeline_id == pipeline_id)
    if status:
        stmt = stmt.where(PipelineRun.status == status)
    page = paginate(stmt, PipelineRun.created_at, PipelineRun.id, cursor=cursor, limit=limit)
    return list((await session.scalars(page)).all())


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


async def queue_position(session: AsyncSession, run: PipelineRun) -> int | None:
    """Where a queued run waits in its organization's build-slot queue (1: next to start);
    None when it is not waiting for a slot."""
    if run.status != RunStatus.QUEUED or run.workflow_id is None:
        return None
    key = build_slot_key(
        str(run.organization_id) if run.organization_id else None, str(run.project_id)
    )
    own = (
        await session.execute(
            select(BuildSlotClaim.queued_at, BuildSlotClaim.seq).where(
                BuildSlotClaim.organization_key == key,
                BuildSlotClaim.run_workflow_id == run.workflow_id,
                BuildSlotClaim.holding.is_(False),
            )
        )
    ).one_or_none()
    if own is None:
        return None
    # The queue's order (migration 0021): trigger time, then claim.
    ahead = await session.scalar(
        select(func.count())
        .select_from(BuildSlotClaim)
        .where(
            BuildSlotClaim.organization_key == key,
            BuildSlotClaim.holding.is_(False),
            tuple_(BuildSlotClaim.queued_at, BuildSlotClaim.seq) <= tuple_(own[0], own[1]),
        )
    )
    return int(ahead) if ahead else None


async def run_is_active(session: AsyncSession, run_id: uuid.UUID) -> bool:
    status = await session.scalar(select(PipelineRun.status).where(PipelineRun.id == run_id))
    return status in ACTIVE_RUN_STATUSES


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
    return {execution_id: run_id for execution_id, run_id in found}


def run_artifacts(run_id: uuid.UUID) -> Select[Artifact]:
    """A run's artifacts: its own, and those of the earlier attempts its reused stages stand for."""
    reused = select(StageExecution.reused_from_id).where(
        StageExecution.run_id == run_id, StageExecution.reused_from_id.is_not(None)
    )
    return select(Artifact).where(
        or_(Artifact.run_id == run_id, Artifact.stage_execution_id.in_(reused))
    )


async def list_artifacts(session: AsyncSession, run_id: uuid.UUID) -> list[Artifact]:
    rows = await session.scalars(run_artifacts(run_id).order_by(Artifact.name, Artifact.id))
    return list(rows)


async def get_artifact(
    session: AsyncSession, run_id: uuid.UUID, artifact_id: uuid.UUID
) -> Artifact:
    artifact: Artifact | None = await session.scalar(
        run_artifacts(run_id).where(Artifact.id == artifact_id)
    )
    if artifact is None:
        raise NotFound("artifact not found")
    return artifact


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
