"""Insight read from daily rollups: the same exact answers as live, days stored once however
many passes run at once, today always live, and the rollup driven by its Temporal Schedule."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from activities.deps import WorkerDeps
from activities.operations.registration import registration
from core.insights import rollups
from core.operations.schedules import ensure_insights_rollup_schedule
from db.models.deployments import Deployment
from db.models.operations import SystemMetric
from db.models.pipelines import PipelineRun
from db.session import session_scope
from forgeline.settings import Settings
from forgeline.temporal_client import workflow_runner
from tests.factories import make_org
from tests.operations.reconcile_support import eventually
from tests.operations.test_insights import seed_history


async def insights(
    api_client: httpx.AsyncClient, project_id: uuid.UUID, headers: dict[str, str]
) -> dict[str, Any]:
    answer = await api_client.get(
        f"/v1/projects/{project_id}/insights", params={"window": "30d"}, headers=headers
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    for moving in ("since", "until"):
        body.pop(moving)
    return body


async def day_rows(session_maker: async_sessionmaker[AsyncSession], project_id: uuid.UUID) -> int:
    async with session_maker() as session:
        return int(
            (
                await session.execute(
                    select(func.count()).where(
                        SystemMetric.metric_name == rollups.DAY_METRIC,
                        SystemMetric.dimensions.contains({"project_id": str(project_id)}),
                    )
                )
            ).scalar_one()
        )


async def test_rollups_answer_as_live_and_today_stays_live(
    api_client: httpx.AsyncClient, session_maker: async_sessionmaker[AsyncSession]
) -> None:
    org = await make_org(session_maker)
    project_id, pipeline_id = await seed_history(session_maker, org)
    live = await insights(api_client, project_id, org.headers)
    # Two passes at once: each day is stored once.
    await asyncio.gather(
        rollups.rollup_active_projects(session_maker, horizon_days=3),
        rollups.rollup_active_projects(session_maker, horizon_days=3),
    )
    stored = await day_rows(session_maker, project_id)
    assert stored >= 1
    await rollups.rollup_active_projects(session_maker, horizon_days=3)
    assert await day_rows(session_maker, project_id) == stored
    assert await insights(api_client, project_id, org.headers) == live
    # Read from the rollups: the raw rows of rolled-up days no longer matter...
    async with session_scope(session_maker) as session:
        await session.execute(delete(Deployment).where(Deployment.project_id == project_id))
    assert await insights(api_client, project_id, org.headers) == live
    # ...while today is computed live.
    now = datetime.now(UTC)
    async with session_scope(session_maker) as session:
        session.add(
            PipelineRun(
                id=uuid.uuid4(),
                pipeline_id=pipeline_id,
                project_id=project_id,
                organization_id=org.org_id,
                run_number=99,
                status="success",
                commit_sha="c9",
                queued_at=now - timedelta(seconds=1),
                started_at=now,
                finished_at=now,
                duration_seconds=0,
            )
        )
    today = await insights(api_client, project_id, org.headers)
    assert today["runs"] == live["runs"] + 1


async def test_the_rollup_schedule_stores_days_without_being_asked(
    temporal_client: Client, session_maker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await make_org(session_maker)
    project_id, _ = await seed_history(session_maker, org)
    ops_settings = settings.model_copy(
        update={
            "operations_task_queue": f"operations-{uuid.uuid4().hex[:12]}",
            "insights_rollup_seconds": 1.0,
        }
    )
    reg = registration(
        WorkerDeps(settings=ops_settings, session_maker=session_maker, temporal=temporal_client)
    )
    schedule_id = f"test-rollup-{uuid.uuid4().hex[:12]}"
    await asyncio.gather(
        ensure_insights_rollup_schedule(temporal_client, ops_settings, schedule_id),
        ensure_insights_rollup_schedule(temporal_client, ops_settings, schedule_id),
    )
    try:
        async with Worker(
            temporal_client,
            task_queue=reg.task_queue,
            workflows=list(reg.workflows),
            activities=list(reg.activities),
            workflow_runner=workflow_runner(True),
        ):

            async def rolled_up() -> bool:
                return await day_rows(session_maker, project_id) > 0

            await eventually(rolled_up, attempts=600)
    finally:
        await temporal_client.get_schedule_handle(schedule_id).delete()
