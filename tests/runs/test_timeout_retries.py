"""Timed-out stage attempts on real runs (Postgres, Temporal, the sandbox runner): a stage with
retries tries a timed-out attempt again, each retry a new attempt with its own row and log and
its own stage timeout; a stage without retries times out once; retries end at retries+1
attempts; a cancel during the retry ends the run cancelled. A timed-out attempt recorded before
a worker crash is decided the same way by the attempt that follows it."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowFailureError
from temporalio.exceptions import ApplicationError

from activities.runs.attempts import recorded_outcome
from core.runs import service, stage_records
from db.models import PipelineRun
from db.session import driver_connection
from forgeline.settings import Settings
from infra.runners import process_name
from infra.runners.sandbox_runner import SandboxRunner
from tests.factories import OrgFixture
from tests.runs.helpers import (
    FLOOD,
    create_run,
    executions,
    log_text,
    make_pipeline,
    pipeline_worker,
    process_gone,
    run_row,
    stage,
    start,
    wait_for,
)
from workflows.runs_models import STAGE_TIMED_OUT_ERROR, StageInput, StageSpec

# Times out on its first attempt (it leaves a marker in the run's workspace), passes after.
SLOW_ONCE = [
    "if [ -f .timed-out-once ]; then echo 'second attempt passed'; exit 0; fi",
    "touch .timed-out-once",
    "echo 'first attempt sleeping'",
    "sleep 60",
    "echo never",
]
# Hostile to the timeout: ignores TERM and forks a sleeper, on every attempt.
ALWAYS_SLOW = ["trap '' TERM", "echo 'attempt '$FORGELINE_ATTEMPT", "sleep 60 & sleep 60", "wait"]


class Services:
    def __init__(
        self,
        session_maker: async_sessionmaker[AsyncSession],
        settings: Settings,
        client: Client,
        task_queue: str,
        runner: SandboxRunner,
        org: OrgFixture,
    ) -> None:
        self.session_maker = session_maker
        self.settings = settings
        self.client = client
        self.task_queue = task_queue
        self.runner = runner
        self.org = org

    async def new_run(self, stages: list[dict[str, Any]]) -> PipelineRun:
        pipeline_id = await make_pipeline(self.session_maker, self.org.org_id, stages)
        return await create_run(self.session_maker, self.settings, self.org.org_id, pipeline_id)

    def worker(self) -> Any:
        return pipeline_worker(
            self.client, self.task_queue, self.settings, self.session_maker, self.runner
        )

    async def run(self, stages: list[dict[str, Any]]) -> tuple[PipelineRun, str]:
        run = await self.new_run(stages)
        async with self.worker():
            handle = await start(self.client, run, self.task_queue)
            try:
                status = str((await handle.result()).status)
            except WorkflowFailureError:
                status = "failed"
        return await run_row(self.session_maker, run.id), status


@pytest.fixture
def svc(
    session_maker: async_sessionmaker[AsyncSession],
    settings: Settings,
    temporal_client: Client,
    task_queue: str,
    sandbox: SandboxRunner,
    org: OrgFixture,
) -> Services:
    return Services(session_maker, settings, temporal_client, task_queue, sandbox, org)


async def test_a_timed_out_attempt_is_retried_and_passes(svc: Services) -> None:
    run, status = await svc.run([stage("build", SLOW_ONCE, timeout_seconds=1, retry_count=1)])
    assert status == "success"
    assert run.status == "success"
    rows = await executions(svc.session_maker, run.id)
    assert [(r.attempt, r.status) for r in rows] == [(1, "timed_out"), (2, "success")]
    assert rows[0].id != rows[1].id
    first = await log_text(svc.session_maker, rows[0].id)
    second = await log_text(svc.session_maker, rows[1].id)
    assert "first attempt sleeping" in first and "never" not in first
    assert "second attempt passed" in second and "first attempt sleeping" not in second
    assert await process_gone(svc.runner, process_name(str(run.id), "build", 1))


async def test_a_stage_without_retries_times_out_once(svc: Services) -> None:
    run, status = await svc.run([stage("build", SLOW_ONCE, timeout_seconds=1)])
    assert status == "failed"
    assert run.status == "failed"
    rows = await executions(svc.session_maker, run.id)
    assert [(r.attempt, r.status) for r in rows] == [(1, "timed_out")]


async def test_retries_end_after_retries_plus_one_timed_out_attempts(svc: Services) -> None:
    run, status = await svc.run(
        [
            stage("build", ALWAYS_SLOW, 0, timeout_seconds=1, retry_count=2),
            stage("after", "true", 1),
        ]
    )
    assert status == "failed"
    assert run.status == "failed"
    rows = await executions(svc.session_maker, run.id)
    build = [(r.attempt, r.status) for r in rows if r.stage_name == "build"]
    assert build == [(1, "timed_out"), (2, "timed_out"), (3, "timed_out")]
    assert [r.status for r in rows if r.stage_name == "after"] in ([], ["skipped"])
    for row in rows:
        if row.stage_name == "build":
            assert f"attempt {row.attempt}" in await log_text(svc.session_maker, row.id)
    for attempt in (1, 2, 3):
        assert await process_gone(svc.runner, process_name(str(run.id), "build", attempt))


async def test_a_log_limit_stop_on_the_retry_is_not_retried(
    session_maker: async_sessionmaker[AsyncSession], run_limited: Any
) -> None:
    """Attempt 1 times out and is retried; attempt 2 floods its log past the cap: that stop is
    final, although the stage has retries left for a timeout."""
    flood_after_timeout = [
        "if [ -f .timed-out-once ]; then " + FLOOD + "; fi",
        "touch .timed-out-once",
        "sleep 60",
    ]
    run_id, status = await run_limited(
        [stage("loud", flood_after_timeout, timeout_seconds=5, retry_count=2)],
        log_max_bytes=200_000,
    )
    assert status == "failed"
    rows = await executions(session_maker, run_id)
    assert [(r.attempt, r.status) for r in rows] == [(1, "timed_out"), (2, "failed")]
    assert rows[1].error == "stage stopped: its log reached the limit of 200000 bytes"


async def test_cancel_during_the_retry_ends_cancelled(svc: Services) -> None:
    script = [
        "if [ -f .timed-out-once ]; then echo 'retry running'; while true; do sleep 0.2; done; fi",
        "touch .timed-out-once",
        "sleep 60",
    ]
    # Long enough for the retry to be seen running and cancelled well before its own timeout.
    run = await svc.new_run([stage("build", script, timeout_seconds=8, retry_count=1)])
    async with svc.worker():
        handle = await start(svc.client, run, svc.task_queue)

        async def retry_running() -> bool:
            rows = await executions(svc.session_maker, run.id)
            return (
                len(rows) == 2
                and rows[1].status == "running"
                and "retry running" in await log_text(svc.session_maker, rows[1].id)
            )

        await wait_for(retry_running, timeout=60)
        await service.cancel_run(svc.client, await run_row(svc.session_maker, run.id))
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert (await run_row(svc.session_maker, run.id)).status == "cancelled"
    rows = await executions(svc.session_maker, run.id)
    assert [(r.attempt, r.status) for r in rows] == [(1, "timed_out"), (2, "cancelled")]
    assert await process_gone(svc.runner, process_name(str(run.id), "build", 2))


async def record_timed_out(
    session_maker: async_sessionmaker[AsyncSession], run_id: uuid.UUID, attempt: int
) -> None:
    async with driver_connection(session_maker) as conn:
        opened = await stage_records.open_attempt(
            conn,
            run_id=str(run_id),
            stage_name="s",
            attempt=attempt,
            stage_id=None,
            runner="sandbox",
            container_name=f"c{attempt}",
        )
        assert opened is not None
        await stage_records.close_attempt(
            conn,
            run_id=str(run_id),
            execution_id=opened.execution_id,
            attempt=attempt,
            closed=stage_records.ClosedAttempt(
                status="timed_out",
                exit_code=None,
                duration_ms=1000,
                log_size_bytes=0,
                log_line_count=0,
                error="timed out after 1s",
            ),
        )


@pytest.mark.parametrize(("retry_count", "recorded", "rerun"), [(1, 1, True), (1, 2, False)])
async def test_a_timed_out_attempt_recorded_before_a_crash_keeps_its_retry_decision(
    svc: Services, retry_count: int, recorded: int, rerun: bool
) -> None:
    """The worker closed the timed-out attempt and died before Temporal took its result: the
    next attempt runs the stage again while retries last, and ends it when they are used up."""
    run = await svc.new_run([stage("s", "true")])
    for attempt in range(1, recorded + 1):
        await record_timed_out(svc.session_maker, run.id, attempt)
    inp = StageInput(
        run_id=str(run.id),
        stage=StageSpec(name="s", script="true", timeout_seconds=1, retry_count=retry_count),
    )
    if rerun:
        assert await recorded_outcome(svc.session_maker, inp, recorded) is None
    else:
        with pytest.raises(ApplicationError) as raised:
            await recorded_outcome(svc.session_maker, inp, recorded)
        assert raised.value.type == STAGE_TIMED_OUT_ERROR
        assert raised.value.non_retryable
