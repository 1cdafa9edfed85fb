"""Approvals name the person behind an API key, on the real API, Postgres and Temporal: that
person cannot approve their own deployment through any credential, and every path that creates
a deployment (API, pipeline deploy stage, promote, rollback) records them."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from temporalio.client import WorkflowUpdateFailedError
from temporalio.testing import ActivityEnvironment

from activities.deployments.pipeline_stage import PipelineDeployActivities
from db.models.deployments import Deployment
from db.models.projects import Environment
from db.session import session_scope
from infra.storage import LocalObjectStore
from tests.deployments.helpers import (
    another_key,
    decide,
    make_activities,
    make_environment,
    make_pipeline_run,
    protect,
    protected_environment,
    request_deployment,
    running_worker,
    stop,
    wait_status,
)
from tests.factories import make_org
from workflows.deployment import DeploymentWorkflow, deployment_workflow_id
from workflows.deployment_models import DeploymentInput
from workflows.runs_models import DeployStageInput


async def test_a_key_holder_cannot_approve_what_their_key_requested(
    api_client, settings, session_maker, temporal_client, task_queue, tmp_path: Path
) -> None:
    org = await make_org(session_maker, role="admin")
    env_id = await protected_environment(session_maker, org.org_id, 1)
    activities = make_activities(settings, session_maker, temporal_client, None)
    async with running_worker(temporal_client, task_queue, activities):
        # Requested with the admin's API key only: no user on the request.
        dep = await request_deployment(
            session_maker,
            temporal_client,
            org.org_id,
            env_id,
            task_queue,
            api_key_id=org.api_key_id,
        )
        try:
            async with session_maker() as session:
                row = await session.get(Deployment, dep)
                assert row is not None and row.triggered_by_user_id == org.user_id
            url = f"/v1/deployments/{dep}/approve"
            # The same person, through another credential (their second key): refused.
            mine = await another_key(session_maker, org.org_id, org.user_id)
            r = await api_client.post(url, json={"reason": "mine"}, headers=mine)
            assert r.status_code == 403, r.text
            r = await api_client.post(url, json={"reason": "mine"}, headers=org.headers)
            assert r.status_code == 403, r.text
            # Straight to the workflow, the rule holds too.
            handle = temporal_client.get_workflow_handle_for(
                DeploymentWorkflow.run, deployment_workflow_id(str(dep))
            )
            with pytest.raises(WorkflowUpdateFailedError):
                await decide(handle, str(org.user_id), "admin", approved=True, reason="self")
            owner = await another_key(session_maker, org.org_id, org.owner_user_id)
            r = await api_client.post(url, json={"reason": "ok"}, headers=owner)
            assert r.status_code == 200, r.text
            assert r.json()["approved_by"] == [str(org.owner_user_id)]
            await wait_status(
                session_maker,
                dep,
                ("queued", "deploying", "verifying", "active", "failed", "rolled_back"),
            )
        finally:
            await stop(temporal_client, dep)


async def test_a_pipeline_run_triggered_with_a_key_is_its_owners(
    settings, session_maker, tmp_path: Path
) -> None:
    """The deploy stage's deployment names the key's owner as the person behind it."""
    org = await make_org(session_maker, role="admin")
    project_id, env_id = await make_environment(session_maker, org.org_id, provider="static")
    await protect(session_maker, env_id, 1)
    run = await make_pipeline_run(
        session_maker,
        org.org_id,
        project_id,
        status="running",
        triggered_by_api_key_id=org.api_key_id,
    )
    (settings.workspaces_dir / str(run.id)).mkdir(parents=True)
    (settings.workspaces_dir / str(run.id) / "index.html").write_text("hi")
    prepare = PipelineDeployActivities(
        settings=settings,
        session_maker=session_maker,
        store=LocalObjectStore(settings.objects_dir),
    )
    stage = DeployStageInput(
        run_id=str(run.id),
        organization_id=str(org.org_id),
        project_id=str(project_id),
        environment_id=str(env_id),
    )
    env = ActivityEnvironment()
    # Two attempts at once (a retried stage): one row, both answers name the key's owner.
    both: list[Any] = list(
        await asyncio.gather(
            env.run(prepare.prepare_pipeline_deployment, stage),
            env.run(prepare.prepare_pipeline_deployment, stage),
            return_exceptions=True,
        )
    )
    results = [r for r in both if isinstance(r, DeploymentInput)]
    assert results, both
    for result in results:
        assert result.triggered_by_user_id == str(org.user_id)
        assert result.protected is True and result.required_approvals == 1
    # The environment loses its protection afterwards: a retried stage keeps the rules.
    async with session_scope(session_maker) as session:
        await session.execute(
            update(Environment)
            .where(Environment.id == env_id)
            .values(is_protected=False, required_approvals=0)
        )
    retried = await env.run(prepare.prepare_pipeline_deployment, stage)
    assert retried.protected is True and retried.triggered_by_user_id == str(org.user_id)


async def test_promote_and_rollback_with_a_key_are_its_owners(
    api_client, session_maker, temporal_client
) -> None:
    """Every path that creates a deployment records the person behind the key, and that person
    cannot approve it with another credential."""
    org = await make_org(session_maker, role="admin")
    project_id, staging = await make_environment(session_maker, org.org_id, provider="static")
    _, production = await make_environment(
        session_maker, org.org_id, provider="static", project_id=project_id
    )
    await protect(session_maker, production, 1)
    rows = {}
    async with session_scope(session_maker) as session:
        for name, env_id, status in (
            ("staged", staging, "active"),
            ("older", production, "superseded"),
            ("newer", production, "active"),
        ):
            row = Deployment(
                id=uuid.uuid4(),
                environment_id=env_id,
                project_id=project_id,
                organization_id=org.org_id,
                version=name,
                provider="static",
                status=status,
                artifact_key=f"deployments/{uuid.uuid4()}/site",
            )
            session.add(row)
            await session.flush()
            rows[name] = row.id
    created: list[str] = []
    try:
        r = await api_client.post(
            f"/v1/deployments/{rows['staged']}/promote",
            json={"target_environment_id": str(production)},
            headers=org.headers,
        )
        assert r.status_code == 202, r.text
        created.append(r.json()["id"])
        r = await api_client.post(f"/v1/deployments/{rows['newer']}/rollback", headers=org.headers)
        assert r.status_code == 202, r.text
        created.append(r.json()["id"])
        mine = await another_key(session_maker, org.org_id, org.user_id)
        for dep in created:
            async with session_maker() as session:
                row = await session.get(Deployment, uuid.UUID(dep))
                assert row is not None
                assert row.triggered_by_user_id == org.user_id
                assert row.triggered_by_api_key_id == org.api_key_id
                assert row.approval_protected and row.required_approvals == 1
            r = await api_client.post(
                f"/v1/deployments/{dep}/approve", json={"reason": "mine"}, headers=mine
            )
            assert r.status_code == 403, r.text
    finally:
        for dep in created:
            await stop(temporal_client, uuid.UUID(dep))
