"""What the pull request preview expiry tests share: a preview lifetime with a time to live of
seconds, the wait for a pull request's report to end, and a tracked pull request whose runs and
preview deployments the race tests write directly (what a deploy stage does first)."""

from __future__ import annotations

import contextlib
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import update
from temporalio.client import Client, WorkflowHandle
from temporalio.service import RPCError

from core.deployments.pr_previews import preview_for_run
from db.models.deployments import Deployment
from db.models.integrations import PullRequest
from db.models.pipelines import PipelineRun
from db.models.projects import Environment
from db.session import session_scope
from forgeline.settings import Settings
from tests.deployments.helpers import make_environment
from tests.factories import make_org
from tests.integrations.support import Connected, connect_project
from tests.integrations.test_pr_previews import TOKEN
from tests.runs.helpers import create_run
from workflows.deployment_models import PreviewInput
from workflows.integrations_models import pull_request_report_workflow_id
from workflows.preview import PreviewEnvironmentWorkflow, preview_workflow_id

SHA_A, SHA_B = "a" * 40, "b" * 40


async def short_lifetime(
    client: Client, env: Environment, org_id: uuid.UUID, ttl: float, task_queue: str
) -> WorkflowHandle[Any, str]:
    """The preview's lifetime with a time to live of `ttl` seconds (a real one lasts days):
    the running one ends, a new one starts under the same ID."""
    workflow_id = preview_workflow_id(str(env.id))
    with contextlib.suppress(RPCError):
        await client.get_workflow_handle(workflow_id).terminate("a shorter time to live")
    return await client.start_workflow(
        PreviewEnvironmentWorkflow.run,
        PreviewInput(
            environment_id=str(env.id),
            organization_id=str(org_id),
            project_id=str(env.project_id),
            provider=env.provider,
            ttl_seconds=ttl,
        ),
        id=workflow_id,
        task_queue=task_queue,
    )


async def settled(client: Client, connected: Connected, number: int) -> None:
    """Until the pull request's report has no pass left (none outlives its test's forge)."""
    report = pull_request_report_workflow_id(str(connected.project_id), number)
    await client.get_workflow_handle(report).result()


@dataclass
class Tracked:
    connected: Connected
    named_id: uuid.UUID
    number: int


async def tracked_pull_request(session_maker: Any, settings: Settings, number: int) -> Tracked:
    org = await make_org(session_maker)
    connected = await connect_project(
        session_maker,
        settings,
        org.org_id,
        url="https://forge.invalid/acme/widgets.git",
        pipelines=[{"on_pull_request": {}}],
        token=TOKEN,
    )
    _, named_id = await make_environment(
        session_maker, org.org_id, provider="static", project_id=connected.project_id
    )
    async with session_scope(session_maker) as session:
        session.add(
            PullRequest(
                id=uuid.uuid4(),
                project_id=connected.project_id,
                repository_id=connected.repository_id,
                pr_number=number,
                pr_url="",
                repository_name="acme/widgets",
                title="topic",
                branch_name="topic",
                status="open",
            )
        )
    return Tracked(connected, named_id, number)


async def pull_request_run(
    session_maker: Any, settings: Settings, tracked: Tracked, status: str
) -> PipelineRun:
    connected = tracked.connected
    created = await create_run(
        session_maker, settings, connected.org_id, connected.pipeline_ids[0], branch="topic"
    )
    async with session_scope(session_maker) as session:
        run = await session.get(PipelineRun, created.id)
        assert run is not None
        run.project_id = connected.project_id
        run.status = status
        run.metadata_ = {
            "forge": {
                "event": "pull_request",
                "pr_number": tracked.number,
                "provider": "github",
                "repository": "acme/widgets",
            }
        }
    return run


async def deploy(
    session_maker: Any,
    tracked: Tracked,
    run: PipelineRun,
    sha: str,
    status: str,
    created_at: datetime | None = None,
) -> tuple[Environment, uuid.UUID]:
    """What a deploy stage does first, in one transaction: the preview (under its lock) and the
    deployment row."""
    async with session_scope(session_maker) as session:
        named = await session.get(Environment, tracked.named_id)
        assert named is not None
        env = await preview_for_run(session, run, named)
        env.url = env.url or f"http://pr-{tracked.number}-{uuid.uuid4().hex[:6]}.sites.test"
        deployment = Deployment(
            id=uuid.uuid4(),
            environment_id=env.id,
            project_id=run.project_id,
            organization_id=run.organization_id,
            pipeline_run_id=run.id,
            version=sha[:12],
            commit_sha=sha,
            status=status,
            provider="static",
            is_preview=True,
        )
        if created_at is not None:
            deployment.created_at = created_at
        session.add(deployment)
    return env, deployment.id


async def goes_live(session_maker: Any, run: PipelineRun, live: uuid.UUID) -> None:
    """The push's deployment went live (the one before it superseded) and its run succeeded."""
    async with session_scope(session_maker) as session:
        row = await session.get(Deployment, live)
        assert row is not None
        await session.execute(
            update(Deployment)
            .where(Deployment.environment_id == row.environment_id, Deployment.id != live)
            .where(Deployment.status == "active")
            .values(status="superseded")
        )
        row.status = "active"
        await session.execute(
            update(PipelineRun).where(PipelineRun.id == run.id).values(status="success")
        )
