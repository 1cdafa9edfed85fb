"""A stage attempt that ends before its row was opened is opened and closed by one statement
(core/runs/short_attempts.py); a longer one still shows `running` while it runs."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import asyncpg
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client

from core.runs import stage_records
from core.runs.short_attempts import open_and_close_attempt
from core.runs.stage_records import NEVER_OPENED_ERROR, ClosedAttempt
from db.models.pipelines import StageExecution, StageLogChunk
from db.session import driver_connection
from forgeline.embedded.postgres import EmbeddedPostgres
from forgeline.settings import Settings
from tests.factories import make_org
from tests.runs.helpers import (
    create_run,
    executions,
    make_pipeline,
    pipeline_worker,
    stage,
    start,
    wait_for,
)
from tests.runs.sandbox import sandbox_runner

HOSTILE_NAME = 'it\'s "x"; DROP TABLE stage_executions; --\nnaïve ✓'
HOSTILE_LINE = "'); DELETE FROM stage_log_chunks; -- $1 \\x00 ✓\n"


async def _run_id(session_maker: async_sessionmaker[AsyncSession], settings: Settings) -> str:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("s", "true")])
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    return str(run.id)


def _closed(status: str = "success", chunk: str | None = HOSTILE_LINE) -> ClosedAttempt:
    return ClosedAttempt(
        status=status,
        exit_code=0 if status == "success" else 2,
        duration_ms=7,
        log_size_bytes=len(chunk.encode()) if chunk else 0,
        log_line_count=1 if chunk else 0,
        error=None if status == "success" else "exit 2",
        final_chunk=(0, 0, 1, chunk) if chunk else None,
        warnings=["w'1"],
    )


async def _write(
    session_maker: async_sessionmaker[AsyncSession],
    run_id: str,
    name: str,
    attempt: int,
    closed: ClosedAttempt,
) -> uuid.UUID | None:
    async with driver_connection(session_maker) as conn:
        return await open_and_close_attempt(
            conn,
            run_id=run_id,
            stage_name=name,
            attempt=attempt,
            stage_id=None,
            runner="sandbox",
            container_name="c",
            closed=closed,
        )


async def _chunks(
    session_maker: async_sessionmaker[AsyncSession], execution_id: uuid.UUID
) -> list[tuple[int, str]]:
    async with session_maker() as session:
        rows = await session.execute(
            select(StageLogChunk.seq, StageLogChunk.content)
            .where(StageLogChunk.stage_execution_id == execution_id)
            .order_by(StageLogChunk.seq)
        )
        return [(r[0], r[1]) for r in rows]


async def test_one_statement_writes_the_final_row_and_log_of_hostile_input(
    session_maker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    run_id = await _run_id(session_maker, settings)
    execution_id = await _write(session_maker, run_id, HOSTILE_NAME, 1, _closed())
    assert execution_id == stage_records.stage_execution_id(run_id, HOSTILE_NAME, 1)
    [row] = await executions(session_maker, uuid.UUID(run_id))
    assert (row.stage_name, row.status, row.exit_code, row.runner, row.warnings) == (
        HOSTILE_NAME,
        "success",
        0,
        "sandbox",
        ["w'1"],
    )
    assert row.started_at is not None and row.finished_at is not None
    assert row.started_at < row.finished_at
    assert await _chunks(session_maker, execution_id) == [(0, HOSTILE_LINE)]
    assert await _write(session_maker, str(uuid.uuid4()), "s", 1, _closed()) is None


async def test_concurrent_duplicates_leave_one_row_and_one_chunk(
    session_maker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """Retried writes racing the first."""
    run_id = await _run_id(session_maker, settings)
    ids = await asyncio.gather(
        *(_write(session_maker, run_id, "s", 1, _closed()) for _ in range(4))
    )
    assert len(set(ids)) == 1 and ids[0] is not None
    rows = await executions(session_maker, uuid.UUID(run_id))
    assert [(r.attempt, r.status) for r in rows] == [(1, "success")]
    assert await _chunks(session_maker, ids[0]) == [(0, HOSTILE_LINE)]


async def test_a_replayed_attempt_keeps_only_its_final_lines_and_records_earlier_losses(
    session_maker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """Attempt 1 was left `running` by a killed worker, attempt 2 was killed before anything was
    written (inside the window before its row opens); attempt 3 had been opened once with three
    chunks, then runs again and ends at once: one statement settles all of it."""
    run_id = await _run_id(session_maker, settings)
    async with driver_connection(session_maker) as conn:
        for attempt in (1, 3):
            opened = await stage_records.open_attempt(
                conn,
                run_id=run_id,
                stage_name="s",
                attempt=attempt,
                stage_id=None,
                runner="sandbox",
                container_name="c",
            )
            assert opened is not None
        replayed = stage_records.stage_execution_id(run_id, "s", 3)
        for seq in range(3):
            await stage_records.store_log_chunk(
                conn,
                execution_id=replayed,
                seq=seq,
                first_line=seq,
                line_count=1,
                content=f"old {seq}\n",
            )
    await _write(session_maker, run_id, "s", 3, _closed("failed", "last\n"))
    rows = await executions(session_maker, uuid.UUID(run_id))
    assert [(r.attempt, r.status, r.failure_class) for r in rows] == [
        (1, "failed", "infrastructure"),
        (2, "failed", "infrastructure"),
        (3, "failed", None),
    ]
    assert rows[0].error == "worker lost during the attempt"
    assert rows[1].error == NEVER_OPENED_ERROR
    assert (rows[2].exit_code, rows[2].error, rows[2].finished_at is not None) == (
        2,
        "exit 2",
        True,
    )
    assert await _chunks(session_maker, replayed) == [(0, "last\n")]
    # No last lines (the whole log moved to the object store): no chunk is left at all.
    await _write(session_maker, run_id, "s", 3, _closed("failed", None))
    assert await _chunks(session_maker, replayed) == []


async def test_the_build_role_may_write_a_short_attempt(
    postgres: EmbeddedPostgres | None,
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
) -> None:
    assert postgres is not None  # the build role is the embedded database's
    run_id = await _run_id(session_maker, settings)
    conn = await asyncpg.connect(postgres.build_url)
    try:
        written = await open_and_close_attempt(
            conn,
            run_id=run_id,
            stage_name="s",
            attempt=2,
            stage_id=None,
            runner="sandbox",
            container_name="c",
            closed=_closed(),
        )
        assert written is not None
    finally:
        await conn.close()
    rows = await executions(session_maker, uuid.UUID(run_id))
    assert [(r.attempt, r.status) for r in rows] == [(1, "failed"), (2, "success")]


async def test_fast_stages_end_in_one_write_and_a_slow_one_shows_running(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    temporal_client: Client,
    tmp_path: Path,
) -> None:
    """Through the worker: a stage that ends at once has its final row and its output; a stage
    that runs on is `running` (its row opened) before it ends, with no output to open it."""
    org = await make_org(session_maker)
    stages = [
        stage("fast", 'printf \'%s\\n\' "$FORGELINE_STAGE" "it\'s"', position=0),
        # Ends only once the test has seen it running (bounded by its timeout).
        stage(
            "slow",
            "while [ ! -e go ]; do sleep 0.05; done; echo done",
            position=1,
            timeout_seconds=60,
        ),
    ]
    pipeline_id = await make_pipeline(session_maker, org.org_id, stages)
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    queue = f"short-{uuid.uuid4()}"
    runner = sandbox_runner(tmp_path / "state")
    try:
        async with pipeline_worker(temporal_client, queue, settings, session_maker, runner):
            handle = await start(temporal_client, run, queue)

            async def slow_running() -> bool:
                rows = await executions(session_maker, run.id)
                return any(r.stage_name == "slow" and r.status == "running" for r in rows)

            await wait_for(slow_running)
            (settings.workspaces_dir / str(run.id) / "go").touch()
            result = await handle.result()
    finally:
        await runner.close()
    assert result.status == "success", result
    rows = {r.stage_name: r for r in await executions(session_maker, run.id)}
    assert {n: (r.status, r.attempt) for n, r in rows.items()} == {
        "fast": ("success", 1),
        "slow": ("success", 1),
    }
    async with session_maker() as session:
        log = await session.scalar(
            text(
                "SELECT string_agg(content, '' ORDER BY seq) FROM stage_log_chunks"
                " WHERE stage_execution_id = :id"
            ),
            {"id": rows["fast"].id},
        )
    assert log == "fast\nit's\n"
    assert rows["fast"].log_line_count == 2
    assert isinstance(rows["fast"], StageExecution)
