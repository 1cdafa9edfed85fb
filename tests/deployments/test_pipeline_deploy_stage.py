"""A pipeline deploy stage: `prepare_pipeline_deployment`, then DeploymentWorkflow as a child:
the run released, a deployment that does not go live, another organization's environment, the
monthly limit, and a commit deployed from its newest successful run.

A real run (local process runner) builds a static site into its workspace; its deploy stage
releases it to a `static` environment. PipelineRunWorkflow sends that stage to the production
DEPLOYMENTS_TASK_QUEUE constant, so the deployments worker here listens on it (each pytest
session has its own Temporal server, so the name is not shared with anyone else).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from temporalio.exceptions import ApplicationError

from activities.deployments.pipeline_stage import PipelineDeployActivities
from core.deployments import pipeline_stage, sources
from core.deployments.pipeline_stage import pipeline_deployment_id
from db.models.deployments import Deployment
from db.models.operations import WorkflowExecution
from db.models.pipelines import PipelineRun
from db.models.projects import Project
from db.session import session_scope
from forgeline.errors import PaymentRequired
from infra.storage import LocalObjectStore
from tests.deployments.helpers import make_environment
from tests.deployments.pipeline_deploy import (
    end_leftovers,
    make_deploy_pipeline,
    run_to_end,
    workers,
)
from tests.factories import make_org
from tests.runs.helpers import (
    create_run,
)
from workflows.deployment_models import DeploymentInput
from workflows.runs_models import (
    DeployStageInput,
)


async def test_deploy_stage_releases_the_run_to_a_static_environment(
    settings, session_maker, temporal_client, task_queue, tmp_path: Path
):
    org = await make_org(session_maker, role="admin")
    project_id, env_id = await make_environment(session_maker, org.org_id, provider="static")
    pipeline_id = await make_deploy_pipeline(session_maker, org.org_id, project_id, env_id)
    async with workers(temporal_client, task_queue, settings, session_maker, tmp_path) as stage:
        run = await run_to_end(
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
        await end_leftovers(temporal_client, env_id, str(deployment_id))


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
        run = await run_to_end(
            temporal_client, settings, session_maker, task_queue, org.org_id, pipeline_id
        )
    assert run.status == "failed"
    assert run.error and "stage deploy failed" in run.error and "ended failed" in run.error
    deployment_id = pipeline_deployment_id(str(run.id), str(env_id))
    async with session_maker() as session:
        row = await session.get(Deployment, deployment_id)
    assert row is not None and row.status == "failed"
    await end_leftovers(temporal_client, env_id, str(deployment_id))


async def test_deploy_stage_to_another_orgs_environment_fails_the_run(
    settings, session_maker, temporal_client, task_queue, tmp_path: Path
):
    org = await make_org(session_maker, role="admin")
    other = await make_org(session_maker, role="admin")
    project_id, _ = await make_environment(session_maker, org.org_id, provider="static")
    _, foreign_env = await make_environment(session_maker, other.org_id, provider="static")
    pipeline_id = await make_deploy_pipeline(session_maker, org.org_id, project_id, foreign_env)
    async with workers(temporal_client, task_queue, settings, session_maker, tmp_path):
        run = await run_to_end(
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
        run = await run_to_end(
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
    await end_leftovers(temporal_client, env_id, body["id"])
    await end_leftovers(
        temporal_client, env_id, str(pipeline_deployment_id(str(run.id), str(env_id)))
    )
