"""A worker SIGKILLed while the legs of a matrix stage run: a new worker finishes the run, every
leg ends once (a lost attempt, then one successful attempt: no duplicate rows), and the stage
that needs the matrix runs once, after all of them."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections import Counter

import pytest

from tests.factories import make_org
from tests.runs.helpers import (
    COUNT_SCRIPT,
    by_stage,
    create_run,
    executions,
    make_pipeline,
    run_row,
    spawn_worker,
    start,
    wait_for_log_line,
)

pytestmark = pytest.mark.timeout(240)

LEGS = ["test (1)", "test (2)", "test (3)"]


async def test_sigkill_worker_mid_matrix(session_maker, settings, task_queue, temporal_client):
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker,
        org.org_id,
        [
            {
                "name": "test",
                "position": 0,
                "commands": [{"run": COUNT_SCRIPT}],
                "runtime": {"matrix": {"axes": {"SHARD": ["1", "2", "3"]}}},
            },
            {
                "name": "report",
                "position": 1,
                "commands": [{"run": "echo report"}],
                "depends_on": ["test"],
            },
        ],
    )
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    first = spawn_worker(settings, task_queue, "sandbox")
    second: subprocess.Popen[bytes] | None = None
    try:
        handle = await start(temporal_client, run, task_queue, heartbeat_seconds=1.0)
        await wait_for_log_line(session_maker, run.id, "line-5", timeout=60)
        first.send_signal(signal.SIGKILL)
        first.wait()
        second = spawn_worker(settings, task_queue, "sandbox")
        result = await asyncio.wait_for(handle.result(), 180)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
    assert result.status == "success"
    assert (await run_row(session_maker, run.id)).status == "success"
    rows = await executions(session_maker, run.id)
    # (stage, attempt) is unique: no leg attempt recorded twice.
    assert max(Counter((r.stage_name, r.attempt) for r in rows).values()) == 1
    grouped = by_stage(rows)
    assert sorted(grouped) == ["report", *LEGS]
    for leg in LEGS:
        statuses = [r.status for r in grouped[leg]]
        # Each leg succeeded exactly once (after a lost attempt when it was running).
        assert statuses.count("success") == 1 and statuses[-1] == "success", (leg, statuses)
        assert set(statuses[:-1]) <= {"failed"}
    assert [r.status for r in grouped["report"]] == ["success"]
    report_started = grouped["report"][0].started_at
    assert report_started is not None
    for leg in LEGS:
        leg_finished = grouped[leg][-1].finished_at
        assert leg_finished is not None and report_started >= leg_finished, leg
