"""Executions closed from outside the product are reflected in their projections by the
reconciler: run, deployment and agent task, the operators' row, the audit trail (actor system)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

from core.operations.reconciler import reconcile_closed_executions
from forgeline.settings import Settings
from forgeline.temporal_client import workflow_runner
from tests.factories import make_org
from tests.operations.reconcile_support import (
    deploying_deployment,
    eventually,
    running_agent_task,
    running_run,
    status_of,
)


async def reconciled(
    client: Client, session_maker: async_sessionmaker[AsyncSession], table: str, row_id: uuid.UUID
) -> tuple[str, str | None]:
    async def corrected() -> bool:
        await reconcile_closed_executions(client, session_maker)
        status, _ = await status_of(session_maker, table, row_id)
        return status not in ("running", "deploying")

    await eventually(corrected)
    return await status_of(session_maker, table, row_id)


async def audit_rows(
    session_maker: async_sessionmaker[AsyncSession], resource_id: uuid.UUID
) -> list[tuple[str, str]]:
    async with session_maker() as session:
        rows = await session.execute(
            text("SELECT actor_type, action FROM audit_logs WHERE resource_id = :id"),
            {"id": resource_id},
        )
        return [(str(a), str(b)) for a, b in rows]


async def operator_status(session_maker: async_sessionmaker[AsyncSession], workflow_id: str) -> str:
    async with session_maker() as session:
        return str(
            (
                await session.execute(
                    text("SELECT status FROM workflow_executions WHERE workflow_id = :wf"),
                    {"wf": workflow_id},
                )
            ).scalar_one()
        )


async def test_a_run_terminated_in_temporal_is_failed_with_its_stages_and_slot(
    temporal_client: Client, session_maker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await make_org(session_maker)
    run_id, handle = await running_run(temporal_client, session_maker, settings, org)
    await handle.terminate(reason="operator stopped it")
    status, error = await reconciled(temporal_client, session_maker, "pipeline_runs", run_id)
    assert status == "failed"
    assert error is not None and "terminated" in error
    assert await operator_status(session_maker, handle.id) == "terminated"
    assert await audit_rows(session_maker, run_id) == [("system", "pipeline_run.reconciled")]
    # A second pass finds the execution again and changes nothing.
    again = await reconcile_closed_executions(temporal_client, session_maker)
    assert handle.id not in again.corrected
    assert len(await audit_rows(session_maker, run_id)) == 1


async def test_a_deployment_terminated_in_temporal_is_failed(
    temporal_client: Client, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    deployment_id, handle = await deploying_deployment(temporal_client, session_maker, org)
    await handle.terminate(reason="stuck")
    status, error = await reconciled(temporal_client, session_maker, "deployments", deployment_id)
    assert (status, error and "terminated" in error) == ("failed", True)
    assert await operator_status(session_maker, handle.id) == "terminated"
    assert await audit_rows(session_maker, deployment_id) == [("system", "deployment.reconciled")]


async def test_an_agent_task_that_timed_out_in_temporal_is_failed(
    temporal_client: Client, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    _, deployment_handle = await deploying_deployment(temporal_client, session_maker, org)
    async with session_maker() as session:
        project_id = (
            await session.execute(
                text("SELECT project_id FROM deployments WHERE id = :id"),
                {"id": uuid.UUID(deployment_handle.id.removeprefix("deployment-"))},
            )
        ).scalar_one()
    await deployment_handle.terminate()
    task_id, handle = await running_agent_task(
        temporal_client, session_maker, org, project_id, execution_timeout=timedelta(seconds=1)
    )
    status, error = await reconciled(temporal_client, session_maker, "agent_tasks", task_id)
    assert status == "failed" and error is not None and "timed_out" in error
    assert await operator_status(session_maker, handle.id) == "timed_out"


async def test_two_reconcilers_at_once_correct_a_row_once(
    temporal_client: Client, session_maker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await make_org(session_maker)
    run_id, handle = await running_run(temporal_client, session_maker, settings, org)
    await handle.terminate()

    async def listed() -> bool:
        query = f'WorkflowId = "{handle.id}" AND ExecutionStatus = "Terminated"'
        return [e async for e in temporal_client.list_workflows(query)] != []

    await eventually(listed)
    first, second = await asyncio.gather(
        reconcile_closed_executions(temporal_client, session_maker),
        reconcile_closed_executions(temporal_client, session_maker),
    )
    assert [handle.id in r.corrected for r in (first, second)].count(True) == 1
    assert (await status_of(session_maker, "pipeline_runs", run_id))[0] == "failed"
    assert len(await audit_rows(session_maker, run_id)) == 1


async def test_a_row_that_finished_normally_is_left_alone(
    temporal_client: Client, session_maker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await make_org(session_maker)
    run_id, handle = await running_run(temporal_client, session_maker, settings, org)
    async with session_maker() as session:
        await session.execute(
            text("UPDATE pipeline_runs SET status = 'success' WHERE id = :id"), {"id": run_id}
        )
        await session.commit()
    await handle.terminate()

    async def listed() -> bool:
        query = f'WorkflowId = "{handle.id}" AND ExecutionStatus = "Terminated"'
        return [e async for e in temporal_client.list_workflows(query)] != []

    await eventually(listed)
    result = await reconcile_closed_executions(temporal_client, session_maker)
    assert handle.id not in result.corrected
    assert await status_of(session_maker, "pipeline_runs", run_id) == ("success", None)


@workflow.defn(name="UnpolledWorkflow")
class WaitingWorkflow:
    """Stands in for a run's workflow: waits until cancelled."""

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


async def test_a_run_cancelled_in_temporal_is_cancelled(
    temporal_client: Client, session_maker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await make_org(session_maker)
    run_id, handle = await running_run(temporal_client, session_maker, settings, org)
    description = await handle.describe()
    async with Worker(
        temporal_client,
        task_queue=str(description.task_queue),
        workflows=[WaitingWorkflow],
        workflow_runner=workflow_runner(True),
    ):
        await handle.cancel()
        status, error = await reconciled(temporal_client, session_maker, "pipeline_runs", run_id)
    assert status == "cancelled" and error is not None and "cancelled" in error
    assert await operator_status(session_maker, handle.id) == "cancelled"
