"""Forge events to pipeline runs: which pipelines an event selects, and one run per selected
pipeline and delivery, created through the run service (core.runs) and started after commit."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.integrations.commit_status import forge_metadata, start_report
from core.integrations.concurrency import cancel_superseded
from core.integrations.triggers import parse_triggers, paths_selected, ref_selected
from core.runs import service as runs
from core.runs.schemas import RunCreate
from db.models.pipelines import Pipeline, PipelineRun
from db.session import session_scope
from forgeline.settings import INTEGRATIONS_TASK_QUEUE, PIPELINES_TASK_QUEUE, Settings
from workflows.integrations_models import (
    ForgeEvent,
    StartedRuns,
    StartRunsInput,
    TriggerCandidates,
)

# Only active pipelines react to events (drafts, paused and deprecated ones do not).
TRIGGERABLE_STATUS = "active"


def delivery_key(event: ForgeEvent) -> str:
    return f"{event.provider}:{event.delivery_id}"


async def match_triggers(session: AsyncSession, event: ForgeEvent) -> TriggerCandidates:
    """Pipelines of the event's project whose ref, event and type filters select it."""
    if event.kind == "pull_request" and event.from_fork:
        # Fork code must never see the project's secret variables; until runs can withhold
        # them, pull requests from forks start nothing.
        return TriggerCandidates()
    if event.organization_id is None:
        return TriggerCandidates()
    rows = await session.execute(
        select(Pipeline.id, Pipeline.triggers)
        .where(
            Pipeline.project_id == uuid.UUID(event.project_id),
            Pipeline.status == TRIGGERABLE_STATUS,
        )
        .order_by(Pipeline.created_at, Pipeline.id)
    )
    candidates = TriggerCandidates()
    for pipeline_id, raw in rows:
        triggers = parse_triggers(raw)
        if triggers is None:
            continue
        selected, needs_paths = ref_selected(triggers, event)
        if selected:
            candidates.pipeline_ids.append(str(pipeline_id))
            candidates.paths_needed = candidates.paths_needed or needs_paths
    return candidates


async def _existing_run(
    session: AsyncSession, pipeline_id: uuid.UUID, key: str
) -> PipelineRun | None:
    return await session.scalar(
        select(PipelineRun).where(
            PipelineRun.pipeline_id == pipeline_id,
            PipelineRun.metadata_["forge"]["delivery_key"].astext == key,
        )
    )


async def _create_run(
    session: AsyncSession, settings: Settings, inp: StartRunsInput, pipeline_id: uuid.UUID
) -> PipelineRun | None:
    """The delivery's run of the pipeline: the one a previous attempt created, or a new one
    when the pipeline's path filters select the change. Serialised per delivery and pipeline."""
    event = inp.event
    key = delivery_key(event)
    await session.execute(
        select(func.pg_advisory_xact_lock(func.hashtextextended(f"{key}:{pipeline_id}", 0)))
    )
    existing = await _existing_run(session, pipeline_id, key)
    if existing is not None:
        return existing
    pipeline = await session.get(Pipeline, pipeline_id)
    if pipeline is None or pipeline.status != TRIGGERABLE_STATUS:
        return None
    triggers = parse_triggers(pipeline.triggers)
    if triggers is None or not paths_selected(triggers, event, inp.changed.paths):
        return None
    assert event.organization_id is not None  # match_triggers selects nothing otherwise
    is_tag = event.kind == "push" and event.ref_type == "tag"
    run = await runs.create_run(
        session,
        settings,
        organization_id=uuid.UUID(event.organization_id),
        pipeline_id=pipeline_id,
        body=RunCreate(
            trigger="api",
            branch=None if is_tag else event.ref_name,
            commit_sha=event.head_sha,
            changed_paths=inp.changed.paths,
        ),
    )
    run.trigger = event.kind
    forge = forge_metadata(event.provider, event.delivery_id, event.forge_repository, event.kind)
    forge["delivery_key"] = key
    if is_tag:
        forge["tag"] = event.ref_name
    if event.pr_number is not None:
        forge |= {
            "pr_number": event.pr_number,
            "base_branch": event.base_branch,
            "from_fork": event.from_fork,
        }
    run.metadata_ = {**(run.metadata_ or {}), "forge": forge}
    await session.flush()
    return run


async def start_runs(
    session_maker: async_sessionmaker[AsyncSession],
    client: Client,
    settings: Settings,
    inp: StartRunsInput,
    *,
    run_task_queue: str = PIPELINES_TASK_QUEUE,
    status_task_queue: str = INTEGRATIONS_TASK_QUEUE,
) -> StartedRuns:
    """Create (once) and start the runs; each queued run reports `pending` to the forge, then
    the older runs of its concurrency group are cancelled (after the new one started, so a
    crash in between never leaves the pull request without a run). Retrying after a crash finds
    the runs already created and starts them again (harmless)."""
    started = StartedRuns()
    for raw_id in inp.pipeline_ids:
        async with session_scope(session_maker) as session:
            await session.execute(text("SET LOCAL lock_timeout = '10s'"))
            run = await _create_run(session, settings, inp, uuid.UUID(raw_id))
        if run is None:
            continue
        # Pending first: its report is on its way before the run can move on.
        await start_report(
            client,
            str(run.id),
            "pending",
            organization_id=inp.event.organization_id,
            task_queue=status_task_queue,
        )
        await runs.start_run_workflow(client, run, task_queue=run_task_queue)
        await cancel_superseded(session_maker, client, run.id, inp.event)
        started.run_ids.append(str(run.id))
    return started
