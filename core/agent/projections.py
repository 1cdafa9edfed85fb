"""Idempotent writes of the agent's read model: executions, steps, tool calls, usage, pipelines.

Every row has a deterministic key (task id + execution sequence + step + call id), so a retried
or replayed activity upserts the same row instead of adding another.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from db.models.agent import AgentExecution, AgentStep, AgentTask, ToolInvocation
from db.models.billing import UsageRecord
from db.models.operations import WorkflowExecution
from db.models.projects import FRAMEWORKS, Project
from forgeline.statuses.agent import (
    OPEN_TASK_STATUSES,
    AgentExecutionStatus,
    AgentStepStatus,
    AgentTaskStatus,
)
from infra.llm import cost_of

NAMESPACE = uuid.UUID("5b0f3c1e-8f7a-4d61-9a53-6f0c2d7e4a10")


def execution_id(task_id: uuid.UUID, sequence: int) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"{task_id}:execution:{sequence}")


def step_id(execution: uuid.UUID, step_number: int) -> uuid.UUID:
    return uuid.uuid5(NAMESPACE, f"{execution}:step:{step_number}")


async def start_execution(
    session: AsyncSession,
    task_id: uuid.UUID,
    *,
    sequence: int,
    provider: str,
    model: str | None,
    planner_version: str | None,
) -> uuid.UUID:
    exec_id = execution_id(task_id, sequence)
    await session.execute(
        insert(AgentExecution)
        .values(
            id=exec_id,
            task_id=task_id,
            sequence=sequence,
            provider=provider,
            model=model,
            planner_version=planner_version,
            status=AgentExecutionStatus.RUNNING,
        )
        .on_conflict_do_nothing(index_elements=["id"])
    )
    await session.execute(
        update(AgentTask)
        .where(AgentTask.id == task_id, AgentTask.status.in_(OPEN_TASK_STATUSES))
        .values(
            status=AgentTaskStatus.RUNNING,
            started_at=func.coalesce(AgentTask.started_at, func.now()),
            retry_count=sequence - 1,
        )
    )
    return exec_id


async def record_step(
    session: AsyncSession,
    execution: uuid.UUID,
    step_number: int,
    *,
    step_type: str,
    description: str,
    content: dict[str, Any],
    status: str = AgentStepStatus.COMPLETED,
    input_tokens: int = 0,
    output_tokens: int = 0,
) -> uuid.UUID:
    sid = step_id(execution, step_number)
    await session.execute(
        insert(AgentStep)
        .values(
            id=sid,
            execution_id=execution,
            step_number=step_number,
            step_type=step_type,
            description=description[:2000],
            content=content,
            status=status,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
        .on_conflict_do_nothing(index_elements=["execution_id", "step_number"])
    )
    return sid


async def record_tool_invocation(
    session: AsyncSession,
    *,
    execution: uuid.UUID,
    step_number: int,
    invocation_key: str,
    tool_name: str,
    parameters: dict[str, Any],
    status: str,
    result_summary: str,
    duration_ms: int,
    error: str | None,
) -> None:
    values = {
        "status": status,
        "result_summary": result_summary[:4000],
        "duration_ms": duration_ms,
        "error": error[:4000] if error else None,
        "completed_at": datetime.now(UTC),
    }
    stmt = insert(ToolInvocation).values(
        id=uuid.uuid5(NAMESPACE, invocation_key),
        execution_id=execution,
        step_id=step_id(execution, step_number),
        invocation_key=invocation_key,
        tool_name=tool_name[:100],
        parameters=parameters,
        **values,
    )
    await session.execute(
        stmt.on_conflict_do_update(index_elements=["invocation_key"], set_=values)
    )


async def refresh_usage(
    session: AsyncSession,
    *,
    task_id: uuid.UUID,
    execution: uuid.UUID,
    model: str,
    organization_id: uuid.UUID | None,
    project_id: uuid.UUID,
    step_number: int,
    input_tokens: int,
    output_tokens: int,
) -> None:
    """Totals are re-summed from the steps (never incremented), so retries cannot double count."""
    totals = (
        await session.execute(
            select(
                func.coalesce(func.sum(AgentStep.input_tokens), 0),
                func.coalesce(func.sum(AgentStep.output_tokens), 0),
            ).where(AgentStep.execution_id == execution)
        )
    ).one()
    in_total, out_total = int(totals[0]), int(totals[1])
    await session.execute(
        update(AgentExecution)
        .where(AgentExecution.id == execution)
        .values(
            input_tokens=in_total,
            output_tokens=out_total,
            cost_usd=cost_of(model, in_total, out_total),
        )
    )
    task_totals = (
        await session.execute(
            select(
                func.coalesce(
                    func.sum(AgentExecution.input_tokens + AgentExecution.output_tokens), 0
                ),
                func.coalesce(func.sum(AgentExecution.cost_usd), 0),
            ).where(AgentExecution.task_id == task_id)
        )
    ).one()
    await session.execute(
        update(AgentTask)
        .where(AgentTask.id == task_id)
        .values(tokens_used=int(task_totals[0]), cost_usd=Decimal(task_totals[1]))
    )
    if organization_id is None or input_tokens + output_tokens == 0:
        return
    now = datetime.now(UTC)
    await session.execute(
        insert(UsageRecord)
        .values(
            organization_id=organization_id,
            project_id=project_id,
            usage_type="agent_tokens",
            quantity=Decimal(input_tokens + output_tokens),
            unit="tokens",
            cost=cost_of(model, input_tokens, output_tokens),
            period=now.strftime("%Y-%m"),
            idempotency_key=f"agent-task-{task_id}:{execution}:{step_number}:agent_tokens",
            source_refs={"agent_task_id": str(task_id), "model": model},
        )
        .on_conflict_do_nothing(index_elements=["idempotency_key"])
    )


async def finish_execution(
    session: AsyncSession,
    execution: uuid.UUID,
    *,
    status: str,
    reasoning: str | None,
    error: str | None,
    transcript_key: str | None = None,
) -> None:
    await session.execute(
        update(AgentExecution)
        .where(
            AgentExecution.id == execution, AgentExecution.status == AgentExecutionStatus.RUNNING
        )
        .values(
            status=status,
            reasoning_trace=reasoning,
            error=error,
            transcript_key=transcript_key,
            finished_at=func.now(),
        )
    )


async def finish_task(
    session: AsyncSession,
    task_id: uuid.UUID,
    *,
    status: str,
    output: dict[str, Any] | None,
    error: str | None,
) -> None:
    await session.execute(
        update(AgentTask)
        .where(AgentTask.id == task_id, AgentTask.status.in_(OPEN_TASK_STATUSES))
        .values(status=status, output_data=output, error=error, completed_at=func.now())
    )
    await session.execute(
        update(WorkflowExecution)
        .where(
            WorkflowExecution.workflow_id == f"agent-task-{task_id}",
            WorkflowExecution.status == "running",
        )
        .values(
            status={"completed": "completed", "failed": "failed"}.get(status, "cancelled"),
            closed_at=func.now(),
            error=error,
        )
    )


PROJECT_FRAMEWORK = {
    "static": "static_html",
    "react-vite": "react",
    "react-cra": "react",
    "spring-boot": "spring",
    "maven": "java",
    "gradle": "java",
    "unknown": "other",
}


async def remember_framework(session: AsyncSession, project_id: uuid.UUID, detected: str) -> None:
    """Fill the project's framework from the analysis, never overwriting what a user set."""
    value = PROJECT_FRAMEWORK.get(detected, detected)
    if value not in FRAMEWORKS:
        value = "other"
    await session.execute(
        update(Project)
        .where(Project.id == project_id, Project.framework.is_(None))
        .values(framework=value)
    )
