"""What keeps one integration test's workflows away from the next test: a task queue of its own
for the integrations workflows (deliveries, commit statuses, pull request reports, schedule
firings), and every workflow still running at its end terminated."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime

from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

REASON = "integration test finished"


def own_queue_name() -> str:
    return f"integrations-{uuid.uuid4().hex}"


def _visibility_time(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


async def terminate_started_since(client: Client, since: datetime, *, passes: int = 3) -> int:
    """Terminate every workflow started at or after `since` that still runs (the tests of a
    session run one after another, so these are the current test's); returns how many.

    Listing is eventually consistent: passes repeat, a moment apart, until one finds nothing
    left (a workflow one of them terminated may still be listed as running by the next)."""
    query = f"ExecutionStatus = 'Running' AND StartTime >= '{_visibility_time(since)}'"
    terminated = 0
    for index in range(passes):
        if index:
            await asyncio.sleep(0.2)
        found = 0
        async for execution in client.list_workflows(query):
            found += 1
            handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
            try:
                await handle.terminate(reason=REASON)
            except RPCError as exc:
                # Closed meanwhile: nothing left to stop.
                if exc.status != RPCStatusCode.NOT_FOUND:
                    raise
            else:
                terminated += 1
        if found == 0:
            break
    return terminated
