"""Shared setup for deployment workflow/API tests: rows, activities, worker, waiting; people and
API keys of an organization, protected environments and deployments awaiting approval."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from activities.deployments.activities import DeploymentActivities
from activities.deployments.registration import WORKFLOWS
from core.accounts.scopes import ALL_SCOPES
from core.deployments import repository, service
from db.models.accounts import OrganizationMember, User
from db.models.deployments import Deployment
from db.models.pipelines import Pipeline, PipelineRun
from db.models.projects import Environment, Project
from db.session import session_scope
from forgeline.local_paths import organization_roots
from forgeline.settings import Settings
from forgeline.temporal_client import workflow_runner
from infra.storage import LocalObjectStore
from tests.deployments.images import write_context
from tests.factories import OrgFixture, make_org
from workflows.deployment import deployment_workflow_id
from workflows.deployment_models import DeploymentSource

FAST_HEALTH = {
    "health_check_path": "/healthz",
    "health_check_passes": 3,
    "health_check_failure_threshold": 3,
    "health_check_interval_seconds": 0.2,
    "health_check_window_seconds": 10,
    "monitor_interval_seconds": 30 * 24 * 3600,
}


async def make_environment(
    session_maker: async_sessionmaker[AsyncSession],
    org_id: uuid.UUID,
    *,
    provider: str = "docker",
    env_type: str = "staging",
    protected: bool = False,
    config: dict[str, Any] | None = None,
    project_id: uuid.UUID | None = None,
) -> tuple[uuid.UUID, uuid.UUID]:
    async with session_scope(session_maker) as session:
        if project_id is None:
            project = Project(
                id=uuid.uuid4(),
                organization_id=org_id,
                name="Site",
                slug=f"site-{uuid.uuid4().hex[:8]}",
                project_type="static_site",
            )
            session.add(project)
            await session.flush()
            project_id = project.id
        env = Environment(
            id=uuid.uuid4(),
            project_id=project_id,
            name=f"{env_type}-{uuid.uuid4().hex[:6]}",
            env_type=env_type,
            provider=provider,
            is_protected=protected,
            config={**FAST_HEALTH, **(config or {})},
        )
        session.add(env)
    return project_id, env.id


async def start_deployment(
    session_maker: async_sessionmaker[AsyncSession],
    temporal: Client,
    org_id: uuid.UUID,
    environment_id: uuid.UUID,
    source: DeploymentSource,
    *,
    task_queue: str,
    user_id: uuid.UUID | None = None,
) -> uuid.UUID:
    async with session_scope(session_maker) as session:
        env, project = await repository.environment_for(session, org_id, environment_id)
        deployment, inp = await service.create_deployment(
            session, env, project, source, triggered_by_user_id=user_id
        )
    await service.start_workflow(temporal, inp, task_queue=task_queue)
    return deployment.id


async def deployment_row(
    session_maker: async_sessionmaker[AsyncSession], deployment_id: uuid.UUID
) -> Deployment:
    async with session_maker() as session:
        row = await session.scalar(select(Deployment).where(Deployment.id == deployment_id))
        assert row is not None
        return row


async def wait_status(
    session_maker: async_sessionmaker[AsyncSession],
    deployment_id: uuid.UUID,
    statuses: tuple[str, ...],
    timeout: float = 60,
) -> Deployment:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        row = await deployment_row(session_maker, deployment_id)
        if row.status in statuses:
            return row
        if loop.time() > deadline:
            raise AssertionError(f"deployment {deployment_id} stuck in {row.status}")
        await asyncio.sleep(0.1)


def make_activities(
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    temporal: Client,
    docker_client: Any,
    s3_factory: Any = None,
) -> DeploymentActivities:
    return DeploymentActivities(
        settings=settings,
        session_maker=session_maker,
        temporal=temporal,
        docker_client=docker_client,
        store=LocalObjectStore(settings.objects_dir),
        s3_factory=s3_factory,
    )


@asynccontextmanager
async def running_worker(
    client: Client, task_queue: str, activities: DeploymentActivities
) -> AsyncIterator[Worker]:
    worker = Worker(
        client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=activities.all(),
        workflow_runner=workflow_runner(),
    )
    async with worker:
        yield worker


async def decide(
    handle: Any, approver_user_id: str, role: str, *, approved: bool, reason: str
) -> Any:
    """A person's approval decision on a DeploymentWorkflow waiting for one (the update)."""
    from workflows.deployment import DeploymentWorkflow
    from workflows.deployment_models import ApprovalDecision

    return await handle.execute_update(
        DeploymentWorkflow.decide,
        ApprovalDecision(
            approver_user_id=approver_user_id,
            approver_role=role,
            approved=approved,
            reason=reason,
        ),
    )


async def get_app(settings: Settings, url: str) -> Any:
    """GET an app URL (`http://<host>.localhost:<port>/...`) through the proxy on loopback."""
    import httpx

    from tests.deployments.proxy import via_proxy

    target, headers = via_proxy(url, settings.proxy_http_port)
    async with httpx.AsyncClient() as http:
        return await http.get(target, headers=headers)


