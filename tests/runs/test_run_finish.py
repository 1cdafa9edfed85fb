"""Closing a run: the workflow's finish step, always (stages run on build hosts, which do not
write runs; only histories from before build hosts let the last stage close its run)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from sqlalchemy import func, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.worker import Worker

from activities.deps import WorkerDeps
from activities.runs.attempts import run_workspace
from activities.runs.registration import WORKFLOWS, pipeline_activities
from activities.runs.stage_execution import StageActivities
from core.runs import build_slots
from db.models.billing import UsageRecord
from db.session import driver_connection
from forgeline.temporal_client import workflow_runner
from tests.factories import make_org
from tests.runs.helpers import (
    create_run,
    executions,
    make_pipeline,
    pipeline_worker,
    run_row,
    stage,
    start,
)
from tests.runs.sandbox import sandbox_runner
from workflows.runs_models import FinishRunInput


async def local_activities(client: Client, workflow_id: str) -> list[str]:
    """The local activities a run executed, in order (their markers in its history)."""
    names = []
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED:
            details = event.marker_recorded_event_attributes.details
            if "data" in details:
                names.append(json.loads(details["data"].payloads[0].data)["activity_type"])
    return names


async def usage_records(session_maker, run_id: uuid.UUID) -> int:
    async with session_maker() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(UsageRecord)
            .where(UsageRecord.idempotency_key == f"pipeline-run-{run_id}:build_minutes")
        )
    return int(count or 0)


async def assert_closed(session_maker, settings, org_id: uuid.UUID, run_id: uuid.UUID, status):
    row = await run_row(session_maker, run_id)
    assert row.status == status and row.finished_at is not None
    assert row.variables_snapshot is None
    assert "stage_spec_hashes" in row.metadata_
    assert await usage_records(session_maker, run_id) == 1
    async with driver_connection(session_maker) as conn:
        slots = await build_slots.state(conn, str(org_id))
    assert slots.holders == [] and slots.waiting == []
    assert not run_workspace(settings, str(run_id)).exists()


async def run_to_the_end(
    session_maker, settings, temporal_client, task_queue, tmp_path: Path, stages
) -> tuple[uuid.UUID, uuid.UUID, str, list[str]]:
    """Organization, run, the run's final status and the local activities it executed."""
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, stages)
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    runner = sandbox_runner(tmp_path / "state")
    async with pipeline_worker(temporal_client, task_queue, settings, session_maker, runner):
        handle = await start(temporal_client, run, task_queue)
        status = (await handle.result()).status
    return org.org_id, run.id, status, await local_activities(temporal_client, handle.id)


async def test_the_workflow_closes_a_successful_run(
    session_maker, settings, temporal_client, task_queue, tmp_path: Path
) -> None:
    org_id, run_id, status, steps = await run_to_the_end(
        session_maker,
        settings,
        temporal_client,
        task_queue,
        tmp_path,
        [stage("build", "echo built", 0), stage("test", "true", 1)],
    )
    assert status == "success" and steps == ["prepare_run", "finish_run"]
    await assert_closed(session_maker, settings, org_id, run_id, "success")
    assert [e.status for e in await executions(session_maker, run_id)] == ["success"] * 2


async def test_a_failed_last_stage_leaves_closing_to_the_workflow(
    session_maker, settings, temporal_client, task_queue, tmp_path: Path
) -> None:
    org_id, run_id, status, steps = await run_to_the_end(
        session_maker,
        settings,
        temporal_client,
        task_queue,
        tmp_path,
        [stage("build", "true", 0), stage("test", "exit 1", 1)],
    )
    assert status == "failed" and steps == ["prepare_run", "finish_run"]
    await assert_closed(session_maker, settings, org_id, run_id, "failed")


async def test_a_stage_never_closes_its_run_even_beside_the_run_activities(
    session_maker, settings, temporal_client, task_queue, tmp_path: Path
) -> None:
    """Stage and run activities on one worker (the stage activity is handed finish_run): the
    last stage's attempt still leaves closing to the workflow's finish step."""
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("only", "true", 0)])
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    runner = sandbox_runner(tmp_path / "state")

    closed_by_stage: list[FinishRunInput] = []

    async def unreachable(inp: FinishRunInput) -> None:
        closed_by_stage.append(inp)

    one_queue = settings.model_copy(update={"build_task_queue": task_queue})
    deps = WorkerDeps(settings=one_queue, session_maker=session_maker, temporal=temporal_client)
    activities, _ = pipeline_activities(deps, runner=runner)
    for bound in activities:
        owner = getattr(bound, "__self__", None)
        if isinstance(owner, StageActivities):
            owner.finish_run = unreachable
    async with Worker(
        temporal_client,
        task_queue=task_queue,
        workflows=WORKFLOWS,
        activities=activities,
        workflow_runner=workflow_runner(),
    ):
        handle = await start(temporal_client, run, task_queue)
        assert (await handle.result()).status == "success"
    assert await local_activities(temporal_client, handle.id) == ["prepare_run", "finish_run"]
    assert closed_by_stage == []
    await assert_closed(session_maker, settings, org.org_id, run.id, "success")
    (execution,) = await executions(session_maker, run.id)
    assert execution.attempt == 1 and execution.status == "success"
