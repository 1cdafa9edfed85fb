"""A plan change takes effect for queued runs: upgrading an organization promotes the runs that
waited behind the old plan's build slots (real runs, real Temporal), concurrent upgrades hand
out no more slots than the plan has, and grants a crashed request could not deliver are
delivered by its retry."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

from sqlalchemy import func, select
from temporalio import workflow
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import Worker

from core.billing.limits import apply_build_slot_limit
from core.billing.plan_history import change_plan
from core.runs import build_slots
from core.runs.plan import slot_limit_for_key
from db.models.billing import Subscription, SubscriptionPlanChange
from db.session import driver_connection, session_scope
from forgeline.temporal_client import workflow_runner
from tests.billing.conftest import subscribe
from tests.runs.helpers import create_run, make_pipeline, pipeline_worker, stage, start, wait_for
from workflows.runs_models import GRANT_SIGNAL, SlotGrant


async def slot_state(session_maker, key: str) -> build_slots.SlotState:
    async with driver_connection(session_maker) as conn:
        return await build_slots.state(conn, key)


async def test_upgrading_starts_the_runs_queued_behind_the_free_plan(
    api_client, session_maker, settings, temporal_client, task_queue, tmp_path, plans
) -> None:
    from tests.runs.sandbox import sandbox_runner

    sub = await subscribe(session_maker, plans, plan="free", started=datetime.now(UTC))
    key = str(sub.org_id)
    pipeline_id = await make_pipeline(session_maker, sub.org_id, [stage("work", "sleep 12")])
    runs = [await create_run(session_maker, settings, sub.org_id, pipeline_id) for _ in range(3)]
    runner = sandbox_runner(tmp_path / "state")
    async with pipeline_worker(temporal_client, task_queue, settings, session_maker, runner):
        handles = [await start(temporal_client, run, task_queue) for run in runs]

        async def queued_behind_one() -> bool:
            view = await slot_state(session_maker, key)
            return len(view.holders) == 1 and len(view.waiting) == 2

        await wait_for(queued_behind_one)
        first_holder = (await slot_state(session_maker, key)).holders[0]
        upgraded = await api_client.patch(
            "/v1/billing/subscription", headers=sub.org.headers, json={"plan": "pro"}
        )
        assert upgraded.status_code == 200 and upgraded.json()["plan"] == "pro"

        async def all_building() -> bool:
            view = await slot_state(session_maker, key)
            return view.limit == 5 and len(view.holders) == 3 and view.waiting == []

        # Promoted at once, while the first run still builds (its stage sleeps 12 s).
        await wait_for(all_building, timeout=8)
        assert first_holder in (await slot_state(session_maker, key)).holders
        results = await asyncio.gather(*(h.result() for h in handles))
    assert [r.status for r in results] == ["success"] * 3
    assert await slot_state(session_maker, key) == build_slots.SlotState(5, [], [])


@workflow.defn(sandboxed=False)
class SlotWaiter:
    """Stands in for a queued run: builds (stays open) once the grant of its claim arrives, as a
    real run holds its slot while it builds. A run that closed right after its grant would
    rightly have its slot handed on by a later delivery, so the stand-in never closes by itself."""

    def __init__(self) -> None:
        self.grants: set[int] = set()

    @workflow.signal(name=GRANT_SIGNAL)
    def grant(self, grant: SlotGrant) -> None:
        self.grants.add(grant.seq)

    @workflow.query
    def granted(self) -> bool:
        return bool(self.grants)

    @workflow.run
    async def run(self, seq: int) -> int:
        await workflow.wait_condition(lambda: seq in self.grants)
        await workflow.wait_condition(lambda: False)
        return seq


async def _queue(
    client: Client, session_maker, task_queue: str, key: str, runs: int
) -> list[WorkflowHandle[SlotWaiter, int]]:
    """`runs` claims under the Free plan's one slot: the first holds, the others wait."""
    handles = []
    async with driver_connection(session_maker) as conn:
        for _ in range(runs):
            workflow_id = f"waiter-{uuid.uuid4()}"
            claim, _ = await build_slots.acquire(conn, key, workflow_id, 1)
            handles.append(
                await client.start_workflow(
                    SlotWaiter.run, claim.seq, id=workflow_id, task_queue=task_queue
                )
            )
    return handles


