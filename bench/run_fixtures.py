"""The runs bench's fixtures: a pipeline of N no-op stages, a run's row as the API writes it, and
one run timed from starting its workflow to its result."""

from __future__ import annotations

import time
import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.runs import service
from core.runs.schemas import RunCreate
from db.models.pipelines import Pipeline, PipelineRun, PipelineStage
from db.models.projects import Project
from db.session import session_scope
from forgeline.settings import Settings


async def make_pipeline(
    session_maker: async_sessionmaker[AsyncSession], org_id: uuid.UUID, n: int
) -> uuid.UUID:
    suffix = uuid.uuid4().hex[:8]
    async with session_scope(session_maker) as session:
        project = Project(
            id=uuid.uuid4(),
            organization_id=org_id,
            name=suffix,
            slug=f"b-{suffix}",
            project_type="api",
        )
        session.add(project)
        await session.flush()
        pipeline = Pipeline(
            id=uuid.uuid4(), project_id=project.id, organization_id=org_id, name=f"noop-{n}"
        )
        session.add(pipeline)
        await session.flush()
        for i in range(n):
            session.add(
                PipelineStage(
                    id=uuid.uuid4(),
                    pipeline_id=pipeline.id,
                    name=f"s{i}",
                    position=i,
                    stage_type="custom",
                    commands=[{"run": "true"}],
                )
            )
    return pipeline.id


async def create_run(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    org_id: uuid.UUID,
    pipeline_id: uuid.UUID,
) -> PipelineRun:
    """The run's row, as `POST /v1/pipelines/{id}/runs` writes it before starting the workflow."""
    async with session_scope(session_maker) as session:
        return await service.create_run(
            session, settings, organization_id=org_id, pipeline_id=pipeline_id, body=RunCreate()
        )


async def start_and_finish(client: Client, run: PipelineRun, queue: str) -> float:
    """ms from starting the run's workflow to its result (what the bare chain is timed on)."""
    started = time.perf_counter()
    handle = await service.start_run_workflow(client, run, task_queue=queue)
    result = await handle.result()
    assert result.status == "success", result
    return (time.perf_counter() - started) * 1000


async def one_run(
    client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    org_id: uuid.UUID,
    pipeline_id: uuid.UUID,
    queue: str,
) -> float:
    run = await create_run(session_maker, settings, org_id, pipeline_id)
    return await start_and_finish(client, run, queue)
