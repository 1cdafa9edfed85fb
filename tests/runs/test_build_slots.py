"""The build-slot semaphore in Postgres: limit, FIFO queue, idempotent claims, concurrent claims,
and grant delivery that survives a crash or a run that is gone."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import ActivityEnvironment
from temporalio.worker import Worker

from activities.runs.run_activities import RunActivities
from core.runs import build_slots
from db.session import driver_connection
from forgeline.temporal_client import workflow_runner
from tests.runs.helpers import wait_for
from workflows.runs_models import GRANT_SIGNAL, SlotClaim, SlotGrant, SlotRequest


def new_key() -> str:
    return f"test-{uuid.uuid4()}"


async def state(session_maker, key: str) -> build_slots.SlotState:
    async with driver_connection(session_maker) as conn:
        return await build_slots.state(conn, key)


async def test_slots_are_held_up_to_the_limit_then_queued_in_order(session_maker) -> None:
    key = new_key()
    async with driver_connection(session_maker) as conn:
        claims = {}
        for run in "abcd":
            claims[run], pending = await build_slots.acquire(conn, key, run, 2)
            assert pending == []
        assert [claims[r].holding for r in "abcd"] == [True, True, False, False]
        # Claiming again changes nothing: a holder holds, a waiter keeps its place.
        again, _ = await build_slots.acquire(conn, key, "c", 2)
        assert again == claims["c"]
        assert await build_slots.state(conn, key) == build_slots.SlotState(
            limit=2, holders=["a", "b"], waiting=["c", "d"]
        )
        # A release hands the slot to the head of the queue, pending until delivered.
        pending = await build_slots.release(conn, key, "a")
        assert pending == [build_slots.PendingGrant("c", claims["c"].seq)]
        assert await build_slots.release(conn, key, "a") == pending  # idempotent
        await build_slots.delivered(conn, key, pending[0])
        assert await build_slots.release(conn, key, "b") == [
            build_slots.PendingGrant("d", claims["d"].seq)
        ]
        # The promoted run asking again learns it holds (and its grant is no longer pending).
        claim_d, pending = await build_slots.acquire(conn, key, "d", 2)
        assert claim_d.holding and pending == []
        # A waiter that leaves the queue is simply gone from it.
        await build_slots.acquire(conn, key, "e", 2)
        assert await build_slots.release(conn, key, "e") == []
        assert await build_slots.state(conn, key) == build_slots.SlotState(
            limit=2, holders=["c", "d"], waiting=[]
        )
        assert await build_slots.release(conn, new_key(), "x") == []  # never claimed


async def test_a_higher_limit_promotes_the_queue_at_once(session_maker) -> None:
    key = new_key()
    async with driver_connection(session_maker) as conn:
        for run in "abc":
            await build_slots.acquire(conn, key, run, 1)
        # The plan was upgraded: the next claim brings the new limit and frees slots in order.
        claim, pending = await build_slots.acquire(conn, key, "d", 3)
        assert [g.run_workflow_id for g in pending] == ["b", "c"]
        assert claim.holding is False  # two slots freed, both taken by those queued before
        assert (await build_slots.state(conn, key)).holders == ["a", "b", "c"]


async def test_concurrent_claims_never_exceed_the_limit_and_keep_their_order(
    session_maker,
) -> None:
    """40 runs claim at once on separate connections; releases then serve the queue exactly once
    each, in the order the claims were queued."""
    key = new_key()
    runs = [f"run-{i}" for i in range(40)]

    async def claim(run: str) -> build_slots.Claim:
        async with driver_connection(session_maker) as conn:
            result, _ = await build_slots.acquire(conn, key, run, 3)
            return result

    claims = dict(zip(runs, await asyncio.gather(*(claim(r) for r in runs)), strict=True))
    holders = [r for r in runs if claims[r].holding]
    assert len(holders) == 3
    queue = sorted((r for r in runs if not claims[r].holding), key=lambda r: claims[r].seq)
    current = await state(session_maker, key)
    assert sorted(current.holders) == sorted(holders) and current.waiting == queue
    served: list[str] = []
    async with driver_connection(session_maker) as conn:
        to_release = list(holders)
        while to_release:
            pending = await build_slots.release(conn, key, to_release.pop(0))
            for grant in pending:
                assert grant.seq == claims[grant.run_workflow_id].seq
                await build_slots.delivered(conn, key, grant)
                served.append(grant.run_workflow_id)
                to_release.append(grant.run_workflow_id)
    assert served == queue
    assert await state(session_maker, key) == build_slots.SlotState(limit=3, holders=[], waiting=[])


@workflow.defn(name="TestSlotWaiter")
class SlotWaiter:
    """Stands in for a pipeline run: records the grants it receives, runs until told to end."""

    def __init__(self) -> None:
        self.grants: list[int] = []
        self.done = False

    @workflow.signal(name=GRANT_SIGNAL)
    def grant(self, grant: SlotGrant) -> None:
        self.grants.append(grant.seq)

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.query
    def granted(self) -> list[int]:
        return self.grants

    @workflow.run
    async def run(self) -> list[int]:
        await workflow.wait_condition(lambda: self.done)
        return self.grants


async def granted(handle: WorkflowHandle[Any, Any]) -> list[int]:
    """The grants a waiter received, once it received one."""

    async def received() -> bool:
        return bool(await handle.query(SlotWaiter.granted))

    await wait_for(received, timeout=30)
    await handle.signal(SlotWaiter.finish)
    result: list[int] = await handle.result()
    return result


class SlotRuns:
    """Stand-in runs (SlotWaiter workflows) claiming and releasing one organization's slots
    through the real activities."""

    def __init__(self, client: Client, task_queue: str, activities: RunActivities) -> None:
        self.client = client
        self.task_queue = task_queue
        self.activities = activities
        self.key = new_key()
        self.env = ActivityEnvironment()

    async def start(self, prefix: str) -> WorkflowHandle[Any, Any]:
        return await self.client.start_workflow(
            SlotWaiter.run, id=f"{prefix}-{uuid.uuid4()}", task_queue=self.task_queue
        )

    def request(self, run_workflow_id: str) -> SlotRequest:
        return SlotRequest(organization_key=self.key, run_workflow_id=run_workflow_id, limit=1)

    async def claim(self, run_workflow_id: str) -> SlotClaim:
        claim: SlotClaim = await self.env.run(
            self.activities.acquire_build_slot, self.request(run_workflow_id)
        )
        return claim

    async def release(self, run_workflow_id: str) -> bool:
        released: bool = await self.env.run(
            self.activities.release_build_slot, self.request(run_workflow_id)
        )
        return released


@asynccontextmanager
async def slot_runs(
    session_maker, settings, temporal_client: Client, task_queue: str
) -> AsyncIterator[SlotRuns]:
    async with Worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[SlotWaiter],
        workflow_runner=workflow_runner(),
    ):
        yield SlotRuns(
            temporal_client, task_queue, RunActivities(settings, session_maker, temporal_client)
        )


async def test_a_grant_lost_before_delivery_is_sent_by_the_next_claim(
    session_maker, settings, temporal_client: Client, task_queue
) -> None:
    """A worker dies between promoting a waiter and signalling it: the promotion is committed
    with its grant pending, and the next run touching the semaphore delivers it."""
    async with slot_runs(session_maker, settings, temporal_client, task_queue) as runs:
        key = runs.key
        # Holders must be running workflows: a run that has to queue frees gone holders' slots.
        holding = await runs.start("holder")
        waiter = await runs.start("waiter")
        holder = await runs.claim(holding.id)
        queued = await runs.claim(waiter.id)
        assert holder.granted and not queued.granted
        # The holder's release commits, then its worker "dies" before any signal is sent.
        async with driver_connection(session_maker) as conn:
            pending = await build_slots.release(conn, key, holding.id)
        assert pending == [build_slots.PendingGrant(waiter.id, queued.seq)]
        # Any later claim of the organization sends the pending grant.
        assert (await runs.claim("later")).granted is False
        assert await granted(waiter) == [queued.seq]
        await holding.terminate("test over")
        view = await state(session_maker, key)
        assert view.holders == [waiter.id] and view.waiting == ["later"]
        async with driver_connection(session_maker) as conn:
            assert await build_slots.release(conn, key, "nobody") == []  # none left pending


async def test_a_slot_granted_to_a_gone_run_passes_to_the_next_in_line(
    session_maker, settings, temporal_client: Client, task_queue
) -> None:
    """A queued run terminated before its turn cannot take its slot: the grant finds it gone and
    the slot goes on to the run behind it."""
    async with slot_runs(session_maker, settings, temporal_client, task_queue) as runs:
        gone = await runs.start("gone")
        live = await runs.start("live")
        holding = await runs.start("holder")
        assert (await runs.claim(holding.id)).granted
        await runs.claim(gone.id)
        live_claim = await runs.claim(live.id)
        await gone.terminate("operator terminated")
        assert await runs.release(holding.id) is True
        assert await granted(live) == [live_claim.seq]
        await holding.terminate("test over")
    assert await state(session_maker, runs.key) == build_slots.SlotState(
        limit=1, holders=[live.id], waiting=[]
    )


async def test_semaphore_workflows_of_an_earlier_version_are_retired(
    temporal_client: Client, task_queue
) -> None:
    """A semaphore workflow left open by an earlier version (no worker runs its type now) is
    terminated when a pipelines worker starts, instead of failing its workflow tasks for ever."""
    from temporalio.client import WorkflowExecutionStatus

    old = await temporal_client.start_workflow(
        build_slots.RETIRED_WORKFLOW_TYPE, id=f"build-slots-{uuid.uuid4()}", task_queue=task_queue
    )

    async def retired() -> bool:
        await build_slots.retire_semaphore_workflows(temporal_client)
        return (await old.describe()).status == WorkflowExecutionStatus.TERMINATED

    await wait_for(retired, timeout=30)
