"""Following a stage reads its run's state before looking for the stage's attempt: a stage that
starts and ends, together with its run, between the two reads is still followed (reading the
attempt first answered `not_run` for a stage that ran, and ended a follow before a retry that
ran last)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.runs import logs, repository
from db.models.pipelines import PipelineRun, StageExecution
from db.session import session_scope
from tests.factories import make_org
from tests.runs.helpers import create_run, make_pipeline, stage


async def _running_run(session_maker: async_sessionmaker[AsyncSession], settings: Any) -> uuid.UUID:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("second", "true")])
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    async with session_scope(session_maker) as session:
        await session.execute(
            update(PipelineRun).where(PipelineRun.id == run.id).values(status="running")
        )
    return run.id


def _reader(session_maker: async_sessionmaker[AsyncSession]) -> logs.LogReader:
    async def temporal() -> Any:
        raise RuntimeError("not needed: the attempt is final")

    async def connected() -> bool:
        return False

    def store() -> Any:
        raise RuntimeError("no log in the object store here")

    return logs.LogReader(session_maker, store, temporal, connected)


def _racing(
    session_maker: async_sessionmaker[AsyncSession],
    run_id: uuid.UUID,
    original: Callable[..., Awaitable[StageExecution | None]],
    attempt: int,
) -> Callable[..., Awaitable[StageExecution | None]]:
    """next_attempt that, the first time it finds nothing, lets attempt `attempt` start and end
    and the run finish before its caller reads anything else."""
    raced = False

    async def next_attempt(session: AsyncSession, *args: Any) -> StageExecution | None:
        nonlocal raced
        found = await original(session, *args)
        if found is None and not raced:
            raced = True
            async with session_scope(session_maker) as other:
                other.add(
                    StageExecution(
                        run_id=run_id, stage_name="second", attempt=attempt, status="success"
                    )
                )
                await other.execute(
                    update(PipelineRun).where(PipelineRun.id == run_id).values(status="success")
                )
        return found

    return next_attempt


async def test_a_stage_that_ran_between_the_reads_is_followed(
    session_maker: async_sessionmaker[AsyncSession], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = await _running_run(session_maker, settings)
    racing = _racing(session_maker, run_id, repository.next_attempt, attempt=1)
    monkeypatch.setattr(repository, "next_attempt", racing)
    events = [
        e
        async for e in logs.first_attempt_events(
            _reader(session_maker), run_id=run_id, stage="second", after=-1
        )
    ]
    assert events == [{"event": "end", "data": "success"}]


async def test_a_retry_that_ran_between_the_reads_is_followed(
    session_maker: async_sessionmaker[AsyncSession], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_id = await _running_run(session_maker, settings)
    async with session_scope(session_maker) as session:
        first = StageExecution(run_id=run_id, stage_name="second", attempt=1, status="failed")
        session.add(first)
    racing = _racing(session_maker, run_id, repository.next_attempt, attempt=2)
    monkeypatch.setattr(repository, "next_attempt", racing)
    events = [
        e
        async for e in logs.follow_events(
            _reader(session_maker),
            run_id=run_id,
            stage="second",
            execution=first,
            after=-1,
            single_attempt=False,
        )
    ]
    assert [e["event"] for e in events] == ["attempt", "end"]
    assert events[-1]["data"] == "success"


async def test_a_run_that_never_reaches_the_stage_ends_not_run(
    session_maker: async_sessionmaker[AsyncSession], settings: Any
) -> None:
    run_id = await _running_run(session_maker, settings)
    async with session_scope(session_maker) as session:
        await session.execute(
            update(PipelineRun).where(PipelineRun.id == run_id).values(status="cancelled")
        )
    events = [
        e
        async for e in logs.first_attempt_events(
            _reader(session_maker), run_id=run_id, stage="second", after=-1
        )
    ]
    assert events == [{"event": "end", "data": "not_run"}]
