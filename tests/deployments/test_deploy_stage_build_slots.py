"""A deploy stage waiting for approval holds no build slot: the next run builds meanwhile, and the
approved run queues for a slot again before it deploys."""

from __future__ import annotations

import asyncio
from pathlib import Path

from core.deployments.pipeline_stage import pipeline_deployment_id
from core.runs import build_slots
from db.models.deployments import Deployment
from db.session import driver_connection
from tests.deployments.helpers import decide, make_environment, wait_status
from tests.deployments.pipeline_deploy import (
    end_leftovers,
    make_deploy_pipeline,
    workers,
)
from tests.factories import make_org
from tests.runs.helpers import (
    create_run,
    make_pipeline,
    stage,
    start,
    wait_for,
)
from workflows.deployment import DeploymentWorkflow, deployment_workflow_id
from workflows.runs_models import (
    RunStatusView,
)


async def test_a_run_awaiting_approval_gives_its_build_slot_to_the_next_run(
    settings, session_maker, temporal_client, task_queue, tmp_path: Path
):
    """One build slot: while run A's deploy stage waits for approval of a protected environment,
    run B (same organization) builds and finishes; approved, A queues for a slot again, deploys
    and succeeds; no slot is left held."""
    org = await make_org(session_maker, role="admin")
    project_id, env_id = await make_environment(
        session_maker, org.org_id, provider="static", env_type="production", protected=True
    )
    pipeline_id = await make_deploy_pipeline(session_maker, org.org_id, project_id, env_id)
    quick_id = await make_pipeline(
        session_maker, org.org_id, [stage("quick", "echo quick")], concurrent_builds=1
    )

    async def slots() -> build_slots.SlotState:
        async with driver_connection(session_maker) as conn:
            return await build_slots.state(conn, str(org.org_id))

    async with workers(temporal_client, task_queue, settings, session_maker, tmp_path):
        run_a = await create_run(session_maker, settings, org.org_id, pipeline_id)
        handle_a = await start(temporal_client, run_a, task_queue)
        deployment_id = pipeline_deployment_id(str(run_a.id), str(env_id))

        async def deployment_exists() -> bool:
            async with session_maker() as session:
                return await session.get(Deployment, deployment_id) is not None

        await wait_for(deployment_exists)
        await wait_status(session_maker, deployment_id, ("awaiting_approval",))

        async def slot_free() -> bool:
            return (await slots()).holders == []

        await wait_for(slot_free)
        run_b = await create_run(session_maker, settings, org.org_id, quick_id)
        # Liveness, not speed: with A holding the only slot, B would wait for ever.
        handle_b = await start(temporal_client, run_b, task_queue)
        result_b = await asyncio.wait_for(handle_b.result(), timeout=60)
        assert result_b.status == "success"
        assert (await handle_a.query("status", result_type=RunStatusView)).stages == {
            "build": "success",
            "deploy": "running",
        }

        deployment = temporal_client.get_workflow_handle_for(
            DeploymentWorkflow.run, deployment_workflow_id(str(deployment_id))
        )
        await decide(deployment, str(org.user_id), "admin", approved=True, reason="ship it")
        result_a = await handle_a.result()
        assert result_a.status == "success", result_a
        view = await slots()
        assert view.holders == [] and view.waiting == []
        await end_leftovers(temporal_client, env_id, str(deployment_id))
    async with session_maker() as session:
        row = await session.get(Deployment, deployment_id)
    assert row is not None and row.status == "active"
