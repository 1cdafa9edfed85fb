"""One deployment at a time per environment (lock), preview teardown (signal and TTL timer), and
the post-activation monitor (continue-as-new, stops when superseded)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import func, select, update
from temporalio.client import Client, WorkflowHandle

from db.models.deployments import Deployment, DeploymentHealthCheck
from db.models.projects import Environment
from db.session import session_scope
from tests.deployments.helpers import (
    make_activities,
    make_environment,
    org_sources,
    running_worker,
    start_deployment,
    static_site,
    wait_status,
)
from tests.factories import make_org
from workflows.deployment_models import MonitorInput, PreviewInput
from workflows.deployment_monitor import DeploymentMonitorWorkflow
from workflows.preview import PreviewEnvironmentWorkflow, preview_workflow_id


async def test_second_deployment_queues_behind_the_first(
    settings, session_maker, temporal_client, task_queue, tmp_path
):
    org = await make_org(session_maker)
    sources = org_sources(settings, org.org_id)
    # 8 passes 0.3 s apart: the first deployment holds the environment for ~2.4 s.
    _, env_id = await make_environment(
        session_maker,
        org.org_id,
        provider="static",
        config={"health_check_passes": 8, "health_check_interval_seconds": 0.3},
    )
    activities = make_activities(settings, session_maker, temporal_client, None)
    async with running_worker(temporal_client, task_queue, activities):
        first = await start_deployment(
            session_maker,
            temporal_client,
            org.org_id,
            env_id,
            static_site(sources, "one"),
            task_queue=task_queue,
        )
        await wait_status(session_maker, first, ("verifying",))
        second = await start_deployment(
            session_maker,
            temporal_client,
            org.org_id,
            env_id,
            static_site(sources, "two"),
            task_queue=task_queue,
        )
        await asyncio.sleep(1.0)
        async with session_maker() as session:
            statuses = dict(
                (
                    await session.execute(
                        select(Deployment.id, Deployment.status).where(
                            Deployment.id.in_([first, second])
                        )
                    )
                ).all()
            )
        assert statuses[first] == "verifying" and statuses[second] == "queued"
        assert (await wait_status(session_maker, first, ("active",), 30)).status == "active"
        done = await wait_status(session_maker, second, ("active", "failed"), 30)
        assert done.status == "active"
        assert (await wait_status(session_maker, first, ("superseded",), 5)).finished_at is not None


async def start_preview(
    client: Client,
    org_id: uuid.UUID,
    project_id: uuid.UUID,
    env_id: uuid.UUID,
    ttl_seconds: int,
    task_queue: str,
) -> WorkflowHandle[Any, str]:
    """The preview environment's workflow, as a pull request opens it."""
    return await client.start_workflow(
        PreviewEnvironmentWorkflow.run,
        PreviewInput(
            environment_id=str(env_id),
            organization_id=str(org_id),
            project_id=str(project_id),
            provider="static",
            ttl_seconds=ttl_seconds,
        ),
        id=preview_workflow_id(str(env_id)),
        task_queue=task_queue,
    )


async def test_preview_torn_down_on_request(settings, session_maker, temporal_client, task_queue):
    org = await make_org(session_maker)
    project_id, env_id = await make_environment(
        session_maker, org.org_id, provider="static", env_type="preview"
    )
    activities = make_activities(settings, session_maker, temporal_client, None)
    async with running_worker(temporal_client, task_queue, activities):
        handle = await start_preview(
            temporal_client, org.org_id, project_id, env_id, 3600, task_queue
        )
        await handle.signal(PreviewEnvironmentWorkflow.teardown, "pull request closed")
        assert await handle.result() == "pull request closed"
    async with session_maker() as session:
        assert (await session.get(Environment, env_id)).status == "deleted"


async def test_preview_ttl_expires_on_a_durable_timer(
    settings, session_maker, time_skipping_env, task_queue
):
    client = time_skipping_env.client
    org = await make_org(session_maker)
    project_id, env_id = await make_environment(
        session_maker, org.org_id, provider="static", env_type="preview"
    )
    activities = make_activities(settings, session_maker, client, None)
    async with running_worker(client, task_queue, activities):
        handle = await start_preview(client, org.org_id, project_id, env_id, 2 * 3600, task_queue)
        assert await handle.result() == "ttl expired"
    async with session_maker() as session:
        assert (await session.get(Environment, env_id)).status == "deleted"


async def test_monitor_continues_as_new_and_stops_when_superseded(
    settings, session_maker, temporal_client, task_queue, tmp_path
):
    org = await make_org(session_maker)
    sources = org_sources(settings, org.org_id)
    _, env_id = await make_environment(session_maker, org.org_id, provider="static")
    activities = make_activities(settings, session_maker, temporal_client, None)
    async with running_worker(temporal_client, task_queue, activities):
        dep = await start_deployment(
            session_maker,
            temporal_client,
            org.org_id,
            env_id,
            static_site(sources, "m"),
            task_queue=task_queue,
        )
        row = await wait_status(session_maker, dep, ("active",))
        handle = await temporal_client.start_workflow(
            DeploymentMonitorWorkflow.run,
            MonitorInput(
                deployment_id=str(dep),
                environment_id=str(env_id),
                organization_id=str(org.org_id),
                provider="static",
                url=row.url or "",
                static_prefix=row.artifact_key,
                interval_seconds=0.1,
                checks_per_run=3,
            ),
            id=f"monitor-test-{uuid.uuid4()}",
            task_queue=task_queue,
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while True:
            async with session_maker() as session:
                monitored = await session.scalar(
                    select(func.count()).where(
                        DeploymentHealthCheck.deployment_id == dep,
                        DeploymentHealthCheck.phase == "monitor",
                    )
                )
            if monitored and monitored >= 7:
                break
            assert loop.time() < deadline
            await asyncio.sleep(0.1)
        # More checks than one run holds: the monitor continued as new at least twice.
        desc = await handle.describe()
        assert desc.run_id != handle.first_execution_run_id
        async with session_scope(session_maker) as session:
            await session.execute(
                update(Deployment).where(Deployment.id == dep).values(status="superseded")
            )
        checks = await temporal_client.get_workflow_handle(handle.id).result()
        assert checks >= 7


async def test_started_without_a_row_like_the_pipeline_deploy_stage(
    settings, session_maker, temporal_client, task_queue, tmp_path
):
    from workflows.deployment import DeploymentWorkflow, deployment_workflow_id
    from workflows.deployment_models import DeploymentInput

    org = await make_org(session_maker)
    sources = org_sources(settings, org.org_id)
    project_id, env_id = await make_environment(session_maker, org.org_id, provider="static")
    dep = uuid.uuid4()
    activities = make_activities(settings, session_maker, temporal_client, None)
    async with running_worker(temporal_client, task_queue, activities):
        result = await temporal_client.execute_workflow(
            DeploymentWorkflow.run,
            DeploymentInput(
                deployment_id=str(dep),
                organization_id=str(org.org_id),
                project_id=str(project_id),
                environment_id=str(env_id),
                provider="static",
                source=static_site(sources, "child"),
                start_monitor=False,
            ),
            id=deployment_workflow_id(str(dep)),
            task_queue=task_queue,
        )
    assert result.status == "active", result.reason
    row = await wait_status(session_maker, dep, ("active",))
    assert row.workflow_id == deployment_workflow_id(str(dep)) and row.version == "child"
