"""Queries of the agent domain: tasks and their history, the project's repository, failed runs'
logs, the file index. Writes of the workflow's read model live in projections.py."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.queries import paginate
from db.models.agent import AgentExecution, AgentStep, AgentTask, ToolInvocation
from db.models.pipelines import PipelineRun, StageExecution, StageLogChunk
from db.models.projects import Environment, Project, ProjectFile, Repository
from forgeline.statuses.agent import OPEN_TASK_STATUSES, AgentTaskStatus

INDEX_BATCH = 1000


async def project_in_org(
    session: AsyncSession, organization_id: uuid.UUID, project_id: uuid.UUID
) -> Project | None:
    return (
        await session.execute(
            select(Project).where(
                Project.id == project_id, Project.organization_id == organization_id
            )
        )
    ).scalar_one_or_none()


async def project_name(session: AsyncSession, project_id: uuid.UUID) -> str | None:
    row = await session.execute(select(Project.name).where(Project.id == project_id))
    return row.scalar_one_or_none()


async def repository_of(session: AsyncSession, project_id: uuid.UUID) -> Repository | None:
    return (
        await session.execute(select(Repository).where(Repository.project_id == project_id))
    ).scalar_one_or_none()


async def run_in_project(session: AsyncSession, run_id: uuid.UUID, project_id: uuid.UUID) -> bool:
    row = await session.execute(
        select(PipelineRun.id).where(PipelineRun.id == run_id, PipelineRun.project_id == project_id)
    )
    return row.first() is not None


async def environment_of(
    session: AsyncSession, environment_id: uuid.UUID, project_id: uuid.UUID
) -> tuple[str, str] | None:
    """(name, status) of an environment of the project, or None."""
    row = (
        await session.execute(
            select(Environment.name, Environment.status).where(
                Environment.id == environment_id, Environment.project_id == project_id
            )
        )
    ).first()
    return (row.name, row.status) if row is not None else None


async def task_in_org(
    session: AsyncSession, organization_id: uuid.UUID, task_id: uuid.UUID
) -> AgentTask | None:
    return (
        await session.execute(
            select(AgentTask).where(
                AgentTask.id == task_id, AgentTask.organization_id == organization_id
            )
        )
    ).scalar_one_or_none()


async def tasks_of_project(
    session: AsyncSession,
    organization_id: uuid.UUID,
    project_id: uuid.UUID,
    *,
    cursor: str | None,
    limit: int,
) -> Sequence[AgentTask]:
    """One page (limit + 1 rows, newest first) of the project's tasks."""
    stmt = paginate(
        select(AgentTask).where(
            AgentTask.organization_id == organization_id, AgentTask.project_id == project_id
        ),
        AgentTask.created_at,
        AgentTask.id,
        cursor=cursor,
        limit=limit,
    )
    tasks: Sequence[AgentTask] = (await session.execute(stmt)).scalars().all()
    return tasks


@dataclass(frozen=True)
class TaskHistory:
    executions: list[AgentExecution]
    steps: list[AgentStep]
    invocations: list[ToolInvocation]


async def task_history(session: AsyncSession, task_id: uuid.UUID) -> TaskHistory:
    """Executions in order, their numbered steps and their tool calls."""
    executions = list(
        (
            await session.execute(
                select(AgentExecution)
                .where(AgentExecution.task_id == task_id)
                .order_by(AgentExecution.sequence)
            )
        )
        .scalars()
        .all()
    )
    exec_ids = [e.id for e in executions]
    if not exec_ids:
        return TaskHistory(executions, [], [])
    steps = (
        await session.execute(
            select(AgentStep)
            .where(AgentStep.execution_id.in_(exec_ids))
            .order_by(AgentStep.step_number)
        )
    ).scalars()
    invocations = (
        await session.execute(
            select(ToolInvocation)
            .where(ToolInvocation.execution_id.in_(exec_ids))
            .order_by(ToolInvocation.invoked_at, ToolInvocation.invocation_key)
        )
    ).scalars()
    return TaskHistory(executions, list(steps.all()), list(invocations.all()))


async def mark_start_failed(session: AsyncSession, task_id: uuid.UUID, reason: str) -> None:
    await session.execute(
        update(AgentTask)
        .where(AgentTask.id == task_id, AgentTask.status == AgentTaskStatus.PENDING)
        .values(status=AgentTaskStatus.FAILED, error=reason)
    )


async def cancel_open_task(session: AsyncSession, task_id: uuid.UUID, reason: str) -> None:
    await session.execute(
        update(AgentTask)
        .where(AgentTask.id == task_id, AgentTask.status.in_(OPEN_TASK_STATUSES))
        .values(status=AgentTaskStatus.CANCELLED, error=reason)
    )


FAILED_STATUSES = ("failed", "timed_out")


async def failed_stages(
    session: AsyncSession, run_id: uuid.UUID, *, tail_chars: int
) -> list[dict[str, Any]]:
    """The run's stages whose last attempt failed or timed out, with the tail of their logs and
    their recorded failure class, oldest first. An attempt a later retry made good is left out:
    it is not why the run failed."""
    attempts = (
        (
            await session.execute(
                select(StageExecution)
                .where(StageExecution.run_id == run_id)
                .order_by(StageExecution.created_at, StageExecution.attempt)
            )
        )
        .scalars()
        .all()
    )
    last: dict[str, StageExecution] = {}
    for row in attempts:
        if row.stage_name not in last or row.attempt > last[row.stage_name].attempt:
            last[row.stage_name] = row
    stages = [
        row for row in attempts if last[row.stage_name] is row and row.status in FAILED_STATUSES
    ]
    failed = []
    for stage in stages:
        chunks = (
            (
                await session.execute(
                    select(StageLogChunk.content)
                    .where(StageLogChunk.stage_execution_id == stage.id)
                    .order_by(StageLogChunk.seq.desc())
                    .limit(20)
                )
            )
            .scalars()
            .all()
        )
        tail = "".join(reversed(chunks))[-tail_chars:] or (stage.log_tail or "")
        failed.append(
            {
                "stage_name": stage.stage_name,
                "status": stage.status,
                "exit_code": stage.exit_code,
                "attempt": stage.attempt,
                "error": stage.error,
                "log_tail": tail,
                "failure_class": stage.failure_class,
                "failure_cause": stage.failure_cause,
                "failure_evidence": list(stage.failure_evidence or []),
            }
        )
    return failed


async def index_files(session: AsyncSession, rows: list[dict[str, Any]]) -> None:
    """Idempotent: a file already indexed at that commit is left as it is."""
    for start in range(0, len(rows), INDEX_BATCH):
        await session.execute(
            insert(ProjectFile)
            .values(rows[start : start + INDEX_BATCH])
            .on_conflict_do_nothing(index_elements=["project_id", "commit_sha", "path"])
        )
