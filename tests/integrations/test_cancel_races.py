"""A cancelled run is cancelled however its work ends relative to the cancellation: cancelled
while its commit is being checked out (the checkout's activity ends cancelled), or while a stage's
process dies with a failure of its own (the stage activity ends failed after the cancel was
requested). The run, its stage attempts and the commit status on a local fake GitHub all say
cancelled, and no `failure` report ever reaches the forge. The runs' worker starts only once the
forge has the queued report and the run is cancelled only once it has the running one (see
stage_gate.py), so the forge's sequence is exactly queued, running, cancelled however loaded the
machine is. Real Postgres, Temporal, git and the sandbox runner."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import text
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.service import RPCError, RPCStatusCode

from core.runs.service import cancel_run
from core.runs.stage_records import stage_execution_id
from tests.integrations.fake_forge import FakeForge
from tests.integrations.stage_gate import run_executor
from tests.integrations.support import (
    commit,
    connect_repo,
    finished,
    integrations_worker,
    make_git_repo,
    push_main,
    repo_with_change,
    reported,
    the_run,
)
from tests.runs.helpers import executions, wait_for
from workflows.integrations_models import CommitState, commit_status_workflow_id
from workflows.runs_models import pipeline_run_workflow_id

TOKEN = "ghp_" + "C" * 36


@contextmanager
def stalled_objects(repo: Path) -> Iterator[None]:
    """Every git process that reads `repo`'s objects blocks (a slow clone, deterministically):
    its alternates file is a FIFO nobody writes. Leaving releases whatever still waits on it."""
    fifo = repo / ".git" / "objects" / "info" / "alternates"
    fifo.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(fifo)
    try:
        yield
    finally:
        # A writer end opens every blocked reader; closing it gives them EOF (no alternates).
        fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
        fifo.unlink()
        os.close(fd)


async def cancel_requested_to_stage(client: Client, run_id: uuid.UUID) -> None:
    """Until the run's workflow has asked its stage activity to stop (it took the cancel)."""
    handle = client.get_workflow_handle(pipeline_run_workflow_id(str(run_id)))

    async def requested() -> bool:
        history = await handle.fetch_history()
        return any(
            e.HasField("activity_task_cancel_requested_event_attributes") for e in history.events
        )

    await wait_for(requested, timeout=60)


REPORTED_STATES: tuple[CommitState, ...] = ("pending", "running", "success", "failure", "cancelled")


async def reports_settled(client: Client, run_id: uuid.UUID) -> None:
    """Until the run's workflow and every report workflow started for the run (one per state)
    are closed: nothing is left that could still send a status, a late `failure` included."""
    ids = [pipeline_run_workflow_id(str(run_id))]
    ids += [commit_status_workflow_id(str(run_id), state) for state in REPORTED_STATES]

    async def closed() -> bool:
        for workflow_id in ids:
            try:
                described = await client.get_workflow_handle(workflow_id).describe()
            except RPCError as exc:
                if exc.status == RPCStatusCode.NOT_FOUND:
                    continue  # never started
                raise
            if described.status == WorkflowExecutionStatus.RUNNING:
                return False
        return True

    await wait_for(closed, timeout=60)


async def assert_cancelled_on_forge(
    client: Client, forge: FakeForge, sha: str, run_id: uuid.UUID
) -> None:
    """The last status is GitHub's `error` (cancelled), the forge got queued, running and
    cancelled in that order, and no `failure` was ever sent."""

    async def final() -> bool:
        states = forge.states(sha)
        return bool(states) and states[-1][1] == "error"

    try:
        await wait_for(final, timeout=60)
    except AssertionError:
        raise AssertionError(f"last status not error: {forge.states(sha)}") from None
    await reports_settled(client, run_id)
    assert "failure" not in [state for _, state in forge.states(sha)]
    descriptions = [r.body["description"] for r in forge.accepted(sha)]
    assert descriptions == ["Queued", "Running", "Cancelled"], forge.states(sha)


