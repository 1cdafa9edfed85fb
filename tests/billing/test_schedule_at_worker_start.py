"""worker.py creates the monthly billing schedule when it starts serving the billing queue."""

from __future__ import annotations

import asyncio
import contextlib

from temporalio.client import Client, ScheduleActionStartWorkflow
from temporalio.service import RPCError, RPCStatusCode

import worker
from core.billing.schedules import BILLING_CYCLE_WORKFLOW_ID, BILLING_SCHEDULE_ID
from forgeline.settings import BILLING_TASK_QUEUE, Settings


async def _delete_schedule(client: Client) -> None:
    with contextlib.suppress(RPCError):
        await client.get_schedule_handle(BILLING_SCHEDULE_ID).delete()


async def _schedule_exists(client: Client) -> bool:
    try:
        await client.get_schedule_handle(BILLING_SCHEDULE_ID).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def _serve_until_scheduled(settings: Settings, client: Client, workers: int) -> None:
    """Start `workers` billing workers at once; stop them once the schedule exists."""
    stop = asyncio.Event()
    running = [
        asyncio.create_task(worker.run(settings, [BILLING_TASK_QUEUE], stop=stop))
        for _ in range(workers)
    ]
    try:
        for _ in range(300):
            if await _schedule_exists(client) or any(task.done() for task in running):
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        # Each run() returns only after its own start-up (schedule call included) finished; an
        # "already exists" from the other worker would surface here as an exception.
        await asyncio.wait_for(asyncio.gather(*running), timeout=120)


async def test_two_workers_starting_at_once_create_one_schedule(
    settings: Settings, temporal_client: Client
) -> None:
    await _delete_schedule(temporal_client)
    assert not await _schedule_exists(temporal_client)

    await _serve_until_scheduled(settings, temporal_client, workers=2)

    description = await temporal_client.get_schedule_handle(BILLING_SCHEDULE_ID).describe()
    action = description.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert action.id == BILLING_CYCLE_WORKFLOW_ID
    assert action.task_queue == BILLING_TASK_QUEUE
    created_at = description.info.created_at

    # A restart (or a worker killed mid-start, then started again) leaves the same schedule.
    await _serve_until_scheduled(settings, temporal_client, workers=1)
    again = await temporal_client.get_schedule_handle(BILLING_SCHEDULE_ID).describe()
    assert again.info.created_at == created_at
    matching = [
        entry.id
        async for entry in await temporal_client.list_schedules()
        if entry.id == BILLING_SCHEDULE_ID
    ]
    assert len(matching) <= 1  # the visibility list may lag; it never shows a second one