async def _granted(handle: WorkflowHandle[SlotWaiter, int]) -> bool:
    return await handle.query(SlotWaiter.granted)


async def _all_granted(handles: list[WorkflowHandle[SlotWaiter, int]]) -> None:
    async def granted() -> bool:
        return all([await _granted(h) for h in handles])

    await wait_for(granted, timeout=20)


async def test_concurrent_upgrades_promote_up_to_the_new_limit_only(
    api_client, session_maker, temporal_client, task_queue, plans
) -> None:
    sub = await subscribe(session_maker, plans, plan="free", started=datetime.now(UTC))
    key = str(sub.org_id)
    async with Worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[SlotWaiter],
        workflow_runner=workflow_runner(),
    ):
        handles = await _queue(temporal_client, session_maker, task_queue, key, 8)
        responses = await asyncio.gather(
            *(
                api_client.patch(
                    "/v1/billing/subscription", headers=sub.org.headers, json={"plan": "pro"}
                )
                for _ in range(3)
            )
        )
        assert [r.status_code for r in responses] == [200] * 3
        view = await slot_state(session_maker, key)
        # Pro has 5 slots: the holder and the first four in line; the last three still wait.
        ids = [h.id for h in handles]
        assert view.limit == 5 and view.holders == ids[:5] and view.waiting == ids[5:]
        await _all_granted(handles[1:5])
        assert not any([await _granted(h) for h in [handles[0], *handles[5:]]])
        async with driver_connection(session_maker) as conn:
            pending = await conn.fetchval(
                "SELECT count(*) FROM build_slot_claims WHERE organization_key = $1"
                " AND grant_pending",
                key,
            )
            assert pending == 0
            assert await slot_limit_for_key(conn, key, 1) == 5
            assert await slot_limit_for_key(conn, f"project-{uuid.uuid4()}", 3) == 3
        for handle in handles:
            await handle.terminate()


async def test_grants_a_crashed_plan_change_left_pending_are_delivered_by_its_retry(
    api_client, session_maker, temporal_client, task_queue, plans
) -> None:
    sub = await subscribe(session_maker, plans, plan="free", started=datetime.now(UTC))
    key = str(sub.org_id)
    async with Worker(
        temporal_client,
        task_queue=task_queue,
        workflows=[SlotWaiter],
        workflow_runner=workflow_runner(),
    ):
        handles = await _queue(temporal_client, session_maker, task_queue, key, 3)
        # The request's transaction commits the plan change and the promotion, then the API
        # process dies before it tells the runs.
        async with session_scope(session_maker) as session:
            subscription = await session.get_one(Subscription, sub.subscription_id)
            await change_plan(session, subscription, plans["pro"].id)
            grants = await apply_build_slot_limit(session, sub.org_id)
        assert [g.run_workflow_id for g in grants] == [h.id for h in handles[1:]]
        assert not any([await _granted(h) for h in handles[1:]])
        # The client retries its PATCH: no second change, and the grants go out.
        retried = await api_client.patch(
            "/v1/billing/subscription", headers=sub.org.headers, json={"plan": "pro"}
        )
        assert retried.status_code == 200 and retried.json()["plan"] == "pro"
        await _all_granted(handles[1:])
        for handle in handles:
            await handle.terminate()
    async with session_maker() as session:
        changes = await session.scalar(
            select(func.count())
            .select_from(SubscriptionPlanChange)
            .where(SubscriptionPlanChange.organization_id == sub.org_id)
        )
    assert changes == 1
