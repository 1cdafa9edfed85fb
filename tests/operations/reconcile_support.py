"""Rows and Temporal executions for the reconciler tests: a business row in an unfinished status,
its operators' row, and a workflow started under its ID on a queue no worker polls."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowHandle

from db.models.agent import AgentTask
from db.models.deployments import Deployment
from db.session import session_scope
from forgeline.search_attributes import forgeline_search_attributes
from forgeline.settings import Settings
from tests.deployments.helpers import make_environment
from tests.factories import OrgFixture
from tests.runs.helpers import create_run, make_pipeline, stage


async def operator_row(
    session_maker: async_sessionmaker[AsyncSession],
    kind: str,
    handle: WorkflowHandle[Any, Any],
    org: OrgFixture,
    resource_id: uuid.UUID,
) -> None:
    async with session_scope(session_maker) as session:
        await session.execute(
            text(
                "INSERT INTO workflow_executions (id, kind, workflow_type, workflow_id, run_id, "
                "organization_id, resource_type, resource_id, status) VALUES "
                "(gen_random_uuid(), :kind, 'test', :wf, :run, :org, :kind, :rid, 'running')"
            ),
            {
                "kind": kind,
                "wf": handle.id,
                "run": handle.result_run_id,
                "org": org.org_id,
                "rid": resource_id,
            },
        )


async def start_unpolled(
    client: Client,
    kind: str,
    workflow_id: str,
    org: OrgFixture,
    project_id: uuid.UUID,
    execution_timeout: timedelta | None = None,
) -> WorkflowHandle[Any, Any]:
    return await client.start_workflow(
        "UnpolledWorkflow",
        id=workflow_id,
        task_queue=f"unpolled-{uuid.uuid4()}",
        search_attributes=forgeline_search_attributes(
            kind, organization_id=org.org_id, project_id=project_id
        ),
        execution_timeout=execution_timeout,
    )


async def running_run(
    client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    org: OrgFixture,
) -> tuple[uuid.UUID, WorkflowHandle[Any, Any]]:
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("build", "true")])
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    async with session_scope(session_maker) as session:
        await session.execute(
            text("UPDATE pipeline_runs SET status = 'running', started_at = now() WHERE id = :id"),
            {"id": run.id},
        )
    handle = await start_unpolled(
        client, "pipeline_run", f"pipeline-run-{run.id}", org, run.project_id
    )
    await operator_row(session_maker, "pipeline_run", handle, org, run.id)
    return run.id, handle


async def deploying_deployment(
    client: Client, session_maker: async_sessionmaker[AsyncSession], org: OrgFixture
) -> tuple[uuid.UUID, WorkflowHandle[Any, Any]]:
    project_id, environment_id = await make_environment(session_maker, org.org_id)
    deployment_id = uuid.uuid4()
    async with session_scope(session_maker) as session:
        session.add(
            Deployment(
                id=deployment_id,
                environment_id=environment_id,
                project_id=project_id,
                organization_id=org.org_id,
                version="v1",
                status="deploying",
                provider="docker",
            )
        )
    handle = await start_unpolled(
        client, "deployment", f"deployment-{deployment_id}", org, project_id
    )
    await operator_row(session_maker, "deployment", handle, org, deployment_id)
    return deployment_id, handle


async def running_agent_task(
    client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    org: OrgFixture,
    project_id: uuid.UUID,
    execution_timeout: timedelta | None = None,
) -> tuple[uuid.UUID, WorkflowHandle[Any, Any]]:
    task_id = uuid.uuid4()
    async with session_scope(session_maker) as session:
        session.add(
            AgentTask(
                id=task_id,
                organization_id=org.org_id,
                project_id=project_id,
                task_type="generate_pipeline",
                status="running",
            )
        )
    handle = await start_unpolled(
        client, "agent_task", f"agent-task-{task_id}", org, project_id, execution_timeout
    )
    await operator_row(session_maker, "agent_task", handle, org, task_id)
    return task_id, handle


async def eventually(check: Callable[[], Awaitable[bool]], attempts: int = 300) -> None:
    """Poll until `check` holds (visibility is eventually consistent); no time threshold."""
    for _ in range(attempts):
        if await check():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("condition never held")


async def status_of(
    session_maker: async_sessionmaker[AsyncSession], table: str, row_id: uuid.UUID
) -> tuple[str, str | None]:
    async with session_maker() as session:
        row = (
            await session.execute(
                text(f"SELECT status, error FROM {table} WHERE id = :id"),
                {"id": row_id},
            )
        ).one()
    return str(row[0]), row[1]
