"""Pipeline schedules as Temporal Schedules: one per `schedule` entry (ID from the pipeline and
the entry's position), kept in step with the pipeline (created, updated, paused, deleted), and
the firing that starts a run with trigger=schedule through the run service.

Overlap policy SKIP: a firing while the previous firing's start is still going is skipped (the
start itself takes a moment; runs of the pipeline may overlap as manual ones do).
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from core.integrations.triggers import MAX_SCHEDULES, ScheduleEntry, parse_triggers
from core.runs import service as runs
from core.runs.schemas import RunCreate
from db.models.pipelines import Pipeline, PipelineRun
from db.session import session_scope
from forgeline.search_attributes import forgeline_search_attributes
from forgeline.settings import INTEGRATIONS_TASK_QUEUE, PIPELINES_TASK_QUEUE, Settings
from workflows.integrations_models import ScheduledRun, ScheduledRunInput, pipeline_schedule_id
from workflows.scheduled_run import ScheduledRunWorkflow

SCHEDULED_STATUS = "active"


def pipeline_schedule(
    pipeline: Pipeline, index: int, entry: ScheduleEntry, *, task_queue: str
) -> Schedule:
    schedule_id = pipeline_schedule_id(str(pipeline.id), index)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            ScheduledRunWorkflow.run,
            ScheduledRunInput(pipeline_id=str(pipeline.id), schedule_id=schedule_id),
            id=f"scheduled-run-{pipeline.id}-{index}",
            task_queue=task_queue,
            typed_search_attributes=forgeline_search_attributes(
                "scheduled_run",
                organization_id=pipeline.organization_id,
                project_id=pipeline.project_id,
            ),
        ),
        spec=ScheduleSpec(cron_expressions=[entry.cron], time_zone_name=entry.timezone),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(
            paused=pipeline.status != SCHEDULED_STATUS,
            note=f"Pipeline {pipeline.name[:100]} ({pipeline.id}), schedule entry {index}",
        ),
    )


async def _delete(client: Client, schedule_id: str) -> None:
    try:
        await client.get_schedule_handle(schedule_id).delete()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise


async def sync_schedules(
    client: Client, pipeline: Pipeline, *, task_queue: str = INTEGRATIONS_TASK_QUEUE
) -> list[str]:
    """Make the pipeline's Temporal Schedules match its stored triggers and status; returns
    their IDs. Idempotent: a retry after a crash half-way finishes the job."""
    triggers = parse_triggers(pipeline.triggers)
    entries = triggers.schedule if triggers is not None else []
    ids: list[str] = []
    for index, entry in enumerate(entries):
        schedule_id = pipeline_schedule_id(str(pipeline.id), index)
        wanted = pipeline_schedule(pipeline, index, entry, task_queue=task_queue)
        try:
            await client.create_schedule(schedule_id, wanted)
        except ScheduleAlreadyRunningError:

            def replace(_: ScheduleUpdateInput, new: Schedule = wanted) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=new)

            await client.get_schedule_handle(schedule_id).update(replace)
        ids.append(schedule_id)
    await _delete_from(client, pipeline.id, len(entries))
    return ids


async def _exists(client: Client, schedule_id: str) -> bool:
    try:
        await client.get_schedule_handle(schedule_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def _delete_from(client: Client, pipeline_id: uuid.UUID, first: int) -> None:
    """Delete the schedules from index `first` on. Schedules are created in ascending and
    deleted in descending order, so the existing ones stay a prefix 0..n-1 even when a sync
    stops half-way: probe up to the first missing one, then delete backwards. (One deleted by
    hand in the Temporal UI can leave a later one behind; its firings start nothing.)"""
    last = first
    while last < MAX_SCHEDULES and await _exists(
        client, pipeline_schedule_id(str(pipeline_id), last)
    ):
        last += 1
    for index in range(last - 1, first - 1, -1):
        await _delete(client, pipeline_schedule_id(str(pipeline_id), index))


async def ensure_pipeline_schedules(
    client: Client,
    session_maker: async_sessionmaker[AsyncSession],
    *,
    task_queue: str = INTEGRATIONS_TASK_QUEUE,
) -> int:
    """Bring every scheduled pipeline's Temporal Schedules in line with its row (a pipeline
    written without the API, a Temporal cluster that lost them); returns how many pipelines.
    Each under its row lock, so a concurrent edit's sync is never overwritten by stale data."""
    async with session_maker() as session:
        ids = list(
            await session.scalars(
                select(Pipeline.id).where(
                    func.jsonb_typeof(Pipeline.triggers["schedule"]) == "array",
                    func.jsonb_array_length(Pipeline.triggers["schedule"]) > 0,
                    # An archived pipeline's schedules went with it.
                    Pipeline.archived_at.is_(None),
                )
            )
        )
    for pipeline_id in ids:
        async with session_scope(session_maker) as session:
            pipeline = await session.scalar(
                select(Pipeline).where(Pipeline.id == pipeline_id).with_for_update()
            )
            if pipeline is not None:
                await sync_schedules(client, pipeline, task_queue=task_queue)
    return len(ids)


async def delete_schedules(client: Client, pipeline_id: uuid.UUID) -> None:
    await _delete_from(client, pipeline_id, 0)


async def _create_scheduled_run(
    session: AsyncSession, settings: Settings, inp: ScheduledRunInput
) -> tuple[PipelineRun | None, str | None]:
    """(the firing's run, why none). Serialised per firing; a retry finds the first run."""
    pipeline_id = uuid.UUID(inp.pipeline_id)
    await session.execute(
        select(func.pg_advisory_xact_lock(func.hashtextextended(f"schedule:{inp.firing_id}", 0)))
    )
    existing = await session.scalar(
        select(PipelineRun).where(
            PipelineRun.pipeline_id == pipeline_id,
            PipelineRun.metadata_["schedule"]["firing_id"].astext == inp.firing_id,
        )
    )
    if existing is not None:
        return existing, None
    pipeline = await session.get(Pipeline, pipeline_id)
    if pipeline is None or pipeline.organization_id is None:
        return None, "the pipeline no longer exists"
    if pipeline.status != SCHEDULED_STATUS:
        return None, f"the pipeline is {pipeline.status}"
    triggers = parse_triggers(pipeline.triggers)
    entries = len(triggers.schedule) if triggers is not None else 0
    if inp.schedule_id not in {pipeline_schedule_id(str(pipeline.id), i) for i in range(entries)}:
        return None, "the pipeline no longer has this schedule"
    run = await runs.create_run(
        session,
        settings,
        organization_id=pipeline.organization_id,
        pipeline_id=pipeline_id,
        body=RunCreate(trigger="api"),
    )
    run.trigger = "schedule"
    schedule = {"schedule_id": inp.schedule_id, "firing_id": inp.firing_id}
    run.metadata_ = {**(run.metadata_ or {}), "schedule": schedule}
    await session.flush()
    return run, None


async def start_scheduled_run(
    session_maker: async_sessionmaker[AsyncSession],
    client: Client,
    settings: Settings,
    inp: ScheduledRunInput,
    *,
    run_task_queue: str = PIPELINES_TASK_QUEUE,
) -> ScheduledRun:
    async with session_scope(session_maker) as session:
        await session.execute(text("SET LOCAL lock_timeout = '10s'"))
        run, skipped = await _create_scheduled_run(session, settings, inp)
    if run is None:
        return ScheduledRun(skipped=skipped)
    await runs.start_run_workflow(client, run, task_queue=run_task_queue)
    return ScheduledRun(run_id=str(run.id))
