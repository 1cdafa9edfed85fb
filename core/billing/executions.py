"""The workflow_executions rows of billing runs: inserted by whoever starts a run, closed by the
run's own last step (or by its failure path)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from core.billing.periods import Period
from db.models.operations import WorkflowExecution
from forgeline.settings import BILLING_TASK_QUEUE
from workflows.billing_models import BILLING_WORKFLOW_KIND

ERROR_MAX = 4000


@dataclass(frozen=True)
class ExecutionRef:
    """The running workflow a step belongs to, as its activity sees it."""

    workflow_id: str
    run_id: str
    workflow_type: str
    task_queue: str | None


def _search_attributes(organization_id: uuid.UUID) -> dict[str, str]:
    return {"ForgelineOrgId": str(organization_id), "ForgelineKind": BILLING_WORKFLOW_KIND}


async def record_billing_execution(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    period: Period,
    workflow_id: str,
    run_id: str,
    trigger: str,
) -> None:
    """The workflow_executions row operators list; idempotent on (workflow_id, run_id)."""
    await record_billing_executions(
        session,
        [StartedRun(organization_id, workflow_id, run_id)],
        period=period,
        trigger=trigger,
    )


@dataclass(frozen=True)
class StartedRun:
    """A billing run its starter has just started."""

    organization_id: uuid.UUID
    workflow_id: str
    run_id: str


async def record_billing_executions(
    session: AsyncSession, runs: Sequence[StartedRun], *, period: Period, trigger: str
) -> None:
    """The workflow_executions rows of `runs` in one statement; idempotent on (workflow_id,
    run_id). One statement, not one per run: until the caller commits, a run's own last step
    waits on its uncommitted row (its close is an upsert on the same key), so the rows are
    written and committed in one round trip."""
    if not runs:
        return
    await session.execute(
        pg_insert(WorkflowExecution)
        .values(
            [
                {
                    "kind": BILLING_WORKFLOW_KIND,
                    "workflow_type": "BillingWorkflow",
                    "workflow_id": run.workflow_id,
                    "run_id": run.run_id,
                    "task_queue": BILLING_TASK_QUEUE,
                    "organization_id": run.organization_id,
                    "resource_type": "billing_period",
                    "memo": {"period": period.key, "trigger": trigger},
                    "search_attributes": _search_attributes(run.organization_id),
                }
                for run in runs
            ]
        )
        .on_conflict_do_nothing()
    )


async def upsert_closed_execution(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    period_key: str,
    workflow_id: str,
    run_id: str,
    workflow_type: str,
    task_queue: str | None,
    status: str,
    error: str | None = None,
) -> None:
    """Close the workflow_executions row of a billing run, inserting it when the starter has not
    committed it yet (its later insert is then a no-op, so the row never reverts to running)."""
    await session.execute(
        pg_insert(WorkflowExecution)
        .values(
            kind=BILLING_WORKFLOW_KIND,
            workflow_type=workflow_type,
            workflow_id=workflow_id,
            run_id=run_id,
            task_queue=task_queue,
            organization_id=organization_id,
            resource_type="billing_period",
            memo={"period": period_key},
            search_attributes=_search_attributes(organization_id),
            status=status,
            closed_at=func.now(),
            error=error[:ERROR_MAX] if error else None,
        )
        .on_conflict_do_update(
            index_elements=[WorkflowExecution.workflow_id, WorkflowExecution.run_id],
            set_={
                "status": status,
                "closed_at": func.now(),
                "error": error[:ERROR_MAX] if error else None,
            },
        )
    )


async def close_execution(
    session: AsyncSession,
    execution: ExecutionRef | None,
    organization_id: uuid.UUID,
    period_key: str,
    *,
    status: str = "completed",
    error: str | None = None,
) -> None:
    """Close the run's workflow_executions row from inside one of its steps.

    An upsert: a fast run (a $0 invoice) can finish before its starter commits the row, whose
    later insert (ON CONFLICT DO NOTHING) then leaves this closed row alone. No execution (a
    benchmark or a script calling the step directly) leaves the rows alone."""
    if execution is None:
        return
    await upsert_closed_execution(
        session,
        organization_id=organization_id,
        period_key=period_key,
        workflow_id=execution.workflow_id,
        run_id=execution.run_id,
        workflow_type=execution.workflow_type,
        task_queue=execution.task_queue,
        status=status,
        error=error,
    )
