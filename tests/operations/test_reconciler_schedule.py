"""The reconciler runs on its Temporal Schedule: created idempotently at worker start, it reflects
a run terminated from outside within its period (1 s here), with no call from the test."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client
from temporalio.worker import Worker

from activities.deps import WorkerDeps
from activities.operations.registration import registration
from core.operations.schedules import ensure_reconciler_schedule
from forgeline.settings import Settings
from forgeline.temporal_client import workflow_runner
from tests.factories import make_org
from tests.operations.reconcile_support import eventually, running_run, status_of


async def test_the_schedule_reflects_a_terminated_run_without_being_asked(
    temporal_client: Client, session_maker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    queue = f"operations-{uuid.uuid4().hex[:12]}"
    ops_settings = settings.model_copy(
        update={"operations_task_queue": queue, "reconciler_interval_seconds": 1.0}
    )
    reg = registration(
        WorkerDeps(settings=ops_settings, session_maker=session_maker, temporal=temporal_client)
    )
    schedule_id = f"test-reconciler-{uuid.uuid4().hex[:12]}"
    # Two workers starting at once: one schedule.
    created = await asyncio.gather(
        ensure_reconciler_schedule(temporal_client, ops_settings, schedule_id),
        ensure_reconciler_schedule(temporal_client, ops_settings, schedule_id),
    )
    assert list(created) == [schedule_id, schedule_id]
    try:
        async with Worker(
            temporal_client,
            task_queue=reg.task_queue,
            workflows=list(reg.workflows),
            activities=list(reg.activities),
            workflow_runner=workflow_runner(True),
        ):
            org = await make_org(session_maker)
            run_id, handle = await running_run(temporal_client, session_maker, settings, org)
            await handle.terminate(reason="stopped from the Temporal UI")

            async def failed() -> bool:
                status, _ = await status_of(session_maker, "pipeline_runs", run_id)
                return status == "failed"

            await eventually(failed, attempts=600)
        description = await temporal_client.get_schedule_handle(schedule_id).describe()
        assert description.info.num_actions >= 1
    finally:
        await temporal_client.get_schedule_handle(schedule_id).delete()
