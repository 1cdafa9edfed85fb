"""The build-slot queue serves waiting runs in the order they were triggered (migration 0021),
whatever order their workflows reach the semaphore in: claims made out of order, twenty made at
once, a claim for a run that does not exist, a re-claim after a crash, and the API's queue
positions for runs triggered back to back."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import update

from core.runs import build_slots
from db.models.pipelines import PipelineRun
from db.session import driver_connection, session_scope
from tests.factories import make_org
from tests.runs.helpers import create_run, make_pipeline, stage, wait_for

BASE = datetime(2026, 1, 1, tzinfo=UTC)


async def triggered_runs(session_maker, settings, count: int) -> list[uuid.UUID]:
    """`count` runs of one pipeline, the i-th triggered i seconds after BASE."""
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(session_maker, org.org_id, [stage("s", "true")])
    ids = []
    for i in range(count):
        run = await create_run(session_maker, settings, org.org_id, pipeline_id)
        async with session_scope(session_maker) as session:
            await session.execute(
                update(PipelineRun)
                .where(PipelineRun.id == run.id)
                .values(queued_at=BASE + timedelta(seconds=i))
            )
        ids.append(run.id)
    return ids


def wf(run_id: uuid.UUID) -> str:
    return f"pipeline-run-{run_id}"


async def test_waiting_runs_are_served_in_trigger_order_not_claim_order(
    session_maker, settings
) -> None:
    a, b, c = await triggered_runs(session_maker, settings, 3)
    key = f"test-{uuid.uuid4()}"
    async with driver_connection(session_maker) as conn:
        held, _ = await build_slots.acquire(conn, key, wf(a), 1, a)
        assert held.holding
        # c's workflow reaches the semaphore before b's.
        claim_c, _ = await build_slots.acquire(conn, key, wf(c), 1, c)
        claim_b, _ = await build_slots.acquire(conn, key, wf(b), 1, b)
        assert not claim_c.holding and not claim_b.holding
        state = await build_slots.state(conn, key)
        assert state.holders == [wf(a)] and state.waiting == [wf(b), wf(c)]
        # Claiming again (a retried activity) keeps the place.
        assert (await build_slots.acquire(conn, key, wf(c), 1, c))[0] == claim_c
        assert await build_slots.release(conn, key, wf(a)) == [
            build_slots.PendingGrant(wf(b), claim_b.seq)
        ]


async def test_twenty_concurrent_claims_queue_by_trigger_time(session_maker, settings) -> None:
    runs = await triggered_runs(session_maker, settings, 21)
    key = f"test-{uuid.uuid4()}"
    async with driver_connection(session_maker) as conn:
        assert (await build_slots.acquire(conn, key, "holder", 1))[0].holding

    async def claim(run_id: uuid.UUID) -> build_slots.Claim:
        await asyncio.sleep(random.random() / 50)
        async with driver_connection(session_maker) as conn:
            return (await build_slots.acquire(conn, key, wf(run_id), 1, run_id))[0]

    shuffled = random.sample(runs[1:], k=20)
    claims = await asyncio.gather(*(claim(r) for r in shuffled))
    assert not any(c.holding for c in claims)
    async with driver_connection(session_maker) as conn:
        assert (await build_slots.state(conn, key)).waiting == [wf(r) for r in runs[1:]]
        # Each release promotes the earliest-triggered waiter.
        served = []
        holder = "holder"
        for _ in range(20):
            (grant,) = await build_slots.release(conn, key, holder)
            await build_slots.delivered(conn, key, grant)
            served.append(grant.run_workflow_id)
            holder = grant.run_workflow_id
        assert served == [wf(r) for r in runs[1:]]


async def test_a_claim_for_an_unknown_run_queues_at_the_time_it_is_made(
    session_maker, settings
) -> None:
    """A run ID that names nothing (or another tenant's key space) is no way to jump the queue:
    the claim queues behind everything triggered before it was made."""
    (early,) = await triggered_runs(session_maker, settings, 1)
    key = f"test-{uuid.uuid4()}"
    async with driver_connection(session_maker) as conn:
        await build_slots.acquire(conn, key, "holder", 1)
        await build_slots.acquire(conn, key, "stranger", 1, uuid.uuid4())
        await build_slots.acquire(conn, key, "no-run", 1)
        await build_slots.acquire(conn, key, wf(early), 1, early)
        assert (await build_slots.state(conn, key)).waiting == [wf(early), "stranger", "no-run"]


async def test_a_crash_after_promotion_redelivers_to_the_earliest_triggered(
    session_maker, settings
) -> None:
    """The grant is committed with the promotion: if the releasing worker dies before signalling,
    the next one to touch the semaphore finds the same grant still pending, for the same run."""
    a, b, c = await triggered_runs(session_maker, settings, 3)
    key = f"test-{uuid.uuid4()}"
    async with driver_connection(session_maker) as conn:
        await build_slots.acquire(conn, key, wf(a), 1, a)
        await build_slots.acquire(conn, key, wf(c), 1, c)
        claim_b, _ = await build_slots.acquire(conn, key, wf(b), 1, b)
        lost = await build_slots.release(conn, key, wf(a))  # the signal never goes out
    async with driver_connection(session_maker) as conn:
        _, pending = await build_slots.acquire(conn, key, wf(c), 1, c)
    assert lost == pending == [build_slots.PendingGrant(wf(b), claim_b.seq)]


async def test_runs_triggered_back_to_back_wait_in_trigger_order(
    api_client, session_maker, worker
) -> None:
    """End to end: with the only slot held, two runs triggered together show queue positions
    1 and 2 in the order they were triggered, and start in that order."""
    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker, org.org_id, [stage("work", "sleep ${HOLD:-1}")], concurrent_builds=1
    )

    async def trigger(hold: str) -> str:
        resp = await api_client.post(
            f"/v1/pipelines/{pipeline_id}/runs",
            json={"variables": [{"name": "HOLD", "value": hold}]},
            headers=org.headers,
        )
        assert resp.status_code == 202, resp.text
        run_id: str = resp.json()["id"]
        return run_id

    async def detail(run_id: str) -> dict[str, Any]:
        resp = await api_client.get(f"/v1/runs/{run_id}", headers=org.headers)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    first = await trigger("600")

    async def first_running() -> bool:
        return bool((await detail(first))["status"] == "running")

    await wait_for(first_running, timeout=60)
    second, third = await trigger("1"), await trigger("1")

    async def both_waiting() -> bool:
        positions = [(await detail(r))["queue_position"] for r in (second, third)]
        return None not in positions

    await wait_for(both_waiting, timeout=60)
    assert [(await detail(r))["queue_position"] for r in (second, third)] == [1, 2]
    cancel = await api_client.post(f"/v1/runs/{first}/cancel", headers=org.headers)
    assert cancel.status_code == 202, cancel.text

    async def finished(run_id: str) -> bool:
        return bool((await detail(run_id))["status"] in ("success", "failed", "cancelled"))

    for run_id in (second, third):
        await wait_for(lambda r=run_id: finished(r), timeout=60)
    runs = [await detail(r) for r in (second, third)]
    assert [r["status"] for r in runs] == ["success", "success"]
    started = datetime.fromisoformat(runs[1]["started_at"])
    assert datetime.fromisoformat(runs[0]["finished_at"]) <= started