def org_sources(settings: Settings, organization_id: uuid.UUID | str) -> Path:
    """A fresh directory inside the organization's local root: the only place a deployment's
    `source_dir` (or a local build context) of that organization may be."""
    path = organization_roots(settings, organization_id)[0] / uuid.uuid4().hex
    path.mkdir(parents=True)
    return path


# Already published files: the deployment needs no build (nothing here is about building).
PUBLISHED = DeploymentSource(version="v1", static_prefix="deployments/none/site")


async def add_member(
    session_maker: Any, org_id: uuid.UUID, role: str
) -> tuple[uuid.UUID, dict[str, str]]:
    """Another person in the organization, with an API key of their own."""
    from core.accounts.keys import insert_api_key

    async with session_scope(session_maker) as session:
        user = User(id=uuid.uuid4(), email=f"{role}-{uuid.uuid4().hex[:8]}@example.com", name=role)
        session.add(user)
        await session.flush()
        session.add(OrganizationMember(organization_id=org_id, user_id=user.id, role=role))
        _key, raw = await insert_api_key(
            session,
            organization_id=org_id,
            created_by_user_id=user.id,
            name=f"{role} key",
            scopes=sorted(ALL_SCOPES),
        )
    return user.id, {"Authorization": f"Bearer {raw}"}


async def another_key(session_maker: Any, org_id: uuid.UUID, user_id: uuid.UUID) -> dict[str, str]:
    from core.accounts.keys import insert_api_key

    async with session_scope(session_maker) as session:
        _key, raw = await insert_api_key(
            session,
            organization_id=org_id,
            created_by_user_id=user_id,
            name="another",
            scopes=sorted(ALL_SCOPES),
        )
    return {"Authorization": f"Bearer {raw}"}


async def protect(session_maker: Any, env_id: uuid.UUID, required: int) -> None:
    async with session_scope(session_maker) as session:
        await session.execute(
            update(Environment)
            .where(Environment.id == env_id)
            .values(is_protected=True, required_approvals=required)
        )


async def protected_environment(
    session_maker: async_sessionmaker[AsyncSession], org_id: uuid.UUID, required: int
) -> uuid.UUID:
    """A static environment of a new project whose deployments need `required` approvals."""
    _, env_id = await make_environment(session_maker, org_id, provider="static")
    await protect(session_maker, env_id, required)
    return env_id


async def request_deployment(
    session_maker: Any,
    client: Any,
    org_id: uuid.UUID,
    env_id: uuid.UUID,
    task_queue: str,
    *,
    user_id: uuid.UUID | None = None,
    api_key_id: uuid.UUID | None = None,
) -> uuid.UUID:
    async with session_scope(session_maker) as session:
        env, project = await repository.environment_for(session, org_id, env_id)
        deployment, inp = await service.create_deployment(
            session,
            env,
            project,
            PUBLISHED,
            triggered_by_user_id=user_id,
            triggered_by_api_key_id=api_key_id,
        )
    await service.start_workflow(client, inp, task_queue=task_queue)
    await wait_status(session_maker, deployment.id, ("awaiting_approval",))
    return deployment.id


async def stop(client: Any, deployment_id: uuid.UUID) -> None:
    handle = client.get_workflow_handle(deployment_workflow_id(str(deployment_id)))
    with contextlib.suppress(Exception):
        await handle.terminate("test over")


async def make_pipeline_run(
    session_maker: async_sessionmaker[AsyncSession],
    org_id: uuid.UUID,
    project_id: uuid.UUID,
    **fields: Any,
) -> PipelineRun:
    """A pipeline of the project with one run row (number 1) as `fields` describe it."""
    async with session_scope(session_maker) as session:
        pipeline = Pipeline(
            id=uuid.uuid4(), project_id=project_id, organization_id=org_id, name="p"
        )
        session.add(pipeline)
        await session.flush()
        run = PipelineRun(
            id=uuid.uuid4(),
            pipeline_id=pipeline.id,
            organization_id=org_id,
            project_id=project_id,
            run_number=1,
            **fields,
        )
        session.add(run)
    return run


def static_site(root: Path, version: str = "v1") -> DeploymentSource:
    """A static site whose page says `version`, written under root/<version>."""
    return DeploymentSource(
        version=version,
        context_dir=str(write_context(root / version, None, version)),
        output_dir="www",
    )


async def docker_environment(
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    client: Client,
    docker: Any,
) -> tuple[OrgFixture, Path, uuid.UUID, DeploymentActivities]:
    """A new organization with a docker environment: the organization, the directory its
    sources go in, the environment, and deployment activities on the Docker engine."""
    org = await make_org(session_maker)
    _, env_id = await make_environment(session_maker, org.org_id)
    activities = make_activities(settings, session_maker, client, docker)
    return org, org_sources(settings, org.org_id), env_id, activities
