"""Arrange code of the pipeline deploy-stage tests: a pipeline that builds a static site and deploys
it, the pipelines and deployments workers, a run driven to its end, and the workflows a
deployment leaves running by design."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.deployments.pipeline_stage import PipelineDeployActivities
from activities.deployments.registration import WORKFLOWS
from db.models.pipelines import Pipeline, PipelineStage
from db.session import session_scope
from forgeline.settings import DEPLOYMENTS_TASK_QUEUE, Settings
from forgeline.temporal_client import workflow_runner
from infra.storage import LocalObjectStore
from tests.deployments.helpers import make_activities
from tests.runs.helpers import (
    create_run,
    pipeline_worker,
    run_row,
    start,
)
from tests.runs.sandbox import sandbox_runner

BUILD = (
    "mkdir -p dist && printf '<h1>from the pipeline</h1>\\n' > dist/index.html"
    " && printf 'ok\\n' > dist/healthz"
)


async def make_deploy_pipeline(
    session_maker: async_sessionmaker[AsyncSession],
    org_id: uuid.UUID,
    project_id: uuid.UUID,
    environment_id: uuid.UUID,
    *,
    build: str = BUILD,
    deploy_check: str = "test -f dist/index.html",
) -> uuid.UUID:
    async with session_scope(session_maker) as session:
        pipeline = Pipeline(
            id=uuid.uuid4(),
            project_id=project_id,
            organization_id=org_id,
            name="ship",
            config={},
            retry_policy={"initial_interval_seconds": 0.2},
        )
        session.add(pipeline)
        await session.flush()
        session.add(
            PipelineStage(
                id=uuid.uuid4(),
                pipeline_id=pipeline.id,
                name="build",
                position=0,
                stage_type="build",
                timeout_seconds=60,
                commands=[{"run": build}],
            )
        )
        session.add(
            PipelineStage(
                id=uuid.uuid4(),
                pipeline_id=pipeline.id,
                name="deploy",
                position=1,
                stage_type="deploy",
                timeout_seconds=60,
                commands=[{"run": deploy_check}],
                conditions={"deploy_environment_id": str(environment_id)},
            )
        )
    return pipeline.id


@asynccontextmanager
async def workers(
    client: Client,
    task_queue: str,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    tmp_path: Path,
) -> AsyncIterator[PipelineDeployActivities]:
    store = LocalObjectStore(settings.objects_dir)
    deployments = make_activities(settings, session_maker, client, None)
    stage = PipelineDeployActivities(settings=settings, session_maker=session_maker, store=store)
    deployment_worker = Worker(
        client,
        task_queue=DEPLOYMENTS_TASK_QUEUE,
        workflows=WORKFLOWS,
        activities=[*deployments.all(), *stage.all()],
        workflow_runner=workflow_runner(),
    )
    runner = sandbox_runner(tmp_path / "runner-state")
    async with (
        deployment_worker,
        pipeline_worker(client, task_queue, settings, session_maker, runner, store),
    ):
        yield stage


async def run_to_end(
    client: Client,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    task_queue: str,
    org_id: uuid.UUID,
    pipeline_id: uuid.UUID,
) -> Any:
    run = await create_run(session_maker, settings, org_id, pipeline_id)
    handle = await start(client, run, task_queue)
    await handle.result()
    return await run_row(session_maker, run.id)


async def end_leftovers(client: Client, environment_id: uuid.UUID, deployment_id: str) -> None:
    """The environment lock and the health monitor outlive the run by design."""
    for workflow_id in (
        f"environment-lock-{environment_id}",
        f"deployment-monitor-{deployment_id}",
    ):
        # Already closed is fine.
        with contextlib.suppress(RPCError):
            await client.get_workflow_handle(workflow_id).terminate("test over")
