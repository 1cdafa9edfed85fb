"""Per-organization build slots with real runs (FIFO, no polling) and a 50 MB stage log handled
without loss."""

from __future__ import annotations

import asyncio
import json

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from core.runs import build_slots
from db.session import driver_connection
from infra.storage import create_object_store
from tests.factories import make_org
from tests.runs.helpers import (
    create_run,
    executions,
    make_pipeline,
    pipeline_worker,
    run_row,
    stage,
    start,
    wait_for,
)
from workflows.runs_models import RunStatusView


async def slot_state(session_maker, key: str) -> build_slots.SlotState:
    async with driver_connection(session_maker) as conn:
        return await build_slots.state(conn, key)


async def test_concurrent_builds_limit_queues_fifo(
    session_maker, settings, temporal_client, task_queue, tmp_path
) -> None:
    from tests.runs.sandbox import sandbox_runner

    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker, org.org_id, [stage("work", "sleep 5")], concurrent_builds=2
    )
    runs = [await create_run(session_maker, settings, org.org_id, pipeline_id) for _ in range(4)]
    runner = sandbox_runner(tmp_path / "state")
    async with pipeline_worker(temporal_client, task_queue, settings, session_maker, runner):
        handles = []
        for run in runs:
            handles.append(await start(temporal_client, run, task_queue))
            await asyncio.sleep(0.2)  # a definite arrival order

        async def two_waiting() -> bool:
            view = await slot_state(session_maker, str(org.org_id))
            if len(view.holders) == 2 and len(view.waiting) == 2:
                assert view.waiting == [f"pipeline-run-{r.id}" for r in runs[2:]]
                return True
            return False

        await wait_for(two_waiting)
        queued = await handles[3].query("status", result_type=RunStatusView)
        assert queued.queued_for_slot and queued.status == "queued"
        assert (await run_row(session_maker, runs[3].id)).status == "queued"
        results = await asyncio.gather(*(h.result() for h in handles))
    assert [r.status for r in results] == ["success"] * 4
    rows = [await run_row(session_maker, r.id) for r in runs]
    # The slot is released as soon as the holder's stages end (before its own bookkeeping).
    holder_stages = [e for r in runs[:2] for e in await executions(session_maker, r.id)]
    first_done = min(e.finished_at for e in holder_stages if e.finished_at)
    for waiter in rows[2:]:
        assert waiter.started_at is not None and waiter.started_at >= first_done
    # FIFO: the third run started before the fourth.
    assert rows[2].started_at <= rows[3].started_at  # type: ignore[operator]


async def prepare_attempt(client: Client, workflow_id: str) -> int:
    """The attempt on which the run's prepare_run local activity succeeded (its marker)."""
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        details = event.marker_recorded_event_attributes.details
        # Local activity markers only (a patch marker, recorded first, has no "data").
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED and "data" in details:
            marker = json.loads(details["data"].payloads[0].data)
            if marker["activity_type"] == "prepare_run":
                return int(marker["attempt"])
    raise AssertionError(f"{workflow_id}: no prepare_run marker")


async def test_a_burst_of_runs_all_run_within_the_limit(
    session_maker, settings, temporal_client, task_queue, tmp_path
) -> None:
    """30 runs of one organization started at once all finish, each prepared on its first
    attempt; never more than the organization's 3 slots build at the same time, and no slot is
    left held."""
    from tests.runs.sandbox import sandbox_runner

    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker, org.org_id, [stage("work", "sleep 0.3")], concurrent_builds=3
    )
    runs = [await create_run(session_maker, settings, org.org_id, pipeline_id) for _ in range(30)]
    runner = sandbox_runner(tmp_path / "state")
    async with pipeline_worker(temporal_client, task_queue, settings, session_maker, runner):
        handles = await asyncio.gather(*(start(temporal_client, r, task_queue) for r in runs))
        results = await asyncio.gather(*(h.result() for h in handles))
        view = await slot_state(session_maker, str(org.org_id))
        attempts = [await prepare_attempt(temporal_client, h.id) for h in handles]
    assert [r.status for r in results] == ["success"] * 30
    assert attempts == [1] * 30
    assert view.holders == [] and view.waiting == []
    spans = []
    for run in runs:
        (row,) = await executions(session_maker, run.id)
        assert row.started_at is not None and row.finished_at is not None
        spans.append((row.started_at, row.finished_at))
    # The most stages building at any one moment (each start against all spans).
    most = max(sum(1 for s, f in spans if s <= start_at < f) for start_at, _ in spans)
    assert 1 <= most <= 3


