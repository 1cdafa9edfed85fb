"""Which stage a verification examines: the first stage whose LAST attempt failed and which was
not allowed to fail; an attempt a retry made good (a flaky matrix leg) and an advisory stage's
failure are not why the run failed."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.agent.verification import _failed_execution
from db.models.pipelines import PipelineRun, PipelineStage, StageExecution
from db.session import session_scope
from tests.agent.support import add_failed_run, make_project
from tests.factories import make_org

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def _run_with(
    session_maker: async_sessionmaker[AsyncSession],
    attempts: list[tuple[str, int, str, int | None]],
    allowed: tuple[str, ...] = (),
) -> uuid.UUID:
    """A failed run whose stage executions are (stage, attempt, status, started minute)."""
    org = await make_org(session_maker)
    project_id = await make_project(session_maker, org.org_id, None)
    async with session_scope(session_maker) as session:
        run_id = await add_failed_run(session, org.org_id, project_id)
        run = await session.get(PipelineRun, run_id)
        assert run is not None
        stage_ids: dict[str, uuid.UUID] = {}
        for position, name in enumerate(dict.fromkeys(a[0] for a in attempts)):
            stage = PipelineStage(
                id=uuid.uuid4(),
                pipeline_id=run.pipeline_id,
                name=name,
                position=position,
                stage_type="test",
                allow_failure=name in allowed,
            )
            session.add(stage)
            stage_ids[name] = stage.id
        await session.flush()
        for name, attempt, status, minute in attempts:
            session.add(
                StageExecution(
                    run_id=run_id,
                    stage_id=stage_ids[name],
                    stage_name=name,
                    attempt=attempt,
                    status=status,
                    started_at=None if minute is None else T0 + timedelta(minutes=minute),
                )
            )
    return run_id


async def _examined(session_maker: async_sessionmaker[AsyncSession], run_id: uuid.UUID) -> str:
    async with session_maker() as session:
        found = await _failed_execution(session, run_id)
        assert found is not None
        return f"{found.stage_name}#{found.attempt}"


async def test_a_leg_a_retry_made_good_is_not_the_failed_stage(session_maker) -> None:
    run_id = await _run_with(
        session_maker,
        [
            ("install", 1, "success", 0),
            ("test (24)", 1, "failed", 1),  # flaky, then green on its retry
            ("test (24)", 2, "success", 3),
            ("test (22)", 1, "success", 1),
            ("security-scan", 1, "failed", 5),
        ],
    )
    assert await _examined(session_maker, run_id) == "security-scan#1"


async def test_the_last_attempt_of_a_stage_that_kept_failing_is_examined(session_maker) -> None:
    run_id = await _run_with(
        session_maker,
        [("test", 1, "failed", 1), ("test", 2, "timed_out", 2), ("build", 1, "failed", 4)],
    )
    assert await _examined(session_maker, run_id) == "test#2"


async def test_an_allowed_failure_is_not_why_the_run_failed(session_maker) -> None:
    run_id = await _run_with(
        session_maker,
        [("security-scan", 1, "failed", 1), ("test", 1, "failed", 2)],
        allowed=("security-scan",),
    )
    assert await _examined(session_maker, run_id) == "test#1"
    only_advisory = await _run_with(
        session_maker, [("audit", 1, "failed", 1), ("test", 1, "success", 1)], allowed=("audit",)
    )
    async with session_maker() as session:
        assert await _failed_execution(session, only_advisory) is None


async def test_hostile_rows_never_break_the_choice(session_maker) -> None:
    # A stage that never started, names that look like SQL or carry control characters.
    run_id = await _run_with(
        session_maker,
        [
            ("x'; drop table stage_executions; --", 1, "failed", None),
            ("t\x1b[31m", 1, "failed", 7),
            ("t\x1b[31m", 2, "success", 8),
            ("ok", 1, "failed", 9),
        ],
    )
    assert await _examined(session_maker, run_id) == "ok#1"
    async with session_maker() as session:
        count = len(list(await session.scalars(select(StageExecution.id))))
        assert count >= 4
