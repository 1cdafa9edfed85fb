"""Closing a run returns what decides its announcements: the final status, whether a forge event
started it, and the previous finished run's status on its pipeline and branch. The finish step
reads nothing more when neither the commit status nor the notifications apply."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.runs import finishing, run_records
from db.models.pipelines import PipelineRun
from db.session import driver_connection, session_scope
from forgeline.settings import Settings
from tests.factories import make_org
from tests.runs.helpers import create_run, make_pipeline, stage

# A branch with quotes, a backslash and non-ASCII, stored as is: compared as data.
ODD_BRANCH = "fix/'quote\"ü\\x"


async def close(
    session_maker: async_sessionmaker[AsyncSession], run_id: uuid.UUID, status: str
) -> run_records.FinishedRun:
    async with driver_connection(session_maker) as conn:
        finished = await run_records.finish_run(
            conn,
            run_id=str(run_id),
            status=status,
            error=None if status == "success" else f"{status} run",
            unfinished_stage_status="failed",
            workflow_status="completed" if status == "success" else "failed",
            workflow_id=f"pipeline-run-{run_id}",
            workflow_run_id="first",
            spec_hashes={},
        )
    assert finished is not None
    return finished


async def set_metadata(
    session_maker: async_sessionmaker[AsyncSession], run_id: uuid.UUID, metadata: dict[str, Any]
) -> None:
    async with session_scope(session_maker) as session:
        await session.execute(
            update(PipelineRun).where(PipelineRun.id == run_id).values(metadata_=metadata)
        )


async def test_closing_returns_status_forge_and_previous_run(
    session_maker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("build", "true")])

    async def run(branch: str | None) -> uuid.UUID:
        row = await create_run(session_maker, settings, org.org_id, pipeline_id)
        # Set as stored (the API refuses such a name; a row may still hold anything).
        async with session_scope(session_maker) as session:
            await session.execute(
                update(PipelineRun).where(PipelineRun.id == row.id).values(branch=branch)
            )
        return row.id

    red = await run(ODD_BRANCH)
    first = await close(session_maker, red, "failed")
    assert (first.status, first.previous_status, first.forge) == ("failed", None, False)
    assert finishing.may_notify(first)  # run.failed

    fixed = await run(ODD_BRANCH)
    # A forge event's run, even one whose forge entry is JSON null, reports its commit status.
    await set_metadata(session_maker, fixed, {"forge": None, "other": "x"})
    second = await close(session_maker, fixed, "success")
    assert (second.status, second.previous_status, second.forge) == ("success", "failed", True)
    assert finishing.may_notify(second)  # run.fixed

    green = await run(ODD_BRANCH)
    third = await close(session_maker, green, "success")
    assert (third.previous_status, third.forge) == ("success", False)
    assert not finishing.may_notify(third)  # green after green: nothing to say

    # A cancelled run is neither announced nor a previous run for the next one.
    cancelled = await run(ODD_BRANCH)
    assert not finishing.may_notify(await close(session_maker, cancelled, "cancelled"))
    after_cancel = await close(session_maker, await run(ODD_BRANCH), "success")
    assert after_cancel.previous_status == "success"

    # Another branch (and no branch at all) has no previous run: the red one is not its own.
    assert (await close(session_maker, await run("main"), "success")).previous_status is None
    assert (await close(session_maker, await run(None), "success")).previous_status is None
    # A failure is announced whatever came before.
    assert finishing.may_notify(await close(session_maker, await run(None), "failed"))


async def test_concurrent_closes_return_the_status_that_stands(
    session_maker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """Two closes at once (a retried finish beside the last stage's): both return the status
    the row keeps, so neither announces an outcome the run does not have."""
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("build", "true")])
    previous = await create_run(session_maker, settings, org.org_id, pipeline_id)
    await close(session_maker, previous.id, "failed")
    row = await create_run(session_maker, settings, org.org_id, pipeline_id)
    results = await asyncio.gather(
        close(session_maker, row.id, "success"), close(session_maker, row.id, "failed")
    )
    assert results[0].status == results[1].status
    assert {r.previous_status for r in results} == {"failed"}
    # A late close after both changes nothing and says so.
    late = await close(session_maker, row.id, "cancelled")
    assert late.status == results[0].status
    assert finishing.may_notify(late)  # failed, or fixed after the failed one


async def test_a_run_without_organization_is_never_announced() -> None:
    run = run_records.FinishedRun(
        organization_id=None,
        project_id=uuid.uuid4(),
        pipeline_id=uuid.uuid4(),
        build_ms=0,
        status="failed",
        forge=False,
    )
    assert not finishing.may_notify(run)
