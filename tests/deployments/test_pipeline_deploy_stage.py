"""A pipeline deploy stage: `prepare_pipeline_deployment`, then DeploymentWorkflow as a child.

A real run (local process runner) builds a static site into its workspace; its deploy stage
releases it to a `static` environment. PipelineRunWorkflow sends that stage to the production
DEPLOYMENTS_TASK_QUEUE constant, so the deployments worker here listens on it (each pytest
session has its own Temporal server, so the name is not shared with anyone else).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.worker import Worker

from activities.deployments.pipeline_stage import PipelineDeployActivities
from activities.deployments.registration import WORKFLOWS
from core.deployments import pipeline_stage, sources
from core.deployments.pipeline_stage import pipeline_deployment_id
from core.runs import build_slots
from db.models.deployments import Deployment
from db.models.operations import WorkflowExecution
from db.models.pipelines import Pipeline, PipelineRun, PipelineStage
from db.models.projects import Project
from db.session import driver_connection, session_scope
from forgeline.errors import PaymentRequired
from forgeline.settings import DEPLOYMENTS_TASK_QUEUE, Settings
from forgeline.temporal_client import workflow_runner
from infra.storage import LocalObjectStore
from tests.deployments.helpers import decide, make_activities, make_environment, wait_status
from tests.factories import make_org
from tests.runs.helpers import (
    create_run,
    make_pipeline,
    pipeline_worker,
    run_row,
    stage,
    start,
    wait_for,
)
from tests.runs.sandbox import sandbox_runner
from workflows.deployment import DeploymentWorkflow, deployment_workflow_id
from workflows.deployment_models import DeploymentInput
from workflows.runs_models import (
    DeployStageInput,
    RunStatusView,
)

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


async def _run(
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


async def _end_leftovers(client: Client, environment_id: uuid.UUID, deployment_id: str) -> None:
    """The environment lock and the health monitor outlive the run by design."""
    for workflow_id in (
        f"environment-lock-{environment_id}",
        f"deployment-monitor-{deployment_id}",
    ):
        # Already closed is fine.
        with contextlib.suppress(RPCError):
            await client.get_workflow_handle(workflow_id).terminate("test over")


async def test_deploy_stage_releases_the_run_to_a_static_environment(
    settings, session_maker, temporal_client, task_queue, tmp_path: Path
):
    org = await make_org(session_maker, role="admin")
    project_id, env_id = await make_environment(session_maker, org.org_id, provider="static")
    pipeline_id = await make_deploy_pipeline(session_maker, org.org_id, project_id, env_id)
    async with workers(temporal_client, task_queue, settings, session_maker, tmp_path) as stage:
        run = await _run(
            temporal_client, settings, session_maker, task_queue, org.org_id, pipeline_id
        )
        assert run.status == "success", run.error
        deployment_id = pipeline_deployment_id(str(run.id), str(env_id))
        async with session_maker() as session:
            rows = (
                await session.scalars(select(Deployment).where(Deployment.environment_id == env_id))
            ).all()
            executions = await session.scalar(
                select(func.count())
                .select_from(WorkflowExecution)
                .where(WorkflowExecution.workflow_id == f"deployment-{deployment_id}")
            )
        assert [(r.id, r.status) for r in rows] == [(deployment_id, "active")]
        assert rows[0].pipeline_run_id == run.id and rows[0].url
        assert executions == 1
        assert LocalObjectStore(settings.objects_dir).exists(f"{rows[0].artifact_key}/index.html")

        # A retried activity finds the same deployment (no second row, same input).
        again = await stage.prepare_pipeline_deployment(
            DeployStageInput(
                run_id=str(run.id),
                organization_id=str(org.org_id),
                project_id=str(project_id),
                environment_id=str(env_id),
            )
        )
        assert DeploymentInput.model_validate(again).deployment_id == str(deployment_id)
        async with session_maker() as session:
            count = await session.scalar(
                select(func.count())
                .select_from(Deployment)
                .where(Deployment.environment_id == env_id)
            )
        assert count == 1
        # The API path (deploy this run again later) finds what the stage stored: the run's
        # workspace is gone once the run finished, its source archive is not.
        assert not (settings.workspaces_dir / str(run.id)).exists()
        async with session_maker() as session:
            project = await session.get(Project, project_id)
            assert project is not None
            source = await sources.source_from_run(session, settings, project, run.id)
        assert source.context_key and source.context_key.endswith(".tar.gz")
        await _end_leftovers(temporal_client, env_id, str(deployment_id))


async def test_a_deployment_that_does_not_go_live_fails_the_stage_and_the_run(
    settings, session_maker, temporal_client, task_queue, tmp_path: Path
):
    # The stage's own commands pass, but the output has no index.html: the release fails.
    org = await make_org(session_maker, role="admin")
    project_id, env_id = await make_environment(session_maker, org.org_id, provider="static")
    pipeline_id = await make_deploy_pipeline(
        session_maker,
        org.org_id,
        project_id,
        env_id,
        build="mkdir -p dist && printf 'about' > dist/about.html",
        deploy_check="test -d dist",
    )
    async with workers(temporal_client, task_queue, settings, session_maker, tmp_path):
        run = await _run(
            temporal_client, settings, session_maker, task_queue, org.org_id, pipeline_id
        )
    assert run.status == "failed"
    assert run.error and "stage deploy failed" in run.error and "ended failed" in run.error
    deployment_id = pipeline_deployment_id(str(run.id), str(env_id))
    async with session_maker() as session:
        row = await session.get(Deployment, deployment_id)
    assert row is not None and row.status == "failed"
    await _end_leftovers(temporal_client, env_id, str(deployment_id))


async def test_deploy_stage_to_another_orgs_environment_fails_the_run(
    settings, session_maker, temporal_client, task_queue, tmp_path: Path
):
    org = await make_org(session_maker, role="admin")
    other = await make_org(session_maker, role="admin")
    project_id, _ = await make_environment(session_maker, org.org_id, provider="static")
    _, foreign_env = await make_environment(session_maker, other.org_id, provider="static")
    pipeline_id = await make_deploy_pipeline(session_maker, org.org_id, project_id, foreign_env)
    async with workers(temporal_client, task_queue, settings, session_maker, tmp_path):
        run = await _run(
            temporal_client, settings, session_maker, task_queue, org.org_id, pipeline_id
        )
    assert run.status == "failed"
    assert run.error and "does not exist in this run's project" in run.error
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(Deployment)
            .where(Deployment.environment_id == foreign_env)
        )
    assert count == 0


async def test_monthly_limit_is_a_non_retryable_failure_and_writes_nothing(
    settings, session_maker, monkeypatch, tmp_path: Path
):
    org = await make_org(session_maker, role="admin")
    project_id, env_id = await make_environment(session_maker, org.org_id, provider="static")
    pipeline_id = await make_deploy_pipeline(session_maker, org.org_id, project_id, env_id)
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    (settings.workspaces_dir / str(run.id) / "dist").mkdir(parents=True)

    async def refuse(*_: Any, **__: Any) -> None:
        raise PaymentRequired(
            "The Free plan allows 10 deployments per month", limit="deployments_per_month"
        )

    monkeypatch.setattr(pipeline_stage, "enforce_limit", refuse)
    stage = PipelineDeployActivities(
        settings=settings,
        session_maker=session_maker,
        store=LocalObjectStore(settings.objects_dir),
    )
    with pytest.raises(ApplicationError) as caught:
        await stage.prepare_pipeline_deployment(
            DeployStageInput(
                run_id=str(run.id),
                organization_id=str(org.org_id),
                project_id=str(project_id),
                environment_id=str(env_id),
            )
        )
    assert caught.value.non_retryable and caught.value.type == "PaymentRequired"
    assert "deployments per month" in caught.value.message
    async with session_maker() as session:
        deployment_id = pipeline_deployment_id(str(run.id), str(env_id))
        assert await session.get(Deployment, deployment_id) is None


async def test_a_commit_deploys_its_newest_successful_run(
    settings, session_maker, temporal_client, task_queue, tmp_path: Path, api_client
):
    """What an exported CI job sends: `{"commit_sha", "branch"}` → that commit's built source."""
    org = await make_org(session_maker, role="admin")
    project_id, env_id = await make_environment(session_maker, org.org_id, provider="static")
    pipeline_id = await make_deploy_pipeline(session_maker, org.org_id, project_id, env_id)
    sha = "0123456789abcdef0123456789abcdef01234567"
    async with workers(temporal_client, task_queue, settings, session_maker, tmp_path):
        run = await _run(
            temporal_client, settings, session_maker, task_queue, org.org_id, pipeline_id
        )
        assert run.status == "success", run.error
        async with session_scope(session_maker) as session:
            row = await session.get(PipelineRun, run.id)
            assert row is not None
            row.commit_sha, row.branch = sha, "main"

        missing = await api_client.post(
            f"/v1/environments/{env_id}/deployments",
            json={"commit_sha": "fedcba9876543210", "branch": "main"},
            headers=org.headers,
        )
        assert missing.status_code == 409, missing.text
        assert "no successful pipeline run of commit" in missing.json()["detail"]
        wrong_branch = await api_client.post(
            f"/v1/environments/{env_id}/deployments",
            json={"commit_sha": sha[:12], "branch": "release"},
            headers=org.headers,
        )
        assert wrong_branch.status_code == 409, wrong_branch.text

        created = await api_client.post(
            f"/v1/environments/{env_id}/deployments",
            json={"commit_sha": sha[:12], "branch": "main"},
            headers=org.headers,
        )
        assert created.status_code == 202, created.text
        body = created.json()
        assert body["pipeline_run_id"] == str(run.id)
        handle = temporal_client.get_workflow_handle(f"deployment-{body['id']}")
        outcome = await handle.result()
        assert outcome["status"] == "active", outcome
    await _end_leftovers(temporal_client, env_id, body["id"])
    await _end_leftovers(
        temporal_client, env_id, str(pipeline_deployment_id(str(run.id), str(env_id)))
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
        await _end_leftovers(temporal_client, env_id, str(deployment_id))
    async with session_maker() as session:
        row = await session.get(Deployment, deployment_id)
    assert row is not None and row.status == "active"
