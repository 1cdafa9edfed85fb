"""Crash tests: SIGKILL the worker mid-stage and restart it; restart the Temporal server
(SQLite-backed) mid-run. The run completes; one execution row per attempt; no gaps in logs."""

from __future__ import annotations

import asyncio
import signal
import subprocess

import pytest

from tests.factories import make_org
from tests.runs.helpers import (
    COUNT_SCRIPT,
    assert_contiguous,
    by_stage,
    create_run,
    executions,
    log_text,
    make_pipeline,
    own_temporal,
    pipeline_worker,
    process_gone,
    run_row,
    spawn_worker,
    stage,
    start,
    wait_for_log_line,
)


@pytest.mark.parametrize("runner", ["sandbox", "docker"], indirect=True)
async def test_sigkill_worker_mid_stage(
    session_maker, settings, temporal_client, task_queue, runner, request
) -> None:
    org = await make_org(session_maker)
    image = request.getfixturevalue("busybox_image") if runner.kind == "docker" else None
    pipeline_id = await make_pipeline(
        session_maker,
        org.org_id,
        [stage("count", COUNT_SCRIPT, 0), stage("after", "echo after", 1)],
        image=image,
    )
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    first = spawn_worker(settings, task_queue, runner.kind)
    second: subprocess.Popen[bytes] | None = None
    try:
        handle = await start(temporal_client, run, task_queue, heartbeat_seconds=1.0)

        await wait_for_log_line(session_maker, run.id, "line-5", timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = spawn_worker(settings, task_queue, runner.kind)
        result = await asyncio.wait_for(handle.result(), 120)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert result.status == "success"
    assert (await run_row(session_maker, run.id)).status == "success"
    rows = by_stage(await executions(session_maker, run.id))
    attempts = [(r.attempt, r.status) for r in rows["count"]]
    assert attempts == [(1, "failed"), (2, "success")]
    assert rows["count"][0].error == "worker lost during the attempt"
    assert_contiguous(await log_text(session_maker, rows["count"][0].id), complete=False)
    assert_contiguous(await log_text(session_maker, rows["count"][1].id), complete=True)
    assert [r.attempt for r in rows["after"]] == [1]
    # The orphan of attempt 1 (its process group / container) was removed by attempt 2.
    from infra.runners import process_name

    assert await process_gone(runner, process_name(str(run.id), "count", 1))


async def test_temporal_server_restart_mid_run(
    session_maker, settings, task_queue, tmp_path
) -> None:
    from tests.runs.sandbox import sandbox_runner

    async with own_temporal(tmp_path, settings) as (server, client):
        org = await make_org(session_maker)
        pipeline_id = await make_pipeline(
            session_maker,
            org.org_id,
            [stage("count", COUNT_SCRIPT, 0), stage("after", "echo after", 1)],
        )
        run = await create_run(session_maker, settings, org.org_id, pipeline_id)
        runner = sandbox_runner(tmp_path / "state")
        async with pipeline_worker(client, task_queue, settings, session_maker, runner):
            handle = await start(client, run, task_queue, heartbeat_seconds=2.0)

            await wait_for_log_line(session_maker, run.id, "line-3", timeout=60)
            await asyncio.to_thread(server.stop)
            await asyncio.sleep(1.0)
            await asyncio.to_thread(server.start)
            await server.wait_ready()
            result = await asyncio.wait_for(handle.result(), 120)
        assert result.status == "success"
        rows = by_stage(await executions(session_maker, run.id))
        assert rows["count"][-1].status == "success"
        assert_contiguous(await log_text(session_maker, rows["count"][-1].id), complete=True)
        assert rows["after"][0].status == "success"
        assert (await run_row(session_maker, run.id)).status == "success"
