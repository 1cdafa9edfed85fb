"""A run with nothing to clone claims its build slot and, when it holds one, is marked started by
the same statement (run_records.claim_slot_and_start); a waiting claim starts nothing."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from core.runs import build_slots, run_records
from db.session import driver_connection
from forgeline.settings import Settings
from tests.factories import make_org
from tests.runs.helpers import create_run, make_pipeline, run_row, stage

HOSTILE_QUEUE = "q'; DROP TABLE pipeline_runs; --\nnaïve ✓"


async def _run(session_maker: async_sessionmaker[AsyncSession], settings: Settings) -> str:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("s", "true")])
    return str((await create_run(session_maker, settings, org.org_id, pipeline_id)).id)


async def _claim(
    session_maker: async_sessionmaker[AsyncSession],
    run_id: str,
    key: str,
    limit: int = 2,
    workflow_id: str | None = None,
) -> tuple[build_slots.Claim, list[build_slots.PendingGrant], run_records.StartedRun | None]:
    async with driver_connection(session_maker) as conn:
        return await run_records.claim_slot_and_start(
            conn,
            run_id=run_id,
            workflow_id=workflow_id or f"pipeline-run-{run_id}",
            workflow_run_id=f"execution-{run_id}",
            task_queue=HOSTILE_QUEUE,
            slot_key=key,
            limit=limit,
        )


async def _operator_rows(
    session_maker: async_sessionmaker[AsyncSession], run_id: str
) -> list[tuple[str, str]]:
    async with session_maker() as session:
        rows = await session.execute(
            text(
                "SELECT task_queue, status FROM workflow_executions"
                " WHERE resource_id = :id ORDER BY created_at"
            ),
            {"id": uuid.UUID(run_id)},
        )
        return [(r[0], r[1]) for r in rows]


async def test_a_held_claim_starts_the_run_and_a_waiting_one_starts_nothing(
    session_maker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    key = f"test-{uuid.uuid4()}"
    first, second = await _run(session_maker, settings), await _run(session_maker, settings)
    claim, pending, started = await _claim(session_maker, first, key, limit=1)
    assert claim.holding and pending == [] and started is not None
    run = await run_row(session_maker, uuid.UUID(first))
    assert run.status == "running" and run.started_at is not None
    assert await _operator_rows(session_maker, first) == [(HOSTILE_QUEUE, "running")]
    # The only slot is taken: the second run queues and stays queued, with no operator row.
    claim, pending, started = await _claim(session_maker, second, key, limit=1)
    assert not claim.holding and pending == [] and started is None
    assert (await run_row(session_maker, uuid.UUID(second))).status == "queued"
    assert await _operator_rows(session_maker, second) == []
    async with driver_connection(session_maker) as conn:
        assert await build_slots.state(conn, key) == build_slots.SlotState(
            limit=1, holders=[f"pipeline-run-{first}"], waiting=[f"pipeline-run-{second}"]
        )


async def test_concurrent_and_repeated_claims_start_the_run_once(
    session_maker: async_sessionmaker[AsyncSession], settings: Settings
) -> None:
    """A retried prepare step racing the first (a worker that died after the statement and
    before it reported): one claim, one start, one operator row."""
    key = f"test-{uuid.uuid4()}"
    run_id = await _run(session_maker, settings)
    results = await asyncio.gather(*(_claim(session_maker, run_id, key) for _ in range(4)))
    assert {r[0] for r in results} == {results[0][0]} and results[0][0].holding
    started_at = (await run_row(session_maker, uuid.UUID(run_id))).started_at
    again = await _claim(session_maker, run_id, key)
    assert again[0] == results[0][0] and again[2] is not None
    assert (await run_row(session_maker, uuid.UUID(run_id))).started_at == started_at
    assert len(await _operator_rows(session_maker, run_id)) == 1
    async with driver_connection(session_maker) as conn:
        assert (await build_slots.state(conn, key)).holders == [f"pipeline-run-{run_id}"]


async def test_a_run_that_is_gone_is_not_started_but_its_claim_is_answered(
    session_maker: async_sessionmaker[AsyncSession],
) -> None:
    key = f"test-{uuid.uuid4()}"
    claim, _, started = await _claim(session_maker, str(uuid.uuid4()), key, workflow_id="gone")
    assert claim.holding and started is None