@pytest.mark.parametrize("runner", ["sandbox", "docker"], indirect=True)
async def test_50mb_log_moves_to_object_store_without_loss(
    session_maker, settings, temporal_client, task_queue, runner, request
) -> None:
    org = await make_org(session_maker)
    image = request.getfixturevalue("busybox_image") if runner.kind == "docker" else None
    line = "x" * 90
    script = f"awk 'BEGIN {{ for (i = 0; i < 550000; i++) printf \"%08d {line}\\n\", i }}'"
    pipeline_id = await make_pipeline(
        session_maker, org.org_id, [stage("loud", script, timeout_seconds=300)], image=image
    )
    run = await create_run(session_maker, settings, org.org_id, pipeline_id)
    async with pipeline_worker(temporal_client, task_queue, settings, session_maker, runner):
        result = await (await start(temporal_client, run, task_queue)).result()
    assert result.status == "success"
    (row,) = await executions(session_maker, run.id)
    assert row.log_line_count == 550_000
    assert row.log_size_bytes == 550_000 * 100 > 50_000_000
    assert row.log_object_key and row.log_tail
    assert row.log_tail.endswith(f"{549_999:08d} {line}\n")
    store = create_object_store(settings)
    expected = 0
    with store.open(row.log_object_key) as stream:
        for raw in stream:
            assert raw == f"{expected:08d} {line}\n".encode()
            expected += 1
    assert expected == 550_000

    async def chunks_gone() -> bool:
        from sqlalchemy import func, select

        from db.models.pipelines import StageLogChunk

        async with session_maker() as s:
            n = await s.scalar(
                select(func.count())
                .select_from(StageLogChunk)
                .where(StageLogChunk.stage_execution_id == row.id)
            )
        return bool(n == 0)

    await wait_for(chunks_gone, timeout=5)


async def test_terminated_holder_frees_its_slot(
    session_maker, settings, temporal_client, task_queue, tmp_path
) -> None:
    """A terminated run never releases: the next queued run finds it gone and takes the slot."""
    from tests.runs.sandbox import sandbox_runner

    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker, org.org_id, [stage("work", "sleep 30")], concurrent_builds=1
    )
    quick_id = await make_pipeline(
        session_maker, org.org_id, [stage("work", "true")], concurrent_builds=1
    )
    stuck = await create_run(session_maker, settings, org.org_id, pipeline_id)
    runner = sandbox_runner(tmp_path / "state")
    key = str(org.org_id)
    async with pipeline_worker(temporal_client, task_queue, settings, session_maker, runner):
        stuck_handle = await start(temporal_client, stuck, task_queue)

        async def holding() -> bool:
            view = await slot_state(session_maker, key)
            return bool(view.holders == [stuck_handle.id])

        await wait_for(holding)
        await stuck_handle.terminate(reason="operator terminated")
        # The slot is still held by a run that will never release it ...
        assert (await slot_state(session_maker, key)).holders == [stuck_handle.id]
        # ... until a run has to queue behind it.
        quick = await create_run(session_maker, settings, org.org_id, quick_id)
        result = await (await start(temporal_client, quick, task_queue)).result()
    assert result.status == "success"
    view = await slot_state(session_maker, key)
    assert view.holders == [] and view.waiting == []
