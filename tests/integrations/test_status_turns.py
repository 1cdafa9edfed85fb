"""A run's commit statuses reach the forge one at a time, each from its staleness check to the
forge's answer: the final state's report waits while an earlier report is being sent, so it can
never be overtaken by it. Real Postgres (the run's reporting turn, a leased row), Temporal, git,
the sandbox runner and a local fake GitHub."""

from __future__ import annotations

import uuid
from typing import Any

from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client
from temporalio.service import RPCError

from core.integrations.commit_status import build_report, reporting_turn
from core.runs.service import cancel_run
from tests.integrations.fake_forge import FakeForge
from tests.integrations.support import (
    finished,
    push_main,
    repo_with_change,
    reported,
    run_workers,
    the_run,
)
from tests.integrations.test_cancel_races import TOKEN, reports_settled
from tests.runs.helpers import wait_for
from workflows.integrations_models import commit_status_workflow_id


async def waiting_for_turn(client: Client, run_id: uuid.UUID) -> bool:
    """The cancelled state's report is under way (its activity started) and has sent nothing:
    it waits for the run's turn."""
    handle = client.get_workflow_handle(commit_status_workflow_id(str(run_id), "cancelled"))
    try:
        described = await handle.describe()
    except RPCError:
        return False
    pending = described.raw_description.pending_activities
    return bool(pending) and pending[0].state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED


async def cancelled_last(client: Any, forge: FakeForge, sha: str, run_id: uuid.UUID) -> None:
    """The forge's last status is GitHub's `error` (cancelled), right after `Running`, and no
    `failure` was sent once every report of the run has settled."""

    async def final() -> bool:
        states = forge.states(sha)
        return bool(states) and states[-1][1] == "error"

    await wait_for(final, timeout=60)
    await reports_settled(client, run_id)
    assert "failure" not in [state for _, state in forge.states(sha)]
    descriptions = [r.body["description"] for r in forge.accepted(sha)]
    assert descriptions[-2:] == ["Running", "Cancelled"], forge.states(sha)


async def test_the_final_state_waits_for_the_report_being_sent(
    api_client, temporal_client, forge, forge_settings, session_maker, tmp_path, task_queue
) -> None:
    connected, head, first = await repo_with_change(
        tmp_path,
        session_maker,
        forge_settings,
        {"src/app.py": "print(9)\n"},
        token=TOKEN,
        pipelines=[{"on_push": {}}],
        stages=[{"name": "long", "run": "sleep 120"}],
    )
    async with run_workers(temporal_client, forge_settings, session_maker, task_queue, tmp_path):
        await push_main(api_client, connected, head, first)
        await reported(forge, head, "Running")
        run = await the_run(session_maker, connected)
        # The run's turn is taken, as by a report checked current and still on its way to the
        # forge: the cancelled run's report waits for it, before its own check.
        async with reporting_turn(session_maker, str(run.id)):
            await cancel_run(temporal_client, run)
            run = await finished(session_maker, connected)
            assert run.status == "cancelled"

            async def waiting() -> bool:
                return await waiting_for_turn(temporal_client, run.id)

            await wait_for(waiting, timeout=60)
            assert [r.body["description"] for r in forge.accepted(head)][-1] == "Running"
        # Its turn comes: the final state is the last the forge receives.
        await cancelled_last(temporal_client, forge, head, run.id)
    # Another final state of the run (a failure report, were one ever announced) is stale.
    async with session_maker() as session:
        for state in ("failure", "success", "running"):
            report, reason = await build_report(session, forge_settings, str(run.id), state)
            assert report is None
            assert reason == f"the run is cancelled already; {state} is stale"
