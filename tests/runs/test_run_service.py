"""The runs core without HTTP: creating runs under hostile input and other tenants' IDs, starting
the same run twice at once, and a start that Temporal refuses (the row is closed, never left
queued). Real Postgres and a real Temporal server."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.runs import repository, service
from core.runs.schemas import RunCreate
from db.models.pipelines import Pipeline, PipelineRun
from db.session import session_scope
from forgeline.errors import Conflict, NotFound
from forgeline.settings import Settings
from forgeline.statuses.runs import RunStatus
from tests.factories import make_org
from tests.runs.helpers import create_run, make_pipeline, stage


@pytest.mark.parametrize(
    "body",
    [
        {"branch": "a..b"},
        {"branch": "-upload-pack=evil"},
        {"branch": "x\x00y"},
        {"branch": "refs/heads/@{1}"},
        {"commit_sha": "zzzzzzz"},
        {"variables": [{"name": "FORGELINE_RUN_ID", "value": "x"}]},
        {"variables": [{"name": "PATH", "value": "/evil"}]},
        {"variables": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]},
        {"variables": [{"name": "1BAD", "value": "x"}]},
        {"unknown": "field"},
    ],
)
def test_hostile_run_requests_are_refused(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        RunCreate.model_validate(body)


async def test_shell_metacharacters_in_a_branch_stay_data() -> None:
    body = RunCreate(branch="feat/$(id)`whoami`;x|y")
    assert body.branch == "feat/$(id)`whoami`;x|y"


async def test_another_tenants_pipeline_and_environment_are_not_found(
    session_maker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    mine, theirs = await make_org(session_maker), await make_org(session_maker)
    their_pipeline = await make_pipeline(session_maker, theirs.org_id, [stage("a", "true")])
    with pytest.raises(NotFound):
        await create_run(session_maker, settings, mine.org_id, their_pipeline)
    my_pipeline = await make_pipeline(session_maker, mine.org_id, [stage("a", "true")])
    with pytest.raises(NotFound):
        await create_run(
            session_maker, settings, mine.org_id, my_pipeline, environment_id=uuid.uuid4()
        )
    async with session_scope(session_maker) as session:
        # Nothing was written for the refused requests.
        count = await session.scalar(
            select(PipelineRun.id).where(PipelineRun.pipeline_id == my_pipeline).limit(1)
        )
    assert count is None


async def test_paused_pipeline_and_unfinished_rerun_conflict(
    session_maker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("a", "true")])
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    async with session_scope(session_maker) as session:
        with pytest.raises(Conflict):
            await service.rerun(
                session, settings, organization_id=org.org_id, run_id=run.id, from_failed=True
            )
        pipeline = await session.get(Pipeline, pipeline_id)
        assert pipeline is not None
        pipeline.status = "paused"
    with pytest.raises(Conflict):
        await create_run(session_maker, settings, org.org_id, pipeline_id)


async def test_concurrent_creates_number_runs_without_gaps(
    session_maker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("a", "true")])
    runs = await asyncio.gather(
        *(create_run(session_maker, settings, org.org_id, pipeline_id) for _ in range(8))
    )
    assert sorted(r.run_number for r in runs) == list(range(1, 9))


async def test_starting_the_same_run_twice_at_once_starts_one_workflow(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    temporal_client: Client,
    task_queue: str,
) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("a", "true")])
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    # No worker polls this queue: the workflow stays open until it is terminated below.
    first, second = await asyncio.gather(
        service.start_run_workflow(temporal_client, run, task_queue=task_queue),
        service.start_run_workflow(temporal_client, run, task_queue=task_queue),
    )
    try:
        assert first.id == second.id == run.workflow_id
        runs = [
            w async for w in temporal_client.list_workflows(f'WorkflowId = "{run.workflow_id}"')
        ]
        assert len({w.run_id for w in runs}) <= 1
        described = await first.describe()
        assert described.workflow_type == "PipelineRunWorkflow"
    finally:
        await temporal_client.get_workflow_handle(run.workflow_id or "").terminate()


async def test_a_refused_start_closes_the_run(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    temporal_client: Client,
) -> None:
    """Temporal refuses the start (a namespace it does not know): the committed row is closed as
    failed with the reason, not left queued for ever."""
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("a", "true")])
    refusing = Client(
        temporal_client.service_client,
        namespace=f"missing-{uuid.uuid4().hex}",
        data_converter=temporal_client.data_converter,
    )
    async with session_scope(session_maker) as session:
        run = await service.create_run(
            session,
            settings,
            organization_id=org.org_id,
            pipeline_id=pipeline_id,
            body=RunCreate(),
        )
        with pytest.raises(service.RunNotStarted):
            await service.start_committed_run(session, refusing, run)
    async with session_scope(session_maker) as session:
        stored = await repository.get_run(session, org.org_id, run.id)
    assert stored.status == RunStatus.FAILED
    assert (stored.error or "").startswith("could not start the run: ")
