"""The projection never lies: executions closed from outside the product (terminated, cancelled,
timed out or failed from the Temporal UI or CLI) are found with a visibility query by search
attribute and reflected in their run, deployment or agent task, and in `workflow_executions`.

Each correction is one conditional UPDATE (only a row still unfinished changes) with its audit
entry (actor `system`) in the same transaction, so two reconcilers racing change a row once.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowExecution, WorkflowExecutionStatus

from core.audit.service import write_audit
from core.runs.slot_grants import SlotGrants
from db.session import session_scope
from forgeline.search_attributes import KIND_KEY
from workflows.runs_models import build_slot_key

log = logging.getLogger(__name__)

# What each abnormal close means for the operators' row and for the business row.
CLOSED = {
    WorkflowExecutionStatus.TERMINATED: ("terminated", "failed"),
    WorkflowExecutionStatus.CANCELED: ("cancelled", "cancelled"),
    WorkflowExecutionStatus.TIMED_OUT: ("timed_out", "failed"),
    WorkflowExecutionStatus.FAILED: ("failed", "failed"),
}


@dataclass(frozen=True)
class Entity:
    """The business row a kind of workflow drives: its table, the workflow ID prefix before the
    row's ID, the statuses in which it is unfinished, and the column its end time goes to."""

    prefix: str
    table: str
    unfinished: tuple[str, ...]
    ended_column: str = "finished_at"


# By the ForgelineKind search attribute (also the audit resource type).
ENTITIES = {
    "pipeline_run": Entity("pipeline-run-", "pipeline_runs", ("queued", "running")),
    "deployment": Entity(
        "deployment-",
        "deployments",
        ("pending", "queued", "awaiting_approval", "building", "deploying", "verifying"),
    ),
    "agent_task": Entity("agent-task-", "agent_tasks", ("pending", "running"), "completed_at"),
}
VISIBILITY_STATUS = {
    WorkflowExecutionStatus.TERMINATED: "Terminated",
    WorkflowExecutionStatus.CANCELED: "Canceled",
    WorkflowExecutionStatus.TIMED_OUT: "TimedOut",
    WorkflowExecutionStatus.FAILED: "Failed",
}


def closed_executions_query(since: datetime) -> str:
    kinds = ", ".join(f"'{kind}'" for kind in ENTITIES)
    statuses = ", ".join(f"'{s}'" for s in VISIBILITY_STATUS.values())
    return (
        f"{KIND_KEY.name} IN ({kinds}) AND ExecutionStatus IN ({statuses}) "
        f"AND CloseTime > '{since.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%S.%fZ')}'"
    )


@dataclass
class ReconcileResult:
    examined: int = 0
    corrected: list[str] = field(default_factory=list)


def _entity_id(workflow_id: str, prefix: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(workflow_id.removeprefix(prefix))
    except ValueError:
        return None


async def _close_operator_row(
    session: AsyncSession, execution: WorkflowExecution, status: str, error: str
) -> None:
    await session.execute(
        text(
            "UPDATE workflow_executions SET status = :status, closed_at = :closed, error = :error, "
            "updated_at = now() WHERE workflow_id = :wf AND run_id = :run AND status = 'running'"
        ),
        {
            "status": status,
            "closed": execution.close_time or datetime.now(UTC),
            "error": error,
            "wf": execution.id,
            "run": execution.run_id,
        },
    )


async def correct_closed_execution(
    session: AsyncSession, execution: WorkflowExecution, kind: str
) -> tuple[uuid.UUID, uuid.UUID | None, uuid.UUID | None] | None:
    """Close the business row if it is still unfinished; (id, organization, project) when it was."""
    entity = ENTITIES[kind]
    entity_id = _entity_id(execution.id, entity.prefix)
    if entity_id is None or execution.status not in CLOSED:
        return None
    operator_status, entity_status = CLOSED[execution.status]
    error = f"workflow {operator_status} outside Forgeline (Temporal)"
    await _close_operator_row(session, execution, operator_status, error)
    row = (
        await session.execute(
            text(
                f"UPDATE {entity.table} SET status = :status, error = :error, "  # noqa: S608
                f"{entity.ended_column} = coalesce({entity.ended_column}, now()), "
                "updated_at = now() "
                "WHERE id = :id AND status = ANY(:unfinished) "
                "RETURNING organization_id, project_id"
            ),
            {
                "status": entity_status,
                "error": error,
                "id": entity_id,
                "unfinished": list(entity.unfinished),
            },
        )
    ).first()
    if row is None:
        return None
    if kind == "pipeline_run":
        stage_status = "cancelled" if entity_status == "cancelled" else "failed"
        await session.execute(
            text(
                "UPDATE stage_executions SET status = :status, finished_at = now(), "
                "updated_at = now() "
                "WHERE run_id = :id AND status IN ('pending', 'queued', 'running')"
            ),
            {"status": stage_status, "id": entity_id},
        )
    await write_audit(
        session,
        None,
        None,
        f"{kind}.reconciled",
        kind,
        entity_id,
        None,
        {"status": entity_status, "error": error},
        organization_id=row[0],
        severity="warning",
        metadata={"workflow_id": execution.id, "workflow_run_id": execution.run_id},
    )
    return entity_id, row[0], row[1]


async def reconcile_closed_executions(
    client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    *,
    lookback: timedelta = timedelta(hours=1),
    now: datetime | None = None,
    on_progress: Callable[[], object] | None = None,
) -> ReconcileResult:
    """One pass over the executions closed abnormally within `lookback`; idempotent."""
    since = (now or datetime.now(UTC)) - lookback
    result = ReconcileResult()
    slots = SlotGrants(client, session_maker)
    async for execution in client.list_workflows(closed_executions_query(since)):
        result.examined += 1
        if on_progress is not None:
            on_progress()
        kind = execution.typed_search_attributes.get(KIND_KEY)
        if kind not in ENTITIES:
            continue
        async with session_scope(session_maker) as session:
            corrected = await correct_closed_execution(session, execution, kind)
        if corrected is None:
            continue
        result.corrected.append(execution.id)
        log.warning("%s closed outside Forgeline: projection corrected", execution.id)
        _, organization_id, project_id = corrected
        if kind == "pipeline_run" and project_id is not None:
            key = build_slot_key(str(organization_id) if organization_id else None, str(project_id))
            await slots.release(key, execution.id)
    return result
