"""worker.py: registration loading and graceful shutdown with an activity in flight."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest
from temporalio import activity, workflow
from temporalio.client import Client

import worker
from activities.deps import Registration, WorkerDeps
from forgeline.settings import Settings
from forgeline.temporal_client import connect_temporal
from workflows.echo import DIAGNOSTICS_TASK_QUEUE


def test_each_queue_loads_only_its_own_registration(
    settings: Settings, temporal_client: Client
) -> None:
    deps = WorkerDeps(settings=settings, session_maker=None, temporal=temporal_client)  # type: ignore[arg-type]
    loaded = worker.load_registrations(deps, [DIAGNOSTICS_TASK_QUEUE, "no-such-queue"])
    assert [r.task_queue for r in loaded] == [DIAGNOSTICS_TASK_QUEUE]


def test_registrations_for_one_queue_are_merged() -> None:
    merged = worker.merge_by_queue(
        [
            Registration(task_queue="q", activities=[print]),
            Registration(task_queue="q", activities=[len], on_shutdown=[list]),
        ]
    )
    assert list(merged) == ["q"]
    assert list(merged["q"].activities) == [print, len]
    assert list(merged["q"].on_shutdown) == [list]


STARTED = asyncio.Event()
FINISHED: list[str] = []


@activity.defn(name="harness.slow_step")
async def slow_step(label: str) -> str:
    STARTED.set()
    await asyncio.sleep(1.0)
    FINISHED.append(label)
    return label


@workflow.defn(name="HarnessSlowWorkflow", sandboxed=False)
class SlowWorkflow:
    @workflow.run
    async def run(self, label: str) -> str:
        return await workflow.execute_activity(
            slow_step, label, start_to_close_timeout=timedelta(seconds=30)
        )


async def test_sigterm_lets_the_in_flight_activity_finish(
    monkeypatch: pytest.MonkeyPatch, settings: Settings, task_queue: str
) -> None:
    hooks: list[str] = []
    registration = Registration(
        task_queue=task_queue,
        workflows=[SlowWorkflow],
        activities=[slow_step],
        on_shutdown=[lambda: hooks.append("closed")],
    )
    monkeypatch.setattr(worker, "load_registrations", lambda deps, queues: [registration])
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(settings, [task_queue], stop=stop))
    client = await connect_temporal(settings)
    label = f"in-flight-{uuid.uuid4()}"
    await client.start_workflow(SlowWorkflow.run, label, id=label, task_queue=task_queue)
    await asyncio.wait_for(STARTED.wait(), timeout=30)
    stop.set()  # what the SIGTERM handler does
    await asyncio.wait_for(running, timeout=60)
    assert label in FINISHED
    assert hooks == ["closed"]
