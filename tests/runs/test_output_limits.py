"""Stages that flood their output, in real runs: the log stops at its limit with a marker and the
stage fails (or carries on truncated, as the pipeline says); cancel and timeout end a flooding
stage and close its attempt. Real Temporal, real Postgres, the sandbox runner; every flood is
bounded by a limit and a stage timeout."""

from __future__ import annotations

import asyncio

import pytest
from temporalio.client import WorkflowFailureError

from tests.factories import make_org
from tests.runs.helpers import (
    ENDLESS_LINE,
    FLOOD,
    create_run,
    executions,
    log_text,
    make_pipeline,
    pipeline_worker,
    process_gone,
    run_row,
    set_limits,
    spool_files,
    stage,
    start,
    wait_for,
)
from tests.runs.sandbox import sandbox_runner


async def test_a_flood_stops_at_the_log_limit_and_fails_the_stage(
    session_maker, settings, run_limited
) -> None:
    run_id, status = await run_limited(
        [stage("loud", FLOOD, timeout_seconds=120), stage("after", "echo never", 1)],
        log_max_bytes=2_000_000,
    )
    assert status == "failed"
    rows = await executions(session_maker, run_id)
    assert [(r.stage_name, r.status) for r in rows] == [("after", "skipped"), ("loud", "failed")]
    row = rows[1]
    assert row.error == "stage stopped: its log reached the limit of 2000000 bytes"
    assert row.exit_code is None and row.finished_at is not None
    assert 1_900_000 < row.log_size_bytes < 2_000_000 + 300
    text = row.log_tail if row.log_object_key else await log_text(session_maker, row.id)
    assert text is not None
    assert text.rstrip("\n").splitlines()[-1].startswith("forgeline: log truncated")
    assert (await run_row(session_maker, run_id)).status == "failed"
    assert not [p for p in spool_files(settings) if str(row.id) in p.name]


async def test_the_operator_cap_wins_over_a_larger_pipeline_limit(
    session_maker, settings, run_limited
) -> None:
    capped = settings.model_copy(update={"stage_log_max_bytes": 300_000})
    run_id, status = await run_limited(
        [stage("line", ENDLESS_LINE, timeout_seconds=120)],
        settings=capped,
        log_max_bytes=50_000_000,
    )
    assert status == "failed"
    (row,) = await executions(session_maker, run_id)
    assert row.error == "stage stopped: its log reached the limit of 300000 bytes"
    assert row.log_size_bytes < 300_000 + 300
    assert (await log_text(session_maker, row.id)).endswith("the rest of its output was dropped")


async def test_truncate_keeps_the_stage_running_and_says_so(session_maker, run_limited) -> None:
    script = ["yes 'before the end' | head -n 100000", "echo finished-ok"]
    run_id, status = await run_limited(
        [stage("loud", script, timeout_seconds=120)],
        log_max_bytes=100_000,
        on_log_limit="truncate",
    )
    assert status == "success"
    (row,) = await executions(session_maker, run_id)
    assert row.status == "success" and row.exit_code == 0
    assert row.warnings == ["log truncated at 100000 bytes"]
    lines = (await log_text(session_maker, row.id)).splitlines()
    assert lines[-2].startswith("forgeline: log truncated")
    assert lines[-1] == "forgeline: warning: log truncated at 100000 bytes"
    assert "finished-ok" not in lines


async def test_cancel_ends_a_flooding_stage_and_closes_its_attempt(
    session_maker, settings, temporal_client, task_queue, tmp_path
) -> None:
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker, org.org_id, [stage("loud", FLOOD, timeout_seconds=300)]
    )
    # Truncated, so the stage keeps flooding past its limit until it is cancelled.
    await set_limits(session_maker, pipeline_id, log_max_bytes=3_000_000, on_log_limit="truncate")
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    runner = sandbox_runner(tmp_path / "state")
    try:
        async with pipeline_worker(temporal_client, task_queue, settings, session_maker, runner):
            handle = await start(temporal_client, run, task_queue)

            async def flooding() -> bool:
                rows = await executions(session_maker, run.id)
                return (
                    bool(rows)
                    and rows[0].status == "running"
                    and bool(await log_text(session_maker, rows[0].id))
                )

            await wait_for(flooding, timeout=60)
            await asyncio.sleep(1.5)  # well past the limit: the pump reads and drops
            await handle.cancel()
            with pytest.raises(WorkflowFailureError):
                await handle.result()

            async def closed() -> bool:
                (row,) = await executions(session_maker, run.id)
                return row.status == "cancelled" and row.finished_at is not None

            await wait_for(closed, timeout=60)
    finally:
        await runner.close()
    (row,) = await executions(session_maker, run.id)
    assert row.log_size_bytes <= 3_000_000 + 300
    assert await process_gone(runner, row.container_name or "")
    assert (await run_row(session_maker, run.id)).status == "cancelled"


async def test_timeout_ends_a_flooding_stage_and_closes_its_attempt(
    session_maker, tmp_path, run_limited
) -> None:
    run_id, status = await run_limited(
        [stage("loud", FLOOD, timeout_seconds=3)],
        log_max_bytes=3_000_000,
        on_log_limit="truncate",
    )
    assert status == "failed"
    (row,) = await executions(session_maker, run_id)
    assert row.status == "timed_out" and row.finished_at is not None
    assert row.warnings == ["log truncated at 3000000 bytes"]
    assert await process_gone(sandbox_runner(tmp_path / "probe"), row.container_name or "")
