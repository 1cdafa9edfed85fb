"""GET /v1/runs/{id} while no worker serves the run's workflow: the live view's query is bounded
and the answer comes from the projection (before, it waited for a workflow task for ~30 s)."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from forgeline.settings import Settings
from tests.factories import make_org
from tests.runs.helpers import create_run, make_pipeline, stage, start

# Not a performance bound: the unbounded query took ~30 s; this only keeps a hang from passing.
HANG = 20.0


async def test_run_detail_without_a_worker_answers_from_the_projection(
    api_client: httpx.AsyncClient,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    temporal_client: Client,
    task_queue: str,
) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("build", "true")])
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    # Started on a queue nobody polls: the workflow exists and can never answer a query.
    handle = await start(temporal_client, run, task_queue)
    try:

        async def detail() -> httpx.Response:
            return await api_client.get(f"/v1/runs/{run.id}", headers=org.headers)

        # Several readers at once: none waits on the others' queries.
        answers = await asyncio.wait_for(asyncio.gather(*(detail() for _ in range(3))), HANG)
        for answer in answers:
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["status"] == "queued"
            assert body["live"] is None
            assert body["id"] == str(run.id)
    finally:
        await handle.terminate("test over")
