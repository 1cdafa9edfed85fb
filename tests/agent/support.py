"""Test support for agent workflow/API tests: projects with local repos, an in-process worker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from activities.agent.activities import AgentActivities
from db.models.agent import AgentExecution, AgentStep, AgentTask, ToolInvocation
from db.models.pipelines import Pipeline, PipelineRun
from db.models.projects import Project, Repository
from db.session import session_scope
from forgeline.settings import Settings
from forgeline.temporal_client import workflow_runner
from infra.llm import AnthropicLlm
from infra.storage import create_object_store
from workflows.agent_task import AgentTaskWorkflow


async def add_failed_run(
    session: AsyncSession, org_id: uuid.UUID, project_id: uuid.UUID
) -> uuid.UUID:
    """A pipeline of the project and one failed run of it (number 1), flushed in `session`; the
    caller adds the run's stage executions."""
    pipeline = Pipeline(id=uuid.uuid4(), project_id=project_id, organization_id=org_id, name="ci")
    session.add(pipeline)
    await session.flush()
    run_id = uuid.uuid4()
    session.add(
        PipelineRun(
            id=run_id,
            pipeline_id=pipeline.id,
            organization_id=org_id,
            project_id=project_id,
            run_number=1,
            status="failed",
        )
    )
    await session.flush()
    return run_id


async def make_project(
    session_maker: async_sessionmaker[AsyncSession],
    org_id: uuid.UUID,
    repo_url: str | None,
    *,
    provider: str = "local",
    name: str | None = None,
) -> uuid.UUID:
    project_id = uuid.uuid4()
    async with session_scope(session_maker) as session:
        session.add(
            Project(
                id=project_id,
                organization_id=org_id,
                name=name or f"Sample {project_id.hex[:6]}",
                slug=f"sample-{project_id.hex[:10]}",
                project_type="spa",
            )
        )
        await session.flush()
        if repo_url is not None:
            session.add(Repository(project_id=project_id, provider=provider, url=repo_url))
    return project_id


@asynccontextmanager
async def agent_worker(
    client: Client,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    task_queue: str,
    *,
    anthropic_base_url: str | None = None,
) -> AsyncIterator[AgentActivities]:
    llm = None
    if anthropic_base_url:
        llm = AnthropicLlm(
            api_key="test-key", model="claude-sonnet-4-6", base_url=anthropic_base_url
        )
    acts = AgentActivities(settings, session_maker, create_object_store(settings), llm)
    async with Worker(
        client,
        task_queue=task_queue,
        workflows=[AgentTaskWorkflow],
        activities=acts.activities,
        workflow_runner=workflow_runner(),
    ):
        yield acts
    if llm:
        await llm.close()


@asynccontextmanager
async def verifying_workers(
    client: Client,
    settings: Settings,
    session_maker: async_sessionmaker[AsyncSession],
    state_dir: Path,
) -> AsyncIterator[None]:
    """The agent worker and a pipelines worker on the sandbox runner: what a generate task with
    `verify` needs (its verification runs are pipeline runs)."""
    from forgeline.settings import AGENT_TASK_QUEUE, PIPELINES_TASK_QUEUE
    from tests.runs.helpers import pipeline_worker
    from tests.runs.sandbox import sandbox_runner

    runner = sandbox_runner(state_dir)
    async with (
        agent_worker(client, settings, session_maker, AGENT_TASK_QUEUE),
        pipeline_worker(client, PIPELINES_TASK_QUEUE, settings, session_maker, runner),
    ):
        yield
    await runner.close()


async def counts(
    session_maker: async_sessionmaker[AsyncSession], task_id: uuid.UUID
) -> dict[str, int]:
    async with session_maker() as session:
        execs = select(AgentExecution.id).where(AgentExecution.task_id == task_id)
        return {
            "executions": (
                await session.execute(select(func.count()).select_from(execs.subquery()))
            ).scalar_one(),
            "steps": (
                await session.execute(select(func.count()).where(AgentStep.execution_id.in_(execs)))
            ).scalar_one(),
            "tools": (
                await session.execute(
                    select(func.count()).where(ToolInvocation.execution_id.in_(execs))
                )
            ).scalar_one(),
            "pipelines": (
                await session.execute(
                    select(func.count()).where(Pipeline.generated_by_task_id == task_id)
                )
            ).scalar_one(),
        }


async def task_row(
    session_maker: async_sessionmaker[AsyncSession], task_id: uuid.UUID
) -> AgentTask:
    async with session_maker() as session:
        task = await session.get(AgentTask, task_id)
        assert task is not None
        return task


def git_url(path: Path) -> str:
    return str(path)