async def test_cancelled_while_checking_out_is_cancelled(
    api_client, temporal_client, forge, forge_settings, session_maker, tmp_path, task_queue
) -> None:
    repo, first = make_git_repo(tmp_path)
    head = commit(repo, {"src/app.py": "print(7)\n"})
    connected = await connect_repo(
        session_maker,
        forge_settings,
        repo,
        token=TOKEN,
        pipelines=[{"on_push": {}}],
        stages=[{"name": "never", "run": "echo never ran"}],
    )
    with stalled_objects(repo):
        async with integrations_worker(
            temporal_client, forge_settings, session_maker, run_task_queue=task_queue
        ):
            await push_main(api_client, connected, head, first)
            await reported(forge, head, "Queued")
            async with run_executor(
                temporal_client, forge_settings, session_maker, task_queue, tmp_path
            ):
                # Marked running, its checkout blocked on the repository's objects.
                await reported(forge, head, "Running")
                run = await the_run(session_maker, connected)
                assert run.status == "running"
                await cancel_run(temporal_client, run)
                run = await finished(session_maker, connected)
                await assert_cancelled_on_forge(temporal_client, forge, head, run.id)
    assert run.status == "cancelled"
    assert run.error == "cancelled by request"
    assert await executions(session_maker, run.id) == []


# Waits for the test's word (a file in its workspace), then fails on its own: exit 1.
FAILS_WHEN_TOLD = "while [ ! -e .fail-now ]; do sleep 0.05; done; echo failing; exit 1"


@pytest.mark.parametrize("order", ["cancel-then-failure", "failure-being-recorded-then-cancel"])
async def test_a_stage_failing_while_the_run_is_cancelled_ends_cancelled(
    api_client,
    temporal_client,
    forge,
    forge_settings,
    session_maker,
    tmp_path,
    task_queue,
    order,
) -> None:
    connected, head, first = await repo_with_change(
        tmp_path,
        session_maker,
        forge_settings,
        {"src/app.py": "print(8)\n"},
        token=TOKEN,
        pipelines=[{"on_push": {}}],
        stages=[{"name": "flaky", "run": FAILS_WHEN_TOLD}],
    )
    async with integrations_worker(
        temporal_client, forge_settings, session_maker, run_task_queue=task_queue
    ):
        await push_main(api_client, connected, head, first)
        await reported(forge, head, "Queued")
        async with run_executor(
            temporal_client, forge_settings, session_maker, task_queue, tmp_path
        ):
            # The stage ends only when the test says (its own gate), after the cancel.
            await reported(forge, head, "Running")
            run = await the_run(session_maker, connected)

            async def stage_running() -> bool:
                rows = await executions(session_maker, run.id)
                return [r.status for r in rows] == ["running"]

            await wait_for(stage_running, timeout=60)
            fail_now = forge_settings.workspaces_dir / str(run.id) / ".fail-now"
            row = stage_execution_id(str(run.id), "flaky", 1)
            if order == "cancel-then-failure":
                # The workflow took the cancel and asked the stage to stop; before the activity
                # hears of it (its next heartbeat), the stage's process fails on its own.
                await cancel_run(temporal_client, run)
                await cancel_requested_to_stage(temporal_client, run.id)
                fail_now.touch()
            else:
                # The process fails and its attempt is being closed `failed` (held on the row's
                # lock) when the cancel arrives; the close ends after the workflow took the cancel.
                async with session_maker() as session, session.begin():
                    await session.execute(
                        text("SELECT 1 FROM stage_executions WHERE id = :id FOR UPDATE"),
                        {"id": row},
                    )
                    fail_now.touch()
                    await cancel_run(temporal_client, run)
                    await cancel_requested_to_stage(temporal_client, run.id)
            run = await finished(session_maker, connected)
            await assert_cancelled_on_forge(temporal_client, forge, head, run.id)
    assert run.status == "cancelled"
    assert run.error == "cancelled by request"
    rows = await executions(session_maker, run.id)
    assert [(r.stage_name, r.attempt, r.status) for r in rows] == [("flaky", 1, "cancelled")]
