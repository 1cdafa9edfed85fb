"""PipelineRunWorkflow end to end on real Temporal + Postgres, over both runners (Docker, local):
stages in order and in parallel, failures, timeouts, retries, cancel, conditions, re-runs, and a
history that replays."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from temporalio.client import WorkflowFailureError

from core.runs import service
from db.models.billing import UsageRecord
from db.models.operations import WorkflowExecution
from infra.runners import process_name
from tests.runs.helpers import (
    by_stage,
    create_run,
    executions,
    log_text,
    make_pipeline,
    pipeline_worker,
    process_gone,
    run_pipeline,
    run_row,
    stage,
    start,
    wait_for,
)
from workflows.runs_models import RunStatusView


async def test_success(ctx) -> None:
    run, result = await run_pipeline(
        ctx,
        [
            stage("build", ['echo "building $FORGELINE_BRANCH"', "echo artifact > built.txt"], 0),
            stage("test", ["cat built.txt", "echo tests passed"], 1),
        ],
        branch="main",
        variables=[{"name": "TOKEN", "value": "sup3r-s3cret-value", "secret": True}],
    )
    assert result.status == "success"
    row = await run_row(ctx["session_maker"], run.id)
    assert row.status == "success" and row.started_at and row.finished_at
    rows = by_stage(await executions(ctx["session_maker"], run.id))
    assert [r.status for r in rows["build"]] == ["success"]
    assert rows["test"][0].exit_code == 0
    assert rows["build"][0].runner == ctx["runner"].kind
    assert "building main" in await log_text(ctx["session_maker"], rows["build"][0].id)
    assert "artifact" in await log_text(ctx["session_maker"], rows["test"][0].id)
    async with ctx["session_maker"]() as session:
        usage = (
            await session.scalars(
                select(UsageRecord).where(
                    UsageRecord.idempotency_key == f"pipeline-run-{run.id}:build_minutes"
                )
            )
        ).all()
        assert len(usage) == 1 and usage[0].usage_type == "build_minutes"
        assert usage[0].source_refs["pipeline_run_id"] == str(run.id)
        assert usage[0].quantity > 0 and usage[0].project_id == row.project_id
        wf = await session.scalar(
            select(WorkflowExecution).where(WorkflowExecution.resource_id == run.id)
        )
        assert wf is not None and wf.status == "completed" and wf.kind == "pipeline_run"


async def test_failing_stage_skips_dependents(ctx) -> None:
    run, result = await run_pipeline(
        ctx,
        [
            stage("build", ["echo compiling", "exit 3"], 0),
            stage("test", "echo never", 1),
            stage(
                "report", "echo failure report", 2, conditions={"previous_stage_status": "failure"}
            ),
        ],
    )
    assert result.status == "failed"
    rows = by_stage(await executions(ctx["session_maker"], run.id))
    assert rows["build"][0].status == "failed" and rows["build"][0].exit_code == 3
    assert len(rows["build"]) == 1  # a test failure is not retried
    assert rows["test"][0].status == "skipped"
    assert "dependency failed" in (rows["test"][0].skip_reason or "")
    assert rows["report"][0].status == "success"


async def test_stage_timeout(ctx) -> None:
    run, result = await run_pipeline(
        ctx, [stage("slow", ["echo start", "sleep 30", "echo never"], timeout_seconds=1)]
    )
    assert result.status == "failed"
    (row,) = await executions(ctx["session_maker"], run.id)
    assert row.status == "timed_out"
    text = await log_text(ctx["session_maker"], row.id)
    assert "start" in text and "never" not in text


async def test_retries_flaky_exit_codes_only(ctx) -> None:
    flaky = stage(
        "flaky",
        ["if [ -f .tried ]; then echo ok; exit 0; fi", "touch .tried", "echo flake; exit 75"],
        0,
        retry_count=2,
        retryable_exit_codes=[75],
    )
    run, result = await run_pipeline(ctx, [flaky])
    assert result.status == "success"
    rows = await executions(ctx["session_maker"], run.id)
    assert [(r.attempt, r.status, r.exit_code) for r in rows] == [
        (1, "failed", 75),
        (2, "success", 0),
    ]
    broken = stage("broken", "exit 75", 0, retry_count=1, retryable_exit_codes=[75])
    run, result = await run_pipeline(ctx, [broken])
    assert result.status == "failed"
    rows = await executions(ctx["session_maker"], run.id)
    assert [r.attempt for r in rows] == [1, 2]  # retry_count=1: exactly one retry


async def test_cancel_mid_stage_kills(ctx) -> None:
    pipeline_id = await make_pipeline(
        ctx["session_maker"],
        ctx["org"].org_id,
        [
            stage("forever", ["echo started", "while true; do sleep 0.2; done"]),
            stage("after", "true", 1),
        ],
        image=ctx["image"],
    )
    run = await create_run(ctx["session_maker"], ctx["settings"], ctx["org"].org_id, pipeline_id)
    async with pipeline_worker(
        ctx["client"], ctx["task_queue"], ctx["settings"], ctx["session_maker"], ctx["runner"]
    ):
        handle = await start(ctx["client"], run, ctx["task_queue"])

        async def running() -> bool:
            rows = await executions(ctx["session_maker"], run.id)
            return (
                bool(rows)
                and rows[0].status == "running"
                and rows[0].log_line_count >= 0
                and ("started" in await log_text(ctx["session_maker"], rows[0].id))
            )

        await wait_for(running)
        live = await handle.query("status", result_type=RunStatusView)
        assert live.status == "running" and live.running == ["forever"]
        await service.cancel_run(ctx["client"], await run_row(ctx["session_maker"], run.id))
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    row = await run_row(ctx["session_maker"], run.id)
    assert row.status == "cancelled"
    rows = by_stage(await executions(ctx["session_maker"], run.id))
    assert rows["forever"][0].status == "cancelled"
    assert "after" not in rows
    assert await process_gone(ctx["runner"], process_name(str(run.id), "forever", 1))


def rendezvous(me: str, other: str) -> str:
    """Marks `me` started in the run's shared checkout, then waits (bounded: 45 s, under the
    stage timeout) for `other` to be started too: both succeed only if they run at the same
    time, however slow the start."""
    return (
        f"touch .{me}-started; i=0; "
        f"while [ ! -f .{other}-started ] && [ $i -lt 450 ]; do sleep 0.1; i=$((i+1)); done; "
        f"test -f .{other}-started"
    )


async def test_depends_on_runs_in_parallel(ctx) -> None:
    run, result = await run_pipeline(
        ctx,
        [
            stage("setup", "echo setup", 0),
            stage("unit", rendezvous("unit", "lint"), 1, depends_on=["setup"]),
            stage("lint", rendezvous("lint", "unit"), 1, depends_on=["setup"]),
            stage("package", "echo done", 2, depends_on=["unit", "lint"]),
        ],
    )
    assert result.status == "success"
    rows = {r.stage_name: r for r in await executions(ctx["session_maker"], run.id)}
    unit, lint = rows["unit"], rows["lint"]
    assert unit.started_at and lint.started_at and unit.finished_at and lint.finished_at
    # Overlap is proven by the rendezvous itself (each succeeds only if the other started while
    # it waited); the recorded times are bookkeeping (a short attempt is recorded when it ends).
    assert rows["package"].started_at and rows["setup"].finished_at
    assert rows["package"].started_at >= max(unit.finished_at, lint.finished_at)
    assert rows["setup"].finished_at <= min(unit.started_at, lint.started_at)


async def test_conditions_record_skipped(ctx) -> None:
    run, result = await run_pipeline(
        ctx,
        [
            stage("build", "echo build", 0),
            stage("release", "echo release", 1, conditions={"branch": ["release/*"]}),
            stage("docs", "echo docs", 1, conditions={"files_changed": ["docs/**"]}),
            stage("src", "echo src", 1, conditions={"files_changed": ["src/**"]}),
            stage("on-failure", "echo x", 2, conditions={"previous_stage_status": "failure"}),
            stage("always", "echo always", 3, conditions={"previous_stage_status": "always"}),
        ],
        branch="main",
        changed_paths=["src/app/main.py", "README.md"],
    )
    assert result.status == "success"
    status = {r.stage_name: r.status for r in await executions(ctx["session_maker"], run.id)}
    assert status == {
        "build": "success",
        "release": "skipped",
        "docs": "skipped",
        "src": "success",
        "on-failure": "skipped",
        "always": "success",
    }


async def test_rerun_from_failed_reuses_succeeded(ctx) -> None:
    stages = [
        stage("build", ["echo compiled > out.txt", "echo built"], 0, artifact_paths=["out.txt"]),
        stage("test", ['test "$(cat out.txt)" = compiled', '[ "$FORGELINE_RUN_NUMBER" -gt 1 ]'], 1),
    ]
    run, result = await run_pipeline(ctx, stages, commit_sha="a" * 40)
    assert result.status == "failed"
    async with ctx["session_maker"]() as session:
        again = await service.rerun(
            session,
            ctx["settings"],
            organization_id=ctx["org"].org_id,
            run_id=run.id,
            from_failed=True,
        )
        await session.commit()
    assert again.run_number == 2 and again.commit_sha == "a" * 40
    async with pipeline_worker(
        ctx["client"], ctx["task_queue"], ctx["settings"], ctx["session_maker"], ctx["runner"]
    ):
        result = await (await start(ctx["client"], again, ctx["task_queue"])).result()
    assert result.status == "success"
    first = by_stage(await executions(ctx["session_maker"], run.id))
    rows = by_stage(await executions(ctx["session_maker"], again.id))
    assert rows["build"][0].reused_from_id == first["build"][0].id
    assert rows["build"][0].status == "success"
    assert rows["test"][0].reused_from_id is None and rows["test"][0].status == "success"


@pytest.mark.parametrize("runner", ["sandbox"], indirect=True)
async def test_history_replays_deterministically(ctx) -> None:
    """The run executes as workers run it by default, outside the sandbox; its history then
    replays under the SDK's full default sandbox, which checks every call the workflow makes."""
    from temporalio.worker import Replayer

    from activities.runs.registration import WORKFLOWS
    from workflows.runs_models import pipeline_run_workflow_id

    run, result = await run_pipeline(
        ctx,
        [
            stage("a", "echo a", 0),
            stage("b", "exit 2", 1, depends_on=["a"], allow_failure=True),
            stage("c", "echo c", 1, depends_on=["a"], conditions={"branch": ["nope"]}),
            stage("d", "echo d", 2),
        ],
        branch="main",
        sandboxed=False,
    )
    assert result.status == "success"  # b failed but is allowed to
    history = (
        await ctx["client"]
        .get_workflow_handle(pipeline_run_workflow_id(str(run.id)))
        .fetch_history()
    )
    replayer = Replayer(workflows=WORKFLOWS, data_converter=ctx["client"].data_converter)
    await replayer.replay_workflow(history)
