"""Whose turn it is to verify a project: one verification of a project at a time, in arrival
order. An earlier generation with verification holds the turn while its row is open and its
workflow runs; a holder whose workflow was closed outside Forgeline (terminated or cancelled from
the Temporal UI or CLI) or never existed releases it at once, and its row is closed the way the
reconciler closes it, so the next verification does not wait for the reconciler's next pass."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from core.audit.service import write_audit
from core.operations.reconciler import correct_closed_execution
from db.models.agent import AgentTask
from db.session import session_scope
from forgeline.statuses.agent import (
    OPEN_TASK_STATUSES,
    TERMINAL_TASK_STATUSES,
    AgentTaskStatus,
    AgentTaskType,
)

# The row is committed before its workflow is started: a workflow not found this soon after the
# row was written may be about to start, and still holds the turn.
NOT_STARTED_GRACE = timedelta(minutes=2)


@dataclass(frozen=True)
class Holder:
    task_id: uuid.UUID
    workflow_id: str
    created_at: datetime


async def earlier_holders(session: AsyncSession, task: AgentTask) -> list[Holder]:
    """The unfinished generations of the same project that asked for verification and arrived
    before `task` (by creation time, then ID), oldest first."""
    rows = await session.execute(
        select(AgentTask.id, AgentTask.workflow_id, AgentTask.created_at)
        .where(
            AgentTask.project_id == task.project_id,
            AgentTask.id != task.id,
            AgentTask.task_type == AgentTaskType.GENERATE_PIPELINE,
            AgentTask.status.not_in(TERMINAL_TASK_STATUSES),
            AgentTask.input_data.contains({"verify": True}),
            tuple_(AgentTask.created_at, AgentTask.id) < tuple_(task.created_at, task.id),
        )
        .order_by(AgentTask.created_at, AgentTask.id)
    )
    return [
        Holder(task_id, workflow_id or f"agent-task-{task_id}", created_at)
        for task_id, workflow_id, created_at in rows
    ]


async def holds_turn(
    client: Client, session_maker: async_sessionmaker[AsyncSession], holder: Holder
) -> bool:
    """Whether `holder`'s workflow still runs (or may yet start); a closed one's row is closed."""
    try:
        execution = await client.get_workflow_handle(holder.workflow_id).describe()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        if datetime.now(UTC) - holder.created_at < NOT_STARTED_GRACE:
            return True
        await _close_never_started(session_maker, holder)
        return False
    if execution.status == WorkflowExecutionStatus.RUNNING:
        return True
    async with session_scope(session_maker) as session:
        # Terminated, cancelled, timed out or failed: closed as the reconciler closes it (once,
        # whoever gets there first). A completed workflow wrote its own row.
        await correct_closed_execution(session, execution, "agent_task")
    return False


async def turn_is_held(
    client: Client | None,
    session_maker: async_sessionmaker[AsyncSession],
    task_id: uuid.UUID,
) -> bool:
    """Whether an earlier verification of `task_id`'s project still holds the turn. Without a
    Temporal client only the rows speak (an open row holds it)."""
    async with session_maker() as session:
        task = await session.get(AgentTask, task_id)
        if task is None:
            return False
        holders = await earlier_holders(session, task)
    if client is None:
        return bool(holders)
    for holder in holders:
        if await holds_turn(client, session_maker, holder):
            return True
    return False


async def _close_never_started(
    session_maker: async_sessionmaker[AsyncSession], holder: Holder
) -> None:
    error = "workflow not found in Temporal (never started, or removed)"
    async with session_scope(session_maker) as session:
        organization_id = await session.scalar(
            update(AgentTask)
            .where(AgentTask.id == holder.task_id, AgentTask.status.in_(OPEN_TASK_STATUSES))
            .values(
                status=AgentTaskStatus.FAILED,
                error=error,
                completed_at=datetime.now(UTC),
                updated_at=datetime.now(UTC),
            )
            .returning(AgentTask.organization_id)
        )
        if organization_id is None:
            return
        await write_audit(
            session,
            None,
            None,
            "agent_task.reconciled",
            "agent_task",
            holder.task_id,
            None,
            {"status": AgentTaskStatus.FAILED, "error": error},
            organization_id=organization_id,
            severity="warning",
            metadata={"workflow_id": holder.workflow_id},
        )
