"""Per-organization build slots (FIFO, no polling) and a 50 MB stage log handled without loss."""

from __future__ import annotations

import asyncio

import pytest

from activities.storage import create_object_store
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
from workflows.pipeline_models import BuildSlotsView, RunStatusView, build_slots_workflow_id


async def test_concurrent_builds_limit_queues_fifo(
    session_maker, settings, temporal_client, task_queue, tmp_path
) -> None:
    from activities.runners.local_runner import LocalProcessRunner

    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker, org.org_id, [stage("work", "sleep 3")], concurrent_builds=2
    )
    runs = [await create_run(session_maker, settings, org.org_id, pipeline_id) for _ in range(4)]
    runner = LocalProcessRunner(tmp_path / "state")
    async with pipeline_worker(temporal_client, task_queue, settings, session_maker, runner):
        handles = []
        for run in runs:
            handles.append(await start(temporal_client, run, task_queue))
            await asyncio.sleep(0.2)  # a definite arrival order
        slots = temporal_client.get_workflow_handle(build_slots_workflow_id(str(org.org_id)))

        async def two_waiting() -> bool:
            try:
                view = await slots.query("state", result_type=BuildSlotsView)
            except Exception:
                return False
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


@pytest.mark.parametrize("runner", ["local", "docker"], indirect=True)
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
    from activities.runners.local_runner import LocalProcessRunner

    org = await make_org(session_maker)
    pipeline_id = await make_pipeline(
        session_maker, org.org_id, [stage("work", "sleep 30")], concurrent_builds=1
    )
    quick_id = await make_pipeline(
        session_maker, org.org_id, [stage("work", "true")], concurrent_builds=1
    )
    stuck = await create_run(session_maker, settings, org.org_id, pipeline_id)
    runner = LocalProcessRunner(tmp_path / "state")
    slots = temporal_client.get_workflow_handle(build_slots_workflow_id(str(org.org_id)))
    async with pipeline_worker(temporal_client, task_queue, settings, session_maker, runner):
        stuck_handle = await start(temporal_client, stuck, task_queue)

        async def holding() -> bool:
            try:
                view = await slots.query("state", result_type=BuildSlotsView)
            except Exception:
                return False
            return bool(view.holders == [stuck_handle.id])

        await wait_for(holding)
        await stuck_handle.terminate(reason="operator terminated")
        # The slot is still held by a run that will never release it ...
        view = await slots.query("state", result_type=BuildSlotsView)
        assert view.holders == [stuck_handle.id]
        # ... until a run has to queue behind it.
        quick = await create_run(session_maker, settings, org.org_id, quick_id)
        result = await (await start(temporal_client, quick, task_queue)).result()
    assert result.status == "success"
