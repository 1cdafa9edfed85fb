"""Concurrency groups, as GitHub's `concurrency.cancel-in-progress`: a newer run of a pipeline for
the same pull request (by default) or the same pushed branch (when the pipeline asks for it)
cancels the pipeline's older runs of it still in progress, through the run cancel path.

Nothing is dropped silently: a superseded run ends cancelled and keeps, in its metadata, which
run superseded it and why. Only older runs (lower run number) are cancelled, so a late
redelivery never cancels the run of a newer commit that its own run was created after.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.integrations.triggers import parse_triggers
from core.runs import service as runs
from db.models.pipelines import Pipeline, PipelineRun
from db.session import session_scope
from forgeline.errors import Conflict
from forgeline.statuses.runs import ACTIVE_RUN_STATUSES
from workflows.integrations_models import ForgeEvent

log = logging.getLogger("forgeline.integrations")


def _group_query(run: PipelineRun, event: ForgeEvent) -> Select[Any]:
    forge = PipelineRun.metadata_["forge"]
    query = select(PipelineRun).where(
        PipelineRun.pipeline_id == run.pipeline_id,
        PipelineRun.status.in_(ACTIVE_RUN_STATUSES),
        PipelineRun.run_number < run.run_number,
        forge["provider"].astext == event.provider,
        forge["repository"].astext == event.forge_repository,
    )
    if event.kind == "pull_request":
        return query.where(forge["pr_number"].astext == str(event.pr_number))
    return query.where(
        PipelineRun.trigger == "push",
        PipelineRun.branch == event.ref_name,
        forge["tag"].astext.is_(None),
    )


async def _superseded(
    session: AsyncSession, run: PipelineRun, event: ForgeEvent
) -> list[PipelineRun]:
    """Older runs in the new run's group, when its pipeline cancels them; marked with why."""
    if event.kind == "push" and event.ref_type == "tag":
        return []
    if event.kind == "pull_request" and event.pr_number is None:
        return []
    triggers = parse_triggers(
        await session.scalar(select(Pipeline.triggers).where(Pipeline.id == run.pipeline_id))
    )
    if triggers is None:
        return []
    cancels = (
        triggers.concurrency.cancel_in_progress_pull_requests
        if event.kind == "pull_request"
        else triggers.concurrency.cancel_in_progress_pushes
    )
    if not cancels:
        return []
    found = await session.scalars(_group_query(run, event).with_for_update())
    older: list[PipelineRun] = list(found)
    for old in older:
        old.metadata_ = {
            **(old.metadata_ or {}),
            "superseded_by": str(run.id),
            "cancel_reason": f"superseded by run #{run.run_number} ({event.head_sha[:12]})",
        }
    return older


async def cancel_superseded(
    session_maker: async_sessionmaker[AsyncSession],
    client: Client,
    run_id: uuid.UUID,
    event: ForgeEvent,
) -> list[str]:
    """Cancel the older runs the new run supersedes; returns their IDs. The reason is committed
    before the cancellation is requested, so a crash in between is finished by the retry."""
    async with session_scope(session_maker) as session:
        run = await session.get(PipelineRun, run_id)
        if run is None:
            return []
        older = await _superseded(session, run, event)
    for old in older:
        try:
            await runs.cancel_run(client, old)
        except Conflict as exc:
            # Finished meanwhile, or its workflow never started: nothing left to cancel.
            log.info("superseded run %s not cancelled: %s", old.id, exc)
    return [str(old.id) for old in older]
