"""A stage stopped at its log limit or at the run's disk quota is final: when its result is lost
(the worker dies, or Temporal is away past the heartbeat timeout, after the row was closed) the
retried attempt reuses the recorded stop and never runs the commands again. Real Postgres, the
real stage activity and the sandbox runner."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.runs.attempts import run_workspace
from activities.runs.stage_execution import StageActivities
from core.runs import stage_records
from core.runs.failure_classes import FailureSignals, classify
from db.session import driver_connection
from forgeline.statuses.runs import FailureClass
from infra.storage import LocalObjectStore
from tests.factories import make_org
from tests.runs.helpers import FLOOD, create_run, executions, make_pipeline, stage
from tests.runs.sandbox import sandbox_runner
from workflows.runs_models import STAGE_FAILED_ERROR, RunLimits, StageInput, StageSpec

# Each time the commands run, the workspace's `ran` file gets a line.
MARK = "echo ran >> ran"


async def attempt(env: ActivityEnvironment, activities: StageActivities, n: int, inp: StageInput):
    env.info = dataclasses.replace(env.info, attempt=n)
    with pytest.raises(ApplicationError) as raised:
        await env.run(activities.execute_stage, inp)
    return raised.value


@pytest.mark.parametrize("limit", ["log", "disk"])
async def test_a_limit_stopped_stage_is_not_run_again_when_its_result_is_lost(
    session_maker, settings, tmp_path: Path, limit: str
) -> None:
    org = await make_org(session_maker)
    if limit == "log":
        script = [MARK, FLOOD]
        spec = StageSpec(name="s", script="\n".join(script), timeout_seconds=120)
        spec = spec.model_copy(update={"log_max_bytes": 200_000})
        limits = None
        stop = "stage stopped: its log reached the limit of 200000 bytes"
    else:
        # Past the 8 MB quota in the workspace, then waits to be stopped (never exits on its own).
        script = [MARK, "head -c 12000000 /dev/zero > big", "sleep 100"]
        spec = StageSpec(name="s", script="\n".join(script), timeout_seconds=120)
        limits = RunLimits(disk_mb=8)
        stop = "stage stopped: the run's workspace and logs reached 8 MB"
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("s", script)])
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    workspace = run_workspace(settings, str(run.id))
    workspace.mkdir(parents=True, exist_ok=True)
    inp = StageInput(run_id=str(run.id), stage=spec, limits=limits)
    runner = sandbox_runner(tmp_path / "state")
    activities = StageActivities(
        settings, session_maker, LocalObjectStore(tmp_path / "objects"), runner
    )
    env = ActivityEnvironment()
    try:
        first = await attempt(env, activities, 1, inp)
        # The attempt closed its row and raised the stop; Temporal never took that result, so
        # it starts attempt 2 (twice over: a second loss of the result changes nothing).
        second = await attempt(env, activities, 2, inp)
        third = await attempt(env, activities, 3, inp)
    finally:
        await runner.close()
    assert first.type == STAGE_FAILED_ERROR and first.non_retryable
    assert first.message == f"stage s: {stop}"
    for again in (second, third):
        assert again.type == STAGE_FAILED_ERROR and again.non_retryable
        assert again.message == f"stage s: {stop}"
    # The commands ran once; the retries opened no attempt of their own.
    assert (workspace / "ran").read_text() == "ran\n"
    rows = await executions(session_maker, run.id)
    assert [(r.attempt, r.status, r.error) for r in rows] == [(1, "failed", stop)]
    assert rows[0].failure_class == FailureClass.CONFIG


async def test_a_runner_error_still_runs_again(session_maker, settings, tmp_path: Path) -> None:
    """An attempt the runner itself failed (an error, no limit, no exit status) is retried for
    real: only Forgeline's own stops are final."""
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("s", MARK)])
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    workspace = run_workspace(settings, str(run.id))
    workspace.mkdir(parents=True, exist_ok=True)
    async with driver_connection(session_maker) as conn:
        opened = await stage_records.open_attempt(
            conn,
            run_id=str(run.id),
            stage_name="s",
            attempt=1,
            stage_id=None,
            runner="sandbox",
            container_name="c",
        )
        assert opened is not None
        # As the stage activity closes an attempt whose runner raised.
        await stage_records.close_attempt(
            conn,
            run_id=str(run.id),
            execution_id=opened.execution_id,
            attempt=1,
            closed=stage_records.ClosedAttempt(
                status="failed",
                exit_code=None,
                duration_ms=1,
                log_size_bytes=0,
                log_line_count=0,
                error="container engine unavailable",
                failure=classify(FailureSignals(runner_error="container engine unavailable")),
            ),
        )
    inp = StageInput(run_id=str(run.id), stage=StageSpec(name="s", script=MARK))
    runner = sandbox_runner(tmp_path / "state")
    activities = StageActivities(
        settings, session_maker, LocalObjectStore(tmp_path / "objects"), runner
    )
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, attempt=2)
    try:
        result = await env.run(activities.execute_stage, inp)
    finally:
        await runner.close()
    assert result.status == "success" and result.attempt == 2
    assert (workspace / "ran").read_text() == "ran\n"
    rows = await executions(session_maker, run.id)
    assert [(r.attempt, r.status, r.failure_class) for r in rows] == [
        (1, "failed", FailureClass.INFRASTRUCTURE),
        (2, "success", None),
    ]
