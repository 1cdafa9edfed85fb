"""The plan's log cap and run disk quota: a free organization's flooding stage stops at the free
plan's cap, the same pipeline goes further on Pro, a plan upgrade reaches runs queued before it,
values a plan row should never hold are ignored, and a run's workspace and logs together stop at
its plan's disk quota. Real Temporal, real Postgres, the sandbox runner."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from temporalio.client import Client, WorkflowFailureError

from core.runs.plan import load_plan
from core.runs.run_limits import run_limits
from db.models.billing import Plan, PlanFeature, Subscription
from db.seed import MIB
from db.session import driver_connection, session_scope
from forgeline.settings import Settings
from forgeline.statuses.runs import FailureClass
from tests.billing.conftest import seeded_plans
from tests.factories import make_org
from tests.runs.helpers import (
    FLOOD,
    create_run,
    executions,
    log_text,
    make_pipeline,
    pipeline_worker,
    set_limits,
    stage,
    start,
    wait_for,
)
from tests.runs.sandbox import sandbox_runner

FREE_CAP = 4 * MIB
# The pipeline's own limit: above the free plan's cap, below Pro's.
PIPELINE_CAP = 6_000_000


@pytest.fixture
async def plans(session_maker: async_sessionmaker[AsyncSession]) -> AsyncIterator[dict[str, Plan]]:
    async with seeded_plans(session_maker) as seeded:
        yield seeded


async def subscribe(
    session_maker: async_sessionmaker[AsyncSession], org_id: uuid.UUID, plan_id: uuid.UUID
) -> None:
    now = datetime.now(UTC)
    async with session_scope(session_maker) as session:
        session.add(
            Subscription(
                organization_id=org_id,
                plan_id=plan_id,
                status="active",
                current_period_start=now,
                current_period_end=now + timedelta(days=30),
            )
        )


async def custom_plan(
    session_maker: async_sessionmaker[AsyncSession],
    features: Mapping[str, tuple[int | None, bool]],
) -> uuid.UUID:
    """A plan of the test's own (deleted with the seeded plans' cleanup of unknown slugs)."""
    async with session_scope(session_maker) as session:
        plan = Plan(slug=f"test-{uuid.uuid4().hex[:10]}", name="Test plan", sort_order=99)
        session.add(plan)
        await session.flush()
        for key, (value, enabled) in features.items():
            session.add(
                PlanFeature(plan_id=plan.id, feature_key=key, limit_value=value, enabled=enabled)
            )
        return plan.id


async def drop_plan(session_maker: async_sessionmaker[AsyncSession], plan_id: uuid.UUID) -> None:
    async with session_scope(session_maker) as session:
        await session.execute(delete(Subscription).where(Subscription.plan_id == plan_id))
        await session.execute(delete(Plan).where(Plan.id == plan_id))


async def flooding_run(
    session_maker: async_sessionmaker[AsyncSession], settings: Settings, org_id: uuid.UUID
) -> Any:
    pipeline_id = await make_pipeline(
        session_maker, org_id, [stage("loud", FLOOD, timeout_seconds=120)]
    )
    await set_limits(session_maker, pipeline_id, log_max_bytes=PIPELINE_CAP)
    return await create_run(session_maker, settings, org_id, pipeline_id)


async def outcome(handle: Any) -> str:
    try:
        return str((await handle.result()).status)
    except WorkflowFailureError:
        return "failed"


async def test_free_stops_at_its_cap_and_pro_goes_further(
    plans, session_maker, settings, temporal_client: Client, task_queue, tmp_path: Path
) -> None:
    free = await make_org(session_maker)
    pro = await make_org(session_maker)
    await subscribe(session_maker, pro.org_id, plans["pro"].id)
    free_run = await flooding_run(session_maker, settings, free.org_id)
    pro_run = await flooding_run(session_maker, settings, pro.org_id)
    runner = sandbox_runner(tmp_path / "state")
    try:
        async with pipeline_worker(temporal_client, task_queue, settings, session_maker, runner):
            # At the same time: each run keeps its own plan's cap.
            handles = [
                await start(temporal_client, free_run, task_queue),
                await start(temporal_client, pro_run, task_queue),
            ]
            statuses = await asyncio.gather(*(outcome(h) for h in handles))
    finally:
        await runner.close()
    assert statuses == ["failed", "failed"]
    (free_row,) = await executions(session_maker, free_run.id)
    (pro_row,) = await executions(session_maker, pro_run.id)
    assert free_row.error == f"stage stopped: its log reached the limit of {FREE_CAP} bytes"
    assert free_row.failure_class == FailureClass.CONFIG
    assert FREE_CAP - 200_000 < free_row.log_size_bytes <= FREE_CAP + 400
    text = (
        free_row.log_tail if free_row.log_object_key else await log_text(session_maker, free_row.id)
    )
    assert text is not None
    marker = text.rstrip("\n").splitlines()[-1]
    assert marker.startswith("forgeline: log truncated") and f"{FREE_CAP} bytes" in marker
    # Pro's cap is above the pipeline's own limit: the pipeline's limit is the one reached.
    assert pro_row.error == f"stage stopped: its log reached the limit of {PIPELINE_CAP} bytes"
    assert pro_row.log_size_bytes > FREE_CAP + 1_000_000


async def test_a_plan_upgrade_reaches_a_run_queued_before_it(
    plans, session_maker, settings, temporal_client: Client, task_queue, tmp_path: Path
) -> None:
    org = await make_org(session_maker)  # free: one build at a time
    holder = await create_run(
        session_maker,
        settings,
        org.org_id,
        await make_pipeline(
            session_maker,
            org.org_id,
            [stage("hold", "until [ -f go ]; do sleep 0.1; done", timeout_seconds=120)],
        ),
    )
    queued = await flooding_run(session_maker, settings, org.org_id)
    runner = sandbox_runner(tmp_path / "state")
    try:
        async with pipeline_worker(temporal_client, task_queue, settings, session_maker, runner):
            first = await start(temporal_client, holder, task_queue)

            async def holding() -> bool:
                return bool(await executions(session_maker, holder.id))

            await wait_for(holding, timeout=60)
            second = await start(temporal_client, queued, task_queue)

            async def waiting() -> bool:
                view = await second.query("status")
                return bool(view["queued_for_slot"])

            await wait_for(waiting, timeout=60)
            # Prepared on the free plan; upgraded while it waits for the slot.
            await subscribe(session_maker, org.org_id, plans["pro"].id)
            (settings.workspaces_dir / str(holder.id) / "go").touch()
            assert await outcome(first) == "success"
            assert await outcome(second) == "failed"
    finally:
        await runner.close()
    (row,) = await executions(session_maker, queued.id)
    assert row.error == f"stage stopped: its log reached the limit of {PIPELINE_CAP} bytes"
    assert row.log_size_bytes > FREE_CAP + 1_000_000


async def test_values_a_plan_should_never_hold_are_ignored(plans, session_maker, settings) -> None:
    # The table refuses a negative limit outright.
    with pytest.raises(IntegrityError):
        async with session_scope(session_maker) as session:
            session.add(
                PlanFeature(
                    plan_id=plans["pro"].id, feature_key="stage_log_max_bytes_x", limit_value=-1
                )
            )
    # Zero, below the floor, the 32-bit edge, a switched-off feature: the operator's caps stand.
    for features in (
        {"stage_log_max_bytes": (0, True), "run_disk_mb": (2**31 - 1, True)},
        {"stage_log_max_bytes": (1, True), "run_disk_mb": (1, True)},
        {"stage_log_max_bytes": (8192, False), "run_disk_mb": (64, False)},
    ):
        plan_id = await custom_plan(session_maker, features)
        try:
            org = await make_org(session_maker)
            await subscribe(session_maker, org.org_id, plan_id)
            run = await flooding_run(session_maker, settings, org.org_id)
            async with driver_connection(session_maker) as conn:
                plan = await load_plan(conn, str(run.id))
            assert plan is not None and plan.limits is not None
            assert (plan.limits.log_max_bytes, plan.limits.disk_mb) == (None, None), features
        finally:
            await drop_plan(session_maker, plan_id)
    # Whatever the JSON holds, only sane integers count.
    for raw in (
        None,
        "not json",
        "[1, 2]",
        {"stage_log_max_bytes": -5, "run_disk_mb": "64"},
        {"stage_log_max_bytes": True, "run_disk_mb": 1e9},
        {"stage_log_max_bytes": [4096], "run_disk_mb": {"mb": 64}},
    ):
        limits = run_limits(raw)
        assert (limits.log_max_bytes, limits.disk_mb) == (None, None), raw
    assert run_limits('{"stage_log_max_bytes": 8192, "run_disk_mb": 64}').disk_mb == 64


async def test_the_run_disk_quota_counts_workspace_and_logs_together(
    plans, session_maker, settings, temporal_client: Client, task_queue, tmp_path: Path
) -> None:
    quota_mb = 16
    # No plan log cap (NULL: unlimited by the plan), so only the pipeline's 40 MB and the quota.
    plan_id = await custom_plan(
        session_maker, {"run_disk_mb": (quota_mb, True), "stage_log_max_bytes": (None, True)}
    )
    try:
        org = await make_org(session_maker)
        await subscribe(session_maker, org.org_id, plan_id)
        # 10 MB in the workspace (under the quota alone), then a log that carries on truncated
        # past its own cap: the two together pass the quota.
        pipeline_id = await make_pipeline(
            session_maker,
            org.org_id,
            [stage("fill", ["head -c 10000000 /dev/urandom > big", FLOOD], timeout_seconds=120)],
        )
        await set_limits(session_maker, pipeline_id, log_max_bytes=40_000_000)
        run = await create_run(session_maker, settings, org.org_id, pipeline_id)
        runner = sandbox_runner(tmp_path / "state")
        try:
            async with pipeline_worker(
                temporal_client, task_queue, settings, session_maker, runner
            ):
                status = await outcome(await start(temporal_client, run, task_queue))
        finally:
            await runner.close()
    finally:
        await drop_plan(session_maker, plan_id)
    assert status == "failed"
    (row,) = await executions(session_maker, run.id)
    assert row.error == f"stage stopped: the run's workspace and logs reached {quota_mb} MB"
    assert row.failure_class == FailureClass.CONFIG
    # Stopped by the quota (checked once a second), long before the log's own cap.
    assert row.log_size_bytes < 40_000_000
    text = row.log_tail or await log_text(session_maker, row.id)
    assert text is not None and "workspace and logs together reached 16 MB" in text
    spool = settings.data_dir / "spool" / str(run.id)
    assert not spool.exists()
